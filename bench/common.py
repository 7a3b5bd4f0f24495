"""What every benchmark shares: the hardware's name, a timer that waits for the GPU, and the JSON it
writes."""
from __future__ import annotations

import os
import platform
import time

import torch

from core.files import write_json


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else whatever platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware(device: torch.device) -> dict:
    """The machine a figure was measured on: CPU (and GPU) model, threads, torch version, load."""
    info = {"cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device),
            "load_average_1min": os.getloadavg()[0]}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def seconds_per_call(fn, iters: int, device: torch.device, warmup: int = 1) -> float:
    """Mean wall time of fn() over `iters` calls after `warmup` calls (CUDA work finished before
    each clock)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def timed(fn, *args, **kwargs):
    """Run fn once -> (result, seconds)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def save(path, result: dict) -> None:
    """Write the benchmark's JSON (atomically) and say where."""
    write_json(path, result)
    print(f"wrote {path}")
