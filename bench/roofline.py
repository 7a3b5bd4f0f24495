"""How close each hot loop comes to what this machine can compute: its FLOP rate as a fraction of
the peak this CPU reaches on the operations the loop is made of, at the loop's own sizes.

    python -m bench.roofline [--preset quick] [--threads 1,2] [--out runs/bench/roofline.json]

Peak, per thread count: the best GFLOP/s of fp32 3x3 convolutions (F.conv2d, padding 1) and matmuls
(torch.mm) at the shapes the preset's models use (batch x channels x pixels of the UNet levels, the
attention and feed-forward matmuls of its transformer blocks), each timed after a warm-up. A loop
could not go faster than if all its FLOPs ran at that rate, so achieved / peak is its efficiency.
Hot loops, each one step of the project's own code (bench/steps.py) on random data at the preset's
sizes: FLOPs counted (bench/counting.py: matmuls, convolutions, attention; not normalisation,
activations or the optimizer, which are memory-bound), time measured (bench/common.py).
Achieved = FLOPs / seconds. Cores: the diffusion training step's throughput in one process with one
thread, one process with every thread, and one single-threaded process per core at once (as train.py
runs its two chains): how much a second core adds to each way of using it.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import torch
import torch.nn.functional as F

from bench.common import hardware, save, seconds_per_call
from bench.counting import count
from bench.steps import diffusion_step, gan_step, images, text_to_image
from core.cli import make_config
from core.config import Config
from core.data import class_names
from eval.evalnet import Evaluator
from minigan.transfer import with_switches


def peak_shapes(cfg: Config) -> dict[str, list[tuple]]:
    """The conv (batch, channels, pixels) and matmul (rows, inner, cols) shapes of the preset's
    UNet."""
    d, r, b = cfg.diffusion, cfg.data.resolution, cfg.diffusion.batch_size
    widths = [(d.base_channels * m, r // 2 ** i) for i, m in enumerate(d.channel_mults)]
    convs = [(b, c, p) for c, p in widths]
    matmuls = [(b * p * p, c, n * c) for c, p in widths if p in d.attention_resolutions
               for n in (1, 4)]
    return {"conv3x3": convs, "matmul": matmuls or [(b * r * r, d.base_channels, d.base_channels)]}


def gflops(fn, flops: float, iters: int = 5) -> float:
    return flops / seconds_per_call(fn, iters, torch.device("cpu"), warmup=2) / 1e9


def peak(cfg: Config) -> dict:
    """Best GFLOP/s per operation over the preset's shapes, and the shapes' own rates."""
    out = {}
    for op, shapes in peak_shapes(cfg).items():
        rates = {}
        for shape in shapes:
            if op == "conv3x3":
                b, c, p = shape
                x, w = torch.randn(b, c, p, p), torch.randn(c, c, 3, 3)
                rates[str(shape)] = gflops(lambda: F.conv2d(x, w, padding=1),
                                           2 * b * c * c * 9 * p * p)
            else:
                m, k, n = shape
                x, w = torch.randn(m, k), torch.randn(k, n)
                rates[str(shape)] = gflops(lambda: torch.mm(x, w), 2 * m * k * n)
        out[op] = {"best_gflops": max(rates.values()), "by_shape": rates}
    out["best_gflops"] = max(out["conv3x3"]["best_gflops"], out["matmul"]["best_gflops"])
    return out


def inference(fn):
    """fn run under torch.inference_mode, as sampling and evaluation run."""
    def run():
        with torch.inference_mode():
            return fn()
    return run


def hot_loops(cfg: Config) -> dict:
    """(step, params, label) of each hot loop at the preset's batch sizes."""
    b, n_classes = cfg.diffusion.batch_size, len(class_names(cfg.data))
    unet = text_to_image(cfg).eval()

    def unet_forward(n):  # one batched UNet call without gradients: sampling and classifying
        x, t, cond = (images(cfg, n), torch.randint(cfg.diffusion.timesteps, (n,)),
                      unet.encode([""] * n))
        return inference(lambda: unet(x, t, cond)), []

    evaluator, x = Evaluator(cfg.evalnet, n_classes).eval(), images(cfg, 500)
    lowrank = with_switches(cfg, "hypermod", True, "barlow", "lowrank")
    return {
        "diffusion training step": (*diffusion_step(cfg, b), f"batch {b}"),
        "DDIM sampling step (guided)": (*unet_forward(2 * 64),
                                        "64 images, conditional + unconditional"),
        "diffusion-classifier batch": (*unet_forward(cfg.run.unet_batch),
                                       f"{cfg.run.unet_batch} (image, class, timestep) passes"),
        "GAN pretraining step": (*gan_step(cfg, cfg.gan.batch_size, False, False),
                                 f"batch {cfg.gan.batch_size}"),
        "GAN transfer step, low-rank head":
            (*gan_step(lowrank, cfg.transfer.batch_size, True, False),
             f"batch {cfg.transfer.batch_size}"),
        "GAN transfer step, dense head": (*gan_step(lowrank.updated("transfer", head="dense"),
                                                    cfg.transfer.batch_size, True, False),
                                          f"batch {cfg.transfer.batch_size}"),
        "evaluator forward": (inference(lambda: evaluator(x)), [], "500 images"),
    }


