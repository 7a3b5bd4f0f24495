"""What a preset's pipeline costs on one H100, counted on the CPU: an estimate, not a measurement.

    python -m bench.gpu_estimate [--preset cifar10] [--seeds 1]
                                 [--out runs/bench/gpu_estimate.json] [--a.b=v ...]

(--section.field=value overrides as for train.py, e.g. the shortened run of scripts/gpu_check.sh.)

Each stage that `python train.py --preset P --seeds N` runs (train.paper2, then train.paper1) is
built with the project's constructors at the preset's widths, and one optimizer step of its own
training code (training_step, customization_loss, GanTrainer.d_step + g_step, evalnet.fit,
self_initialize) runs on the CPU (bench/steps.py), counted three ways (bench/counting.py):
  FLOPs        torch.utils.flop_counter's formulas (FlopCounterMode's): matmuls, convolutions,
               attention; forward, backward, R1's double backward; 2 FLOPs per multiply-add.
               Normalisations, activations, optimizer and EMA updates are not counted (memory-bound:
               one reason MFU is low).
  activations  bytes of the tensors autograd saves for backward (saved_tensors_hooks; each storage
               once, parameters excluded), float32 as on the CPU (bf16 autocast halves part of
               them). Weights, gradients, optimizer moments and EMA copies are the separate
               `state_bytes`.
  ops          aten ops dispatched per step (views excluded): the launch floor below.
A step is counted at batch b and 2b and extrapolated linearly to the preset's batch B (exact for
terms linear in the batch plus a constant). Inference is counted per image times the image counts
the config implies: DDIM with classifier-free guidance (2 UNet passes a step), the diffusion
classifier's UNet passes per image.

Projection, per work item:  seconds = max(FLOPs / (peak * MFU), ops * OP_SECONDS)
  peak   H100 SXM dense tensor-core peak (NVIDIA's H100 datasheet gives 1,979 and 989 TFLOP/s with
         2:4 sparsity; dense is half): bf16 989.4 TFLOP/s under bf16 autocast (diffusion and
         evaluator training, GAN steps), TF32 494.7 TFLOP/s in float32 with TF32 on (CLIP,
         customization, sampling, the diffusion classifier, self-initialization). An H200 has the
         same peaks.
  MFU    assumed 10%, range 5-20%. Convnets this small leave the tensor cores idle much of the time
         (GroupNorm, SiLU, softmax, a kernel launch per op): a public PyTorch DDPM CIFAR-10 UNet
         trained with mixed precision on an A100 at 5.3% of the fp16 peak by its own count
         (github.com/kimbochen/ddpm, README; torchinfo multiply-adds x 3, so ~11% at 2 FLOPs per
         multiply-add), and the H100 has 3.2x the A100's peak but ~2x its memory bandwidth, which
         moves MFU down, not up.
  floor  OP_SECONDS = 10 us of CPU time per eager op (Python, dispatcher, launch; 5-20 us is
         typical, no CUDA graphs). Inference runs in batches of 256-1024 images and gets no floor.
Not counted: data loading, checkpoints, FD/KID arithmetic, CLIP's zero-shot test and the evaluator's
test pass (each under 1% of its stage's FLOPs), and the GAN stages' evaluation samples and the
evaluator passes judging them (under 6% of their stage's FLOPs, and those stages are held at the
launch floor).
"""
from __future__ import annotations

import argparse

import torch

import train
from bench.common import hardware, save
from bench.counting import at_batch
from bench.steps import (clip_step, customize_step, diffusion_step, evaluator_step, gan_models,
                         gan_step, selfinit_step, text_to_image, unet_flops)
from core.cli import make_config
from core.config import Config
from core.data import base_classes, class_names
from core.presets import PRESETS, customize_schedule
from core.training import count_parameters
from eval.evalnet import Evaluator
from minidiff.classifier import stage_grid
from minidiff.clip import TextEncoder, TinyClip
from minidiff.customize import prepare
from minidiff.regularizers import anchor_prompts
from minidiff.train_clip import build_tokenizer
from minidiff.train_customize import customization_name as customize_name
from minigan.transfer import variant_name as transfer_name

