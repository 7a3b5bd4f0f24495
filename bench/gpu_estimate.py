"""What a preset's pipeline costs on one H100, counted on the CPU: an estimate, not a measurement.

    python -m bench.gpu_estimate [--preset cifar10] [--seeds 1] [--out runs/bench/gpu_estimate.json] [--a.b=v ...]

(--section.field=value overrides as for train.py, e.g. the shortened run of scripts/gpu_check.sh.)

Each stage that `python train.py --preset P --seeds N` runs (train.paper2, then train.paper1) is built with
the project's constructors at the preset's widths, and one optimizer step of its own training code
(training_step, customization_loss, GanTrainer.d_step + g_step, evalnet.fit, self_initialize) runs on the
CPU, counted three ways:
  FLOPs        torch.utils.flop_counter's formulas (FlopCounterMode's): matmuls, convolutions, attention;
               forward, backward, R1's double backward; 2 FLOPs per multiply-add. Normalisations,
               activations, optimizer and EMA updates are not counted (memory-bound: one reason MFU is low).
  activations  bytes of the tensors autograd saves for backward (saved_tensors_hooks; each storage once,
               parameters excluded), float32 as on the CPU (bf16 autocast halves part of them). Weights,
               gradients, optimizer moments and EMA copies are the separate `state_bytes`.
  ops          aten ops dispatched per step (views excluded): the launch floor below.
A step is counted at batch b and 2b and extrapolated linearly to the preset's batch B (exact for terms linear
in the batch plus a constant). Inference is counted per image times the image counts the config implies:
DDIM with classifier-free guidance (2 UNet passes a step), the diffusion classifier's UNet passes per image.

Projection, per work item:  seconds = max(FLOPs / (peak * MFU), ops * OP_SECONDS)
  peak   H100 SXM dense tensor-core peak (NVIDIA's H100 datasheet gives 1,979 and 989 TFLOP/s with 2:4
         sparsity; dense is half): bf16 989.4 TFLOP/s under bf16 autocast (diffusion and evaluator training,
         GAN steps), TF32 494.7 TFLOP/s in float32 with TF32 on (CLIP, customization, sampling, the diffusion
         classifier, self-initialization). An H200 has the same peaks.
  MFU    assumed 10%, range 5-20%. Convnets this small leave the tensor cores idle much of the time
         (GroupNorm, SiLU, softmax, a kernel launch per op): a public PyTorch DDPM CIFAR-10 UNet trained with
         mixed precision on an A100 at 5.3% of the fp16 peak by its own count (github.com/kimbochen/ddpm,
         README; torchinfo multiply-adds x 3, so ~11% at 2 FLOPs per multiply-add), and the H100 has 3.2x the
         A100's peak but ~2x its memory bandwidth, which moves MFU down, not up.
  floor  OP_SECONDS = 10 us of CPU time per eager op (Python, dispatcher, launch; 5-20 us is typical, no CUDA
         graphs). Inference runs in batches of 256-1024 images and gets no floor.
Not counted: data loading, checkpoints, FD/KID arithmetic, CLIP's zero-shot test and the evaluator's test pass
(each under 1% of its stage's FLOPs), and the GAN stages' evaluation samples and the evaluator passes judging
them (under 6% of their stage's FLOPs, and those stages are held at the launch floor).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import train
from bench.common import hardware, save
from core import captions
from core.cli import make_config
from core.config import Config
from core.data import ImageSet, base_classes, class_names
from core.presets import PRESETS, customize_schedule
from core.training import EMA, count_parameters, weight_decay_groups
from eval.evalnet import Evaluator, fit
from minidiff.classifier import stage_grid
from minidiff.clip import TextEncoder, TinyClip
from minidiff.customize import prepare
from minidiff.diffusion import Diffusion
from minidiff.regularizers import anchor_prompts, prior_prompt
from minidiff.train_clip import build_tokenizer
from minidiff.train_customize import customization_loss, run_name as customize_name
from minidiff.train_diffusion import build_model, training_step
from minigan.generator import ConditionalGenerator
from minigan.hypermod import HyperModulatedGenerator
from minigan.loop import GanTrainer
from minigan.pretrain import build_discriminator, build_generator, pretrain_spec
from minigan.selfinit import self_initialize
from minigan.transfer import run_name as transfer_name, transfer_spec

PEAK = {"bf16": 989.4e12, "tf32": 494.7e12}      # FLOP/s, H100 SXM dense (datasheet / 2)
MFU = {"central": 0.10, "high": 0.20, "low": 0.05}
OP_SECONDS = 10e-6                                # CPU time per eager op: the launch floor
FP32 = 4                                          # bytes per value


class Counter(TorchDispatchMode):
    """FLOPs (flop_registry's formulas, applied as FlopCounterMode does; its module tracker rejects the
    parameter views that no_grad code makes, e.g. the GAN's const.expand) and ops (views excluded)."""

    def __init__(self):
        super().__init__()
        self.flops = self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._overloadpacket not in flop_registry:    # a composite op: count what it decomposes into
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        self.ops += not func.is_view
        if func._overloadpacket in flop_registry:
            self.flops += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        return out


def count(step, params) -> dict:
    """FLOPs, bytes saved for backward (storages of `params` excluded) and ops of one call of step()."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    saved, alive = {}, []                         # alive: no saved storage is freed and its address reused

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            saved[s.data_ptr()] = s.nbytes()
            alive.append(t)
        return t
    with Counter() as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return {"flops": counter.flops, "saved_bytes": sum(saved.values()), "ops": counter.ops}


def at_batch(make, b: int, B: int) -> dict:
    """count() of make(b) and make(2b) (each returns (step, params)), extrapolated linearly to batch B."""
    small, large = (count(*make(n)) for n in (b, 2 * b))
    grow = lambda key: small[key] + (large[key] - small[key]) * (B - b) / b
    return {"flops": grow("flops"), "saved_bytes": grow("saved_bytes"), "ops": large["ops"], "batch": B,
            "counted_at_batch": [b, 2 * b]}


def state_bytes(total: int, trainable: int, slots: int = 2, ema: int = 0) -> int:
    """Weights, gradients, optimizer moments (Adam: 2 slots, SGD momentum: 1) and EMA copies, float32."""
    return FP32 * (total + trainable * (1 + slots) + ema)


def images(cfg: Config, n: int) -> torch.Tensor:
    return torch.rand(n, 3, cfg.data.resolution, cfg.data.resolution) * 2 - 1


def fake_split(cfg: Config, n: int) -> ImageSet:
    """n random uint8 images labelled with the base classes (shapes: attributes 0), as a training split."""
    names, base, r = class_names(cfg.data), base_classes(cfg.data), cfg.data.resolution
    y = torch.tensor([names.index(base[i % len(base)]) for i in range(n)])
    attrs = torch.zeros(n, 3, dtype=torch.long) if cfg.data.dataset == "shapes" else None
    return ImageSet(torch.randint(256, (n, r, r, 3), dtype=torch.uint8), y, attrs, names)


def text_to_image(cfg: Config):
    tokenizer = build_tokenizer(cfg)
    return build_model(cfg, TextEncoder(len(tokenizer), cfg.clip), tokenizer)


# ------------------------------------------------------------------------------ one step of each stage

def clip_step(cfg: Config, b: int):
    tokenizer = build_tokenizer(cfg)
    model = TinyClip(len(tokenizer), cfg.clip)
    opt = torch.optim.AdamW(weight_decay_groups(model, cfg.clip.weight_decay), lr=cfg.clip.lr, foreach=True)
    base, template = base_classes(cfg.data), captions.TEMPLATES[cfg.data.dataset][0]
    tokens = tokenizer([captions.class_caption(template, base[i % len(base)]) for i in range(b)])
    ids, x = torch.unique(tokens, dim=0, return_inverse=True)[1], images(cfg, b)
    return lambda: (opt.zero_grad(), model(x, tokens, ids).backward(), opt.step()), list(model.parameters())


def evaluator_step(cfg: Config, b: int):
    model, split = Evaluator(cfg.evalnet, len(class_names(cfg.data))), fake_split(cfg, b)
    ec = dataclasses.replace(cfg.evalnet, batch_size=b, epochs=1, warmup_epochs=0)  # fit(): exactly one step
    return lambda: fit(model, split.x, lambda logits, i: F.cross_entropy(logits, split.y[i]), ec, 0, "count"), \
        list(model.parameters())


def diffusion_step(cfg: Config, b: int):
    model, split = text_to_image(cfg), fake_split(cfg, 64)
    opt = torch.optim.AdamW(model.unet.parameters(), lr=cfg.diffusion.lr, foreach=True)
    ema = EMA(model.unet, cfg.diffusion.ema_decay)
    args = (cfg.updated("diffusion", batch_size=b), model, model.unet,
            Diffusion(cfg.diffusion.timesteps, cfg.diffusion.schedule), opt, ema, images(cfg, 64), split, 0)
    return lambda: training_step(*args), list(model.parameters()) + list(ema.model.parameters())


def customize_step(cfg: Config, b: int):
    """customization_loss + backward + clipped step on b concept images, set up as _customize does."""
    cc, classes = cfg.customize, base_classes(cfg.data)
    model, diffusion = text_to_image(cfg), Diffusion(cfg.diffusion.timesteps, cfg.diffusion.schedule)
    anchors, extra = anchor_prompts(cfg, classes), {}
    if cc.method == "full+prior":
        extra["prior"] = (prior_prompt(cfg, classes), images(cfg, cc.n_prior_images))
    if cc.reg == "functional":                   # the frozen copy, and one base image per anchor
        extra["frozen"] = copy.deepcopy(model).requires_grad_(False).eval()
        one = torch.ones(len(anchors), dtype=torch.long)
        extra["anchor_images"] = (images(cfg, len(anchors)), torch.cumsum(one, 0) - one, one)
    params = prepare(model, cfg, classes)
    if cc.reg == "l2":
        extra["initial"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt, x0 = torch.optim.AdamW(params, foreach=True), images(cfg, b)
    prompt = cc.prompt.format(cc.placeholder)
    model.eval()

    def step():
        opt.zero_grad(set_to_none=True)
        customization_loss(cfg, model, diffusion, x0, prompt, anchors, extra)[0].backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.diffusion.grad_clip)
        opt.step()
    return step, list(model.parameters()) + (list(extra["frozen"].parameters()) if "frozen" in extra else [])


def gan_models(cfg: Config, transfer: bool):
    """(G, D, G's parameter groups, labels, classes) of pretraining or of a transfer row, fresh weights (as
    minigan.transfer.build_models; scratch and finetune have the same shapes)."""
    G, t, n = build_generator(cfg), cfg.transfer, len(cfg.data.target_classes)
    if not transfer:
        return G, build_discriminator(cfg), [{"params": list(G.parameters())}], None, 0
    if t.generator == "hypermod":
        G = HyperModulatedGenerator(G, n, head=t.head, rank=t.rank, embed_dim=t.embed_dim)
        groups = G.parameter_groups(t.lr, t.class_lr_mul)
    else:
        G = ConditionalGenerator(G, n)
        groups = [{"params": G.trainable_parameters()}]
    return G, build_discriminator(cfg, n), groups, torch.randint(n, (256,)), n


def gan_step(cfg: Config, b: int, transfer: bool, r1: bool):
    """D step (with or without the lazy R1 term) + G step of minigan/loop.py at batch b."""
    G, D, groups, labels, n = gan_models(cfg, transfer)
    spec = dataclasses.replace(transfer_spec(cfg) if transfer else pretrain_spec(cfg), batch_size=b)
    trainer = GanTrainer(G, D, groups, cfg.gan.z_dim, images(cfg, 256), labels, n, spec, "count")
    trainer.step = 0 if r1 else 1                 # R1 runs when step % r1_every == 0
    for group in trainer.opt_g.param_groups + trainer.opt_d.param_groups:
        group["foreach"] = True                   # multi-tensor updates, as on CUDA: the GPU's op count
    return lambda: (trainer.d_step(), trainer.g_step()), list(G.parameters()) + list(D.parameters())


def selfinit_step(cfg: Config, b: int):
    G, t = gan_models(cfg, transfer=True)[0], cfg.transfer
    return lambda: self_initialize(G, 1, b, t.selfinit_lr, t.selfinit_class_lr_mul, progress=False), \
        list(G.parameters())


@torch.no_grad()
def unet_flops(cfg: Config, b: int = 2) -> float:
    """FLOPs per image of one UNet pass: a DDIM step costs 2 of them with guidance, a classifier score 1."""
    model, x = text_to_image(cfg).eval(), images(cfg, b)
    return count(lambda: model(x, torch.zeros(b, dtype=torch.long), model.encode([""] * b)), [])["flops"] / b


# ------------------------------------------------------------------------------ the stages of a run

def classifier_passes(cfg: Config, n_classes: int) -> int:
    """UNet passes per image of the adaptive diffusion classifier (minidiff.classifier, classify)."""
    cc, passes, scored, k = cfg.classifier, 0, set(), n_classes
    for size, keep in zip(cc.stages, cc.keep):
        new = set(stage_grid(cc.n_timesteps, size).tolist()) - scored
        passes, scored, k = passes + k * len(new), scored | new, min(keep, k)
    return passes


def per_class(cfg: Config, split: str) -> int:
    """Images a class has in a split (CIFAR-10: 5000 train, 1000 test), capped by data.train/test_subset."""
    d, n_classes = cfg.data, len(class_names(cfg.data))
    n = (d.shapes_train_size if split == "train" else d.shapes_test_size) // n_classes \
        if d.dataset == "shapes" else (5000 if split == "train" else 1000)
    subset = getattr(d, f"{split}_subset", 0)
    return min(n, -(-subset // n_classes)) if subset else n


def record(name, params, state, step, steps, precision, work=()) -> dict:
    """A stage: `steps` training steps (FLOPs and launch floor) plus work items (what, FLOPs, precision,
    floor seconds), projected at each MFU."""
    items = [("training steps", step["flops"] * steps, precision, step["ops"] * steps * OP_SECONDS)] if steps else []
    items = [dict(zip(("what", "flops", "precision", "floor_seconds"), w)) for w in items + list(work)]
    seconds = {k: sum(max(i["flops"] / (PEAK[i["precision"]] * mfu), i["floor_seconds"]) for i in items)
               for k, mfu in MFU.items()}
    return {"stage": name, "parameters": params, "state_bytes": state, "step": step, "steps": steps,
            "work": items, "flops": sum(i["flops"] for i in items), "seconds": seconds}


def diffusion_stages(stage, c: Config, ctx: dict) -> dict:
    """clip, diffusion, one customization or its drift measurement, with the config the pipeline gives it."""
    base, (unet, text), done = base_classes(c.data), ctx["unet+text"], ctx["done"]
    cc, dc = c.customize, c.diffusion
    sample = dc.sample_steps * (1 if dc.guidance == 1 else 2) * ctx["unet_flops"]   # one DDIM image
    if stage is train.train_clip:
        n = ctx["clip"]
        step = at_batch(lambda b: clip_step(c, b), 16, c.clip.batch_size)
        return record("clip", {"trainable": n, "total": n}, state_bytes(n, n), step, c.clip.steps, "tf32")
    if stage is train.train_diffusion:
        grids = 1 + (len(range(dc.sample_every, dc.steps, dc.sample_every)) if dc.sample_every else 0)
        n = (8 * grids + dc.quality_samples) * len(base)
        step = at_batch(lambda b: diffusion_step(c, b), 1, dc.batch_size)
        return record("diffusion", {"trainable": unet, "total": unet + text},
                      state_bytes(unet + text, unet, ema=unet), step, dc.steps, "bf16",
                      [(f"{n} DDIM samples: grids, quality", n * sample, "tf32", 0.0)])
    if stage is train.customize:
        if (cc.method, cc.reg) not in done:
            done[cc.method, cc.reg] = at_batch(lambda b: customize_step(c, b), 1, cc.k_images)
        n = cc.fidelity_samples               # + the base model's anchor and prior images, made once (cached)
        if cc.reg == "functional" and not done.get("anchors"):
            n += cc.images_per_anchor * (len(anchor_prompts(c, base)) - 1) + cc.empty_anchor_images
        if cc.method == "full+prior" and not done.get("prior"):
            n += cc.n_prior_images
        done["anchors"] = done.get("anchors") or cc.reg == "functional"
        done["prior"] = done.get("prior") or cc.method == "full+prior"
        trainable, frozen = count_parameters(prepare(text_to_image(c), c, base)), unet * (cc.reg == "functional")
        return record(f"customize {customize_name(c)}", {"trainable": trainable, "total": unet + text},
                      state_bytes(unet + text + frozen, trainable), done[cc.method, cc.reg],
                      customize_schedule(c)[0], "tf32", [(f"{n} DDIM samples", n * sample, "tf32", 0.0)])
    # drift: the classifier on both templates' test images and on the concept's, and paired generations; the
    # base model's side (and its floor, another noise bank) once per seed bank, then cached
    first, k = cc.seed not in ctx["banks"], min(c.classifier.n_images // len(base), per_class(c, "test"))
    ctx["banks"].add(cc.seed)
    side = 2 * len(base) * k * classifier_passes(c, len(base))
    passes = side * (1 + 2 * first) + k * classifier_passes(c, len(base) + 1)
    pairs = 2 * len(base) * c.drift.pairs            # every base class under both templates
    if c.data.dataset == "shapes":
        pairs += c.drift.attribute_prompts * c.drift.attribute_pairs
    pairs *= 1 + 2 * first
    return record(f"drift {customize_name(c)}", {"trainable": 0, "total": unet + text}, FP32 * (unet + text), None, 0,
                  "tf32", [(f"{passes:,} classifier UNet passes of {ctx['unet_flops'] / 1e9:.1f} GFLOP",
                            passes * ctx["unet_flops"], "tf32", 0.0),
                           (f"{pairs} DDIM samples", pairs * sample, "tf32", 0.0)])


def gan_stages(stage, c: Config, ctx: dict) -> dict:
    """eval-net, gan-pretrain or one gan-transfer row: D + G steps (R1 on every r1_every-th), self-init."""
    if stage is train.train_evaluator:
        ec, n = c.evalnet, ctx["evaluator"]
        steps = ec.epochs * (per_class(c, "train") * len(class_names(c.data)) // ec.batch_size)
        return record("eval-net", {"trainable": n, "total": n}, state_bytes(n, n, slots=1),
                      at_batch(lambda b: evaluator_step(c, b), 4, ec.batch_size), steps, "bf16")
    transfer, t, k, done = stage is train.transfer_gan, c.transfer, c.gan.r1_every, ctx["done"]
    key = (t.generator, t.head, t.ssl) if transfer else "pretrain"
    if key not in done:
        r1, plain = (at_batch(lambda b: gan_step(c, b, transfer, with_r1), 2, t.batch_size if transfer
                              else c.gan.batch_size) for with_r1 in (True, False))
        done[key] = {**r1, "flops": (r1["flops"] + (k - 1) * plain["flops"]) / k,
                     "ops": (r1["ops"] + (k - 1) * plain["ops"]) / k}
    G, D, groups, *_ = gan_models(c, transfer)
    g, d = count_parameters(G.parameters()), count_parameters(D.parameters())
    params = {"trainable": count_parameters(p for group in groups for p in group["params"]), "G": g, "D": d}
    work = []
    if transfer and t.generator == "hypermod" and t.selfinit:
        si = at_batch(lambda b: selfinit_step(c, b), 2, t.selfinit_batch)
        work.append((f"{t.selfinit_steps} self-init steps", si["flops"] * t.selfinit_steps, "tf32",
                     si["ops"] * t.selfinit_steps * OP_SECONDS))
    return record(f"gan-transfer {transfer_name(c)}" if transfer else "gan-pretrain", params,
                  state_bytes(g + d, params["trainable"] + d, ema=g), done[key],
                  t.steps if transfer else c.gan.steps, "bf16", work)


def estimate(cfg: Config, seeds: int) -> list[dict]:
    """One record per stage of `train.py --preset P --seeds N`, in the order a GPU run takes them."""
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
    """The README's table: one row per stage, then the total."""
    minutes = lambda s: f"{s['central'] / 60:.1f} ({s['high'] / 60:.1f}-{s['low'] / 60:.1f})"
    rows = ["| stage | trainable parameters | FLOPs per step (batch) | steps | activations per step | FLOPs | "
            "H100 minutes at 10% MFU (20%-5%) |", "|---|---|---|---|---|---|---|"]
    for s in stages:
        p, step = s["parameters"], s["step"]
        params = f"{p['trainable']:,} of {p['total']:,}" if "total" in p else \
            f"{p['trainable']:,} (G {p['G']:,}, D {p['D']:,})"
        per_step = f"{step['flops'] / 1e12:.3g} T ({step['batch']})" if step else "-"
        memory = f"{step['saved_bytes'] / 2**30:.2f} GiB" if step else "-"
        rows.append(f"| {s['stage']} | {params} | {per_step} | {s['steps'] or '-'} | {memory} | "
                    f"{s['flops'] / 1e15:.2f} P | {minutes(s['seconds'])} |")
    total = {k: sum(s["seconds"][k] for s in stages) for k in MFU}
    return "\n".join(rows + [f"| **total** | | | | | {sum(s['flops'] for s in stages) / 1e15:.0f} P | "
                             f"**{minutes(total)}** |"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cifar10", choices=list(PRESETS))
    parser.add_argument("--seeds", type=int, default=1, help="as train.py --seeds: repeats of each customization "
                                                             "and transfer")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the counting runs")
    parser.add_argument("--out", default="runs/bench/gpu_estimate.json")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stages = estimate(make_config(args.preset, overrides), args.seeds)
    print(markdown(stages))
    save(args.out, {**hardware(torch.device("cpu")), "preset": args.preset, "overrides": overrides,
                    "seeds": args.seeds,
                    "estimate": "projected H100 time from counted FLOPs; not a measurement",
                    "assumptions": {"peak_flops_per_second": PEAK, "mfu": MFU, "op_seconds": OP_SECONDS,
                                    "peak_source": "NVIDIA H100 SXM datasheet, dense (half the sparsity figures)"},
                    "stages": stages, "total": {"flops": sum(s["flops"] for s in stages),
                                                "seconds": {k: sum(s["seconds"][k] for s in stages) for k in MFU}}})


if __name__ == "__main__":
    main()