def measure(cfg: Config, threads: int, iters: int) -> dict:
    torch.set_num_threads(threads)
    ceiling = peak(cfg)
    loops = {}
    for name, (step, params, what) in hot_loops(cfg).items():
        flops = count(step, params)["flops"]
        seconds = seconds_per_call(step, iters, torch.device("cpu"), warmup=2)
        achieved = flops / seconds / 1e9
        loops[name] = {"what": what, "gflop_per_step": flops / 1e9, "seconds_per_step": seconds,
                       "achieved_gflops": achieved,
                       "fraction_of_peak": achieved / ceiling["best_gflops"]}
        print(f"{threads} thread(s) | {name}: {achieved:.1f} GFLOP/s = "
              f"{achieved / ceiling['best_gflops']:.0%} of {ceiling['best_gflops']:.1f}",
              flush=True)
    return {"peak": ceiling, "loops": loops}


def _diffusion_steps_per_second(cfg: Config, threads: int, seconds: float, start, queue) -> None:
    """In a fresh process: the diffusion training step's rate over `seconds`, after the common
    start."""
    torch.set_num_threads(threads)
    step = diffusion_step(cfg, cfg.diffusion.batch_size)[0]
    step()
    start.wait()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    queue.put(n / (time.perf_counter() - t0))


def core_scaling(cfg: Config, seconds: float = 20.0) -> dict:
    """Diffusion training steps per second (summed over processes) for each way of using the
    cores."""
    cores, ctx = os.cpu_count() or 1, multiprocessing.get_context("spawn")
    out = {}
    for name, processes, threads in (("1 process, 1 thread", 1, 1),
                                     (f"1 process, {cores} threads", 1, cores),
                                     (f"{cores} processes, 1 thread each", cores, 1)):
        start, queue = ctx.Barrier(processes), ctx.Queue()
        workers = [ctx.Process(target=_diffusion_steps_per_second,
                               args=(cfg, threads, seconds, start, queue))
                   for _ in range(processes)]
        for w in workers:
            w.start()
        rates = [queue.get() for _ in workers]
        for w in workers:
            w.join()
        out[name] = {"steps_per_second": sum(rates), "per_process": rates}
        print(f"diffusion training step, {name}: {sum(rates):.2f} steps/s", flush=True)
    base = out["1 process, 1 thread"]["steps_per_second"]
    for entry in out.values():
        entry["speedup_over_one_thread"] = entry["steps_per_second"] / base
    return out


def markdown(result: dict) -> str:
    threads = list(result["by_threads"])
    head = "| hot loop | GFLOP per step | " + " | ".join(f"{t} thread(s): GFLOP/s (% of peak)"
                                                         for t in threads)
    lines = [head + " |", "|" + "---|" * (2 + len(threads))]
    for name in result["by_threads"][threads[0]]["loops"]:
        cells = [f"{r['loops'][name]['achieved_gflops']:.1f} "
                 f"({100 * r['loops'][name]['fraction_of_peak']:.0f}%)"
                 for r in result["by_threads"].values()]
        lines.append(f"| {name} | "
                     f"{result['by_threads'][threads[0]]['loops'][name]['gflop_per_step']:.3g} | "
                     + " | ".join(cells) + " |")
    lines.append("| *peak (best conv3x3 / matmul at these shapes)* | | "
                 + " | ".join(f"{r['peak']['best_gflops']:.1f}"
                              for r in result["by_threads"].values()) + " |")
    lines += ["", "| diffusion training step | steps/s | vs 1 thread |", "|---|---|---|"]
    lines += [f"| {name} | {r['steps_per_second']:.2f} | {r['speedup_over_one_thread']:.2f}x |"
              for name, r in result["cores"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--out", default="runs/bench/roofline.json")
    args, overrides = parser.parse_known_args()
    cfg = make_config(args.preset, overrides)
    result = {**hardware(torch.device("cpu")), "preset": args.preset,
              "by_threads": {t: measure(cfg, int(t), args.iters) for t in args.threads.split(",")},
              "cores": core_scaling(cfg)}
    result["markdown"] = markdown(result)
    print(result["markdown"])
    save(args.out, result)


if __name__ == "__main__":
    main()
