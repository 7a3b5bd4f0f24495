"""The per-step overheads the speed work removed, each timed against what it replaced on this
machine, and how much of a diffusion training step goes to operations that carry no counted FLOPs.
Writes JSON.

    python -m bench.overheads [--preset quick] [--threads 1] [--out runs/bench/overheads.json]

  optimizer   AdamW on the quick UNet's parameters: PyTorch's per-tensor loop (its CPU default) vs
              fused=True
  EMA         one lerp_ per tensor vs torch._foreach_lerp_ (core.training.EMA)
  clipping    clip_grad_norm_ per tensor vs foreach
  variance    the GAN discriminator's minibatch stddev: torch.var(dim=0) vs the mean of squares it
              now uses
  profile     torch.profiler over diffusion training steps: the share of CPU time in matmuls,
              convolutions and attention (the operations bench/roofline.py counts FLOPs for); the
              rest is normalisation, activations, elementwise work and the optimizer
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import hardware, save, seconds_per_call
from bench.steps import diffusion_step, text_to_image
from core.cli import make_config

FLOP_OPS = ("conv", "mm", "addmm", "bmm", "scaled_dot_product", "flash_attention", "linear")
CPU = torch.device("cpu")


def ms(fn, iters=50) -> float:
    return 1e3 * seconds_per_call(fn, iters, CPU, warmup=3)


def pair(before, after) -> dict:
    b, a = ms(before), ms(after)
    return {"before_ms": b, "after_ms": a, "speedup": b / a}


def overheads(cfg) -> dict:
    params = list(text_to_image(cfg).unet.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    copies = [p.detach().clone() for p in params]

    def ema_loop():
        for e, p in zip(copies, params):
            e.lerp_(p.detach(), 1e-3)
    # (G, B/G, C, H, W) as minibatch_stddev sees it
    group = torch.randn(4, cfg.gan.batch_size // 4, 64, 4, 4)
    return {
        "parameters": len(params),
        "optimizer": pair(torch.optim.AdamW(params, foreach=False).step,
                          torch.optim.AdamW(params, fused=True).step),
        "ema": pair(ema_loop,
                    lambda: torch._foreach_lerp_(copies, [p.detach() for p in params], 1e-3)),
        "clipping": pair(lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=False),
                         lambda: torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)),
        "variance": pair(lambda: group.var(dim=0, unbiased=False),
                         lambda: (group - group.mean(dim=0)).square().mean(dim=0)),
    }


def flop_op_share(cfg, steps: int = 5) -> float:
    """Share of the diffusion training step's self CPU time spent in FLOP-carrying operations."""
    step = diffusion_step(cfg, cfg.diffusion.batch_size)[0]
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if any(k in e.key for k in FLOP_OPS)) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench/overheads.json")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    cfg = make_config(args.preset, overrides)
    result = {**hardware(CPU), "preset": args.preset, **overheads(cfg),
              "diffusion_step_flop_op_share": flop_op_share(cfg)}
    for name in ("optimizer", "ema", "clipping", "variance"):
        r = result[name]
        print(f"{name}: {r['before_ms']:.2f} ms -> {r['after_ms']:.2f} ms ({r['speedup']:.1f}x)")
    print(f"diffusion training step: {result['diffusion_step_flop_op_share']:.0%} of its time in "
          "matmuls, convolutions and attention")
    save(args.out, result)


if __name__ == "__main__":
    main()