PEAK = {"bf16": 989.4e12, "tf32": 494.7e12}      # FLOP/s, H100 SXM dense (datasheet / 2)
MFU = {"central": 0.10, "high": 0.20, "low": 0.05}
OP_SECONDS = 10e-6                                # CPU time per eager op: the launch floor
FP32 = 4                                          # bytes per value


def state_bytes(total: int, trainable: int, slots: int = 2, ema: int = 0) -> int:
    """Weights, gradients, optimizer moments (Adam: 2 slots, SGD momentum: 1) and EMA copies,
    float32."""
    return FP32 * (total + trainable * (1 + slots) + ema)


# ------------------------------------------------------------------------------ the stages of a run

def classifier_passes(cfg: Config, n_classes: int) -> int:
    """UNet passes per image of the adaptive diffusion classifier (minidiff.classifier,
    classify)."""
    cc, passes, scored, k = cfg.classifier, 0, set(), n_classes
    for size, keep in zip(cc.stages, cc.keep):
        new = set(stage_grid(cc.n_timesteps, size).tolist()) - scored
        passes, scored, k = passes + k * len(new), scored | new, min(keep, k)
    return passes


def per_class(cfg: Config, split: str) -> int:
    """Images a class has in a split (CIFAR-10: 5000 train, 1000 test), capped by
    data.train/test_subset."""
    d, n_classes = cfg.data, len(class_names(cfg.data))
    n = (d.shapes_train_size if split == "train" else d.shapes_test_size) // n_classes \
        if d.dataset == "shapes" else (5000 if split == "train" else 1000)
    subset = getattr(d, f"{split}_subset", 0)
    return min(n, -(-subset // n_classes)) if subset else n


def record(name, params, state, step, steps, precision, work=()) -> dict:
    """A stage: `steps` training steps (FLOPs and launch floor) plus work items (what, FLOPs,
    precision, floor seconds), projected at each MFU."""
    items = ([("training steps", step["flops"] * steps, precision,
               step["ops"] * steps * OP_SECONDS)] if steps else [])
    items = [dict(zip(("what", "flops", "precision", "floor_seconds"), w))
             for w in items + list(work)]
    seconds = {k: sum(max(i["flops"] / (PEAK[i["precision"]] * mfu), i["floor_seconds"])
                      for i in items)
               for k, mfu in MFU.items()}
    return {"stage": name, "parameters": params, "state_bytes": state, "step": step, "steps": steps,
            "work": items, "flops": sum(i["flops"] for i in items), "seconds": seconds}


def diffusion_stages(stage, c: Config, ctx: dict) -> dict:
    """clip, diffusion, one customization or its drift measurement, with the config the pipeline
    gives it."""
    base, (unet, text), done = base_classes(c.data), ctx["unet+text"], ctx["done"]
    cc, dc = c.customize, c.diffusion
    sample = dc.sample_steps * (1 if dc.guidance == 1 else 2) * ctx["unet_flops"]   # one DDIM image
    if stage is train.train_clip:
        n = ctx["clip"]
        step = at_batch(lambda b: clip_step(c, b), 16, c.clip.batch_size)
        return record("clip", {"trainable": n, "total": n}, state_bytes(n, n), step, c.clip.steps,
                      "tf32")
    if stage is train.train_diffusion:
        grids = 1 + (len(range(dc.sample_every, dc.steps, dc.sample_every)) if dc.sample_every
                     else 0)
        n = (8 * grids + dc.quality_samples) * len(base)
        step = at_batch(lambda b: diffusion_step(c, b), 1, dc.batch_size)
        return record("diffusion", {"trainable": unet, "total": unet + text},
                      state_bytes(unet + text, unet, ema=unet), step, dc.steps, "bf16",
                      [(f"{n} DDIM samples: grids, quality", n * sample, "tf32", 0.0)])
    if stage is train.customize:
        if (cc.method, cc.reg) not in done:
            done[cc.method, cc.reg] = at_batch(lambda b: customize_step(c, b), 1, cc.k_images)
        n = cc.fidelity_samples  # + the base model's anchor and prior images, made once (cached)
        if cc.reg == "functional" and not done.get("anchors"):
            n += cc.images_per_anchor * (len(anchor_prompts(c)) - 1) + cc.empty_anchor_images
        if cc.method == "full+prior" and not done.get("prior"):
            n += cc.n_prior_images
        done["anchors"] = done.get("anchors") or cc.reg == "functional"
        done["prior"] = done.get("prior") or cc.method == "full+prior"
        trainable, frozen = (count_parameters(prepare(text_to_image(c), c, base)),
                             unet * (cc.reg == "functional"))
        return record(f"customize {customize_name(c)}",
                      {"trainable": trainable, "total": unet + text},
                      state_bytes(unet + text + frozen, trainable), done[cc.method, cc.reg],
                      customize_schedule(c)[0], "tf32",
                      [(f"{n} DDIM samples", n * sample, "tf32", 0.0)])
    # drift: the classifier on both templates' test images and on the concept's, and paired
    # generations; the base model's side (and its floor, another noise bank) once per seed bank,
    # then cached
    first, k = (cc.seed not in ctx["banks"],
                min(c.classifier.n_images // len(base), per_class(c, "test")))
    ctx["banks"].add(cc.seed)
    side = 2 * len(base) * k * classifier_passes(c, len(base))
    passes = side * (1 + 2 * first) + k * classifier_passes(c, len(base) + 1)
    pairs = 2 * len(base) * c.drift.pairs            # every base class under both templates
    if c.data.dataset == "shapes":
        pairs += c.drift.attribute_prompts * c.drift.attribute_pairs
    pairs *= 1 + 2 * first
    return record(f"drift {customize_name(c)}", {"trainable": 0, "total": unet + text},
                  FP32 * (unet + text), None, 0, "tf32",
                  [(f"{passes:,} classifier UNet passes of {ctx['unet_flops'] / 1e9:.1f} GFLOP",
                            passes * ctx["unet_flops"], "tf32", 0.0),
                           (f"{pairs} DDIM samples", pairs * sample, "tf32", 0.0)])


def gan_stages(stage, c: Config, ctx: dict) -> dict:
    """eval-net, gan-pretrain or one gan-transfer row: D + G steps (R1 on every r1_every-th),
    self-init."""
    if stage is train.train_evaluator:
        ec, n = c.evalnet, ctx["evaluator"]
        steps = ec.epochs * (per_class(c, "train") * len(class_names(c.data)) // ec.batch_size)
        return record("eval-net", {"trainable": n, "total": n}, state_bytes(n, n, slots=1),
                      at_batch(lambda b: evaluator_step(c, b), 4, ec.batch_size), steps, "bf16")
    transfer, t, k, done = stage is train.transfer_gan, c.transfer, c.gan.r1_every, ctx["done"]
    key = (t.generator, t.head, t.ssl) if transfer else "pretrain"
    if key not in done:
        r1, plain = (at_batch(lambda b: gan_step(c, b, transfer, with_r1), 2,
                              t.batch_size if transfer else c.gan.batch_size)
                     for with_r1 in (True, False))
        done[key] = {**r1, "flops": (r1["flops"] + (k - 1) * plain["flops"]) / k,
                     "ops": (r1["ops"] + (k - 1) * plain["ops"]) / k}
    G, D, groups, *_ = gan_models(c, transfer)
    g, d = count_parameters(G.parameters()), count_parameters(D.parameters())
    params = {"trainable": count_parameters(p for group in groups for p in group["params"]), "G": g,
              "D": d}
    work = []
    if transfer and t.generator == "hypermod" and t.selfinit:
        si = at_batch(lambda b: selfinit_step(c, b), 2, t.selfinit_batch)
        work.append((f"{t.selfinit_steps} self-init steps", si["flops"] * t.selfinit_steps, "tf32",
                     si["ops"] * t.selfinit_steps * OP_SECONDS))
    return record(f"gan-transfer {transfer_name(c)}" if transfer else "gan-pretrain", params,
                  state_bytes(g + d, params["trainable"] + d, ema=g), done[key],
                  t.steps if transfer else c.gan.steps, "bf16", work)


def estimate(cfg: Config, seeds: int) -> list[dict]:
    """One record per stage of `train.py --preset P --seeds N`, in the order a GPU run takes
    them."""
    tokens, names = len(build_tokenizer(cfg)), class_names(cfg.data)
    ctx = {"clip": count_parameters(TinyClip(tokens, cfg.clip).parameters()),
           "unet+text": (count_parameters(text_to_image(cfg).unet.parameters()),
                         count_parameters(TextEncoder(tokens, cfg.clip).parameters())),
           "evaluator": count_parameters(Evaluator(cfg.evalnet, len(names)).parameters()),
           "unet_flops": unet_flops(cfg), "done": {}, "banks": set()}
    gan = (train.train_evaluator, train.pretrain_gan, train.transfer_gan)
    plan = train.paper2(cfg, seeds) + train.paper1(cfg, train.DEFAULT_METHODS, seeds)
    return [(gan_stages if stage in gan else diffusion_stages)(stage, c, ctx) for stage, c in plan]


def markdown(stages: list[dict]) -> str:
    """docs/gpu.md's table: one row per stage, then the total."""
    minutes = lambda s: f"{s['central'] / 60:.1f} ({s['high'] / 60:.1f}-{s['low'] / 60:.1f})"
    rows = ["| stage | trainable parameters | FLOPs per step (batch) | steps | activations per "
            "step | FLOPs | H100 minutes at 10% MFU (20%-5%) |", "|---|---|---|---|---|---|---|"]
    for s in stages:
        p, step = s["parameters"], s["step"]
        params = f"{p['trainable']:,} of {p['total']:,}" if "total" in p else \
            f"{p['trainable']:,} (G {p['G']:,}, D {p['D']:,})"
        per_step = f"{step['flops'] / 1e12:.3g} T ({step['batch']})" if step else "-"
        memory = f"{step['saved_bytes'] / 2**30:.2f} GiB" if step else "-"
        rows.append(f"| {s['stage']} | {params} | {per_step} | {s['steps'] or '-'} | {memory} | "
                    f"{s['flops'] / 1e15:.2f} P | {minutes(s['seconds'])} |")
    total = {k: sum(s["seconds"][k] for s in stages) for k in MFU}
    return "\n".join(rows + [f"| **total** | | | | | {sum(s['flops'] for s in stages) / 1e15:.0f} "
                             f"P | **{minutes(total)}** |"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10", choices=list(PRESETS))
    parser.add_argument("--seeds", type=int, default=1,
                        help="as train.py --seeds: repeats of each customization "
                             "and transfer")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for the counting runs")
    parser.add_argument("--out", default="runs/bench/gpu_estimate.json")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stages = estimate(make_config(args.preset, overrides), args.seeds)
    print(markdown(stages))
    save(args.out, {**hardware(torch.device("cpu")), "preset": args.preset, "overrides": overrides,
                    "seeds": args.seeds,
                    "estimate": "projected H100 time from counted FLOPs; not a measurement",
                    "assumptions": {"peak_flops_per_second": PEAK, "mfu": MFU,
                                    "op_seconds": OP_SECONDS,
                                    "peak_source": "NVIDIA H100 SXM datasheet, dense (half the "
                                                   "sparsity figures)"},
                    "stages": stages, "total": {"flops": sum(s["flops"] for s in stages),
                                                "seconds": {k: sum(s["seconds"][k] for s in stages)
                                                            for k in MFU}}})


if __name__ == "__main__":
    main()
