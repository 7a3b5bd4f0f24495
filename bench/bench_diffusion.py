"""Diffusion throughput: training images/s (forward + backward + AdamW step) and DDIM sampling
images/s of each preset's UNet, plus UNet forward images/s (what the diffusion classifier costs).
Writes JSON.

    python -m bench.bench_diffusion [--presets quick,cifar10] [--device cpu]
                                    [--out runs/bench/diffusion.json]
"""
from __future__ import annotations

import argparse

import torch

from bench.common import hardware, save, seconds_per_call
from core.cli import make_config
from core.training import autocast, pick_device
from minidiff.diffusion import Diffusion
from minidiff.unet import UNet


def bench_preset(preset: str, device: torch.device, iters: int) -> dict:
    cfg = make_config(preset)
    dc, res = cfg.diffusion, cfg.data.resolution
    unet = UNet(dc, res, cfg.clip.width, cfg.clip.embed_dim).to(device)
    if device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    diffusion = Diffusion(dc.timesteps, dc.schedule)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    b = dc.batch_size
    x = torch.randn(b, 3, res, res, device=device)
    ctx = torch.randn(b, cfg.clip.context_length, cfg.clip.width, device=device)
    pooled = torch.randn(b, cfg.clip.embed_dim, device=device)

    def train_step():
        with autocast(device):
            loss = diffusion.loss(lambda a, t: unet(a, t, ctx, pooled), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    n_sample = 64
    xs = torch.randn(n_sample, 3, res, res, device=device)
    ctx2, pooled2 = ctx[:1].expand(2 * n_sample, -1, -1), pooled[:1].expand(2 * n_sample, -1)

    @torch.no_grad()
    # DDIM with classifier-free guidance: one batched UNet call for cond + uncond per step
    def sample():
        with autocast(device):
            eps = lambda a, t: unet(torch.cat([a, a]), torch.cat([t, t]), ctx2, pooled2).chunk(2)[0]
            diffusion.ddim_sample(eps, xs, steps=dc.sample_steps)

    @torch.no_grad()
    def forward():
        with autocast(device):
            unet(torch.cat([x] * 4), torch.randint(dc.timesteps, (4 * b,), device=device),
                 torch.cat([ctx] * 4), torch.cat([pooled] * 4))

    train_s = seconds_per_call(train_step, iters, device, warmup=2)
    sample_s = seconds_per_call(sample, max(1, iters // 5), device)
    forward_s = seconds_per_call(forward, iters, device)
    return {"preset": preset, "resolution": res,
            "unet_parameters": sum(p.numel() for p in unet.parameters()), "batch_size": b,
            "train_images_per_second": b / train_s, "train_steps_per_second": 1 / train_s,
            "sample_images_per_second": n_sample / sample_s,
            "sampler": f"DDIM {dc.sample_steps} steps, CFG (2 UNet evaluations per step)",
            "forward_images_per_second": 4 * b / forward_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="quick,cifar10")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out", default="runs/bench/diffusion.json")
    args = parser.parse_args()
    device = pick_device(args.device)
    results = {**hardware(device),
               "presets": [bench_preset(p, device, args.iters) for p in args.presets.split(",")]}
    for r in results["presets"]:
        print(f"{r['preset']}: {r['unet_parameters'] / 1e6:.2f}M params, "
              f"train {r['train_images_per_second']:.0f} img/s, "
              f"DDIM sampling {r['sample_images_per_second']:.1f} img/s, "
              f"forward {r['forward_images_per_second']:.0f} img/s")
    save(args.out, results)


if __name__ == "__main__":
    main()
