"""Multi-GPU training with DistributedDataParallel, started by torchrun.

    torchrun --nproc_per_node=N train.py diffusion --preset cifar10

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; `init()` joins the process group (NCCL on GPUs, gloo on the
CPU) and picks this rank's device. Every rank draws its own batches (per-rank seeds), gradients are
averaged by DDP, and only rank 0 logs, samples and writes checkpoints. Without torchrun everything here
is a no-op, so single-process code paths stay unchanged.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around `model` in a distributed run, else the model itself."""
    if not dist.is_initialized():
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
