"""Configuration: one dataclass per component, the presets, and the rules every value must follow.

Each field is declared with `param(default, ...)`: its valid range (`low`/`high`, or `choices`) sits
next to its default, so `validate(cfg)` can refuse a bad value before any work starts. Two markers
matter elsewhere:

  arch=True      the field changes a model's shape; a checkpoint built with another value is refused
                 (core.checkpoint.check_arch);
  result=False   the field does not change what a run computes (where it writes, how often it
                 saves), so a run may be resumed or skipped with another value (core.runs).

The presets are in core/presets.py, the checks in core/validate.py, command-line overrides
(`--diffusion.lr=1e-3`) in core/cli.py; why the tuned values were chosen is in docs/tuning.md.
"""
from __future__ import annotations

import dataclasses
import typing
import warnings
from dataclasses import dataclass, field

from core import shapes
from core.errors import ConfigError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
DATASETS = {"shapes": shapes.CLASSES, "cifar10": CIFAR10_CLASSES}
# reserved tokens, never in pretraining captions
PLACEHOLDERS = tuple(f"<new{i}>" for i in range(10))
AUGMENTATIONS = ("color", "translation", "cutout")  # DiffAugment ops (minigan/augment.py)


def param(default, *, low=None, high=None, above=None, choices=None, arch=False, result=True,
          fixed=False):
    """A config field with its valid values: low <= v <= high, v > above, or v in choices
    (applied to every element of a tuple). fixed: set by the program (e.g. run.preset from
    --preset), not by an override."""
    return field(default=default, metadata=dict(low=low, high=high, above=above, choices=choices,
                                                 arch=arch, result=result, fixed=fixed))


@dataclass
class RunConfig:
    preset: str = param("quick", fixed=True)       # set by --preset; runs go to <out_dir>/<preset>/
    out_dir: str = param("runs", result=False)
    device: str = param("auto", result=False)      # auto | cpu | cuda | cuda:N
    seed: int = param(0, low=0)
    threads: int = param(0, low=0, result=False)   # torch CPU threads; 0 keeps torch's default
    compile: bool = param(False, result=False)     # torch.compile the diffusion UNet (CUDA only)
    # UNet passes per call when sampling or classifying
    unet_batch: int = param(512, low=1, result=False)


@dataclass
class DataConfig:
    dataset: str = param("shapes", choices=tuple(DATASETS), arch=True)
    root: str = param("data/cifar10", result=False)  # cifar10: folder with train.npz/test.npz
    resolution: int = param(16, low=8, arch=True)    # pixels per side
    shapes_train_size: int = param(20000, low=1)     # procedural images per split (shapes only)
    shapes_test_size: int = param(10000, low=1)      # 1000 a class: per-class FD-eval needs them
    # > 0: only this many train images, balanced over classes
    train_subset: int = param(0, low=0)
    # > 0: likewise for the test split (smoke tests)
    test_subset: int = param(0, low=0)
    # shapes are a pure function of (seed, split, index)
    seed: int = param(0, low=0)
    concept_class: str = param("heart")              # diffusion side: held out of all base training
    # GAN pretraining
    source_classes: tuple[str, ...] = param(("circle", "square", "triangle", "ring", "diamond"))
    # GAN transfer
    target_classes: tuple[str, ...] = param(("star", "cross", "heart", "crescent", "arrow"))
    k_per_target: int = param(10, low=1)             # real images per target class for GAN transfer


@dataclass
class ClipConfig:
    # tokens per caption, <bos> and <eos> included
    context_length: int = param(16, low=4, arch=True)
    width: int = param(64, low=1, arch=True)      # text width = token-state dim the UNet attends to
    layers: int = param(2, low=1, arch=True)
    heads: int = param(4, low=1, arch=True)
    embed_dim: int = param(64, low=1, arch=True)  # joint image/text embedding
    image_channels: tuple[int, ...] = param((32, 64, 128), low=1, arch=True)
    steps: int = param(600, low=1)
    batch_size: int = param(128, low=2)           # InfoNCE needs negatives
    lr: float = param(2e-3, low=0)                # AdamW, peak of warm-up + cosine
    weight_decay: float = param(0.05, low=0)
    warmup: int = param(50, low=0)                # steps
    # chance each attribute phrase is in a caption
    attribute_prob: float = param(0.7, low=0, high=1)


@dataclass
class EvalNetConfig:
    # stem, then one stage per entry (/2 each)
    channels: tuple[int, ...] = param((16, 32, 64), low=1, arch=True)
    # residual blocks after each stage's downsampling
    blocks_per_stage: int = param(1, low=0, arch=True)
    epochs: int = param(3, low=1)
    batch_size: int = param(128, low=2)         # BatchNorm needs two images
    lr: float = param(0.2, low=0)               # SGD + Nesterov, peak of warm-up + cosine
    warmup_epochs: float = param(0.5, low=0)
    weight_decay: float = param(5e-4, low=0)
    label_smoothing: float = param(0.1, low=0, high=1)
    max_shift: int = param(1, low=0)            # random translation (pixels), with horizontal flips


@dataclass
class DiffusionConfig:
    seed: int = param(0, low=0)                      # the base model's own seed (--bases N: 0..N-1)
    base_channels: int = param(16, low=1, arch=True)
    # one UNet level each, /2 between
    channel_mults: tuple[int, ...] = param((1, 2, 2), low=1, arch=True)
    num_res_blocks: int = param(1, low=1, arch=True)
    # levels with transformer blocks
    attention_resolutions: tuple[int, ...] = param((8, 4), low=1, arch=True)
    heads: int = param(4, low=1, arch=True)
    # off whenever a frozen copy is compared (regularizer)
    dropout: float = param(0.0, low=0, high=1)
    timesteps: int = param(1000, low=2, arch=True)   # T
    schedule: str = param("cosine", choices=("cosine", "linear"), arch=True)
    steps: int = param(1600, low=1)
    batch_size: int = param(64, low=1)
    lr: float = param(3e-3, low=0)                   # AdamW, peak of warm-up + cosine
    warmup: int = param(100, low=0)                  # steps
    weight_decay: float = param(0.0, low=0)
    grad_clip: float = param(1.0, above=0)           # max global gradient norm
    ema_decay: float = param(0.999, low=0, high=1)
    # classifier-free guidance: caption -> empty prompt
    cond_drop_prob: float = param(0.1, low=0, high=1)
    attribute_prob: float = param(0.5, low=0, high=1)
    # per-class PNG grid every N steps (0: at the end)
    sample_every: int = param(600, low=0, result=False)
    checkpoint_every: int = param(600, low=0, result=False)  # 0: only at the end
    sample_steps: int = param(25, low=1)             # DDIM steps
    # generated images per class the evaluator judges
    quality_samples: int = param(30, low=1)
    guidance: float = param(5.0, low=0)              # classifier-free guidance scale s
    eta: float = param(0.0, low=0, high=1)           # DDIM eta (0: deterministic)


@dataclass
class CustomizeConfig:
    method: str = param("full", choices=("full", "full+prior", "lora", "custom", "ti"))
    # repeat: customization draws, drift noise banks (--seeds)
    seed: int = param(0, low=0)
    # against forgetting
    reg: str = param("none", choices=("none", "functional", "replay", "distill", "l2"))
    # anchor conditionings: the anchor prompts,
    # or random subject embeddings near the anchored classes'
    anchor_source: str = param("named", choices=("named", "random"))
    # an anchor prompt with its own images, or any
    anchor_pairing: str = param("own", choices=("own", "cross"))
    # random subjects: sd of the fitted Gaussian, times this
    random_width: float = param(1.0, above=0)
    k_images: int = param(5, low=1)               # images of the new concept (the held-out class)
    images: str = param("", result=False)         # or a folder of 3-20 images of your own concept
    # the last one is random anchors' subject
    placeholder: str = param("<new0>", choices=PLACEHOLDERS[:-1])
    prompt: str = param("a photo of a {}")        # {} is the placeholder
    steps: int = param(-1, low=-1)                # -1: the method's default (core.presets)
    # -1: the method's default; 0 is the no-change control
    lr: float = param(-1.0, low=-1)
    lora_rank: int = param(4, low=1)
    lora_convs: bool = param(True)                # adapters on the residual-block convolutions too
    lambda_pp: float = param(1.0, low=0)          # prior-preservation weight
    prior_prompt: str = param("")                 # empty: the first base class's plain prompt
    n_prior_images: int = param(32, low=1)
    lambda_fr: float = param(3.0, low=0)          # functional-regularization weight
    # which prediction is kept: each prompt's own, or the guided one sampling uses
    functional_target: str = param("separate", choices=("separate", "guided"))
    # share of anchors that are the empty prompt
    empty_anchor_prob: float = param(0.5, low=0, high=1)
    # what x_t is noised from
    anchor_images: str = param("generated", choices=("generated", "concept"))
    attribute_anchors: int = param(32, low=0)     # anchor prompts that name colours (shapes)
    images_per_anchor: int = param(4, low=1)      # base-model samples of each anchor prompt
    empty_anchor_images: int = param(32, low=1)   # base-model samples of the empty prompt
    lambda_l2: float = param(1.0, low=0)          # weight-space baseline: lambda sum ||W - W_0||^2
    lambda_replay: float = param(1.0, low=0)      # replay: prior preservation over the anchors
    lambda_distill: float = param(1e4, low=0)     # classifier-score distillation (errors are ~1e-2)
    fidelity_samples: int = param(64, low=1)


@dataclass
class ClassifierConfig:
    n_timesteps: int = param(40, low=1)        # the even grid of timesteps every class is scored on
    adaptive: bool = param(False)              # fewer passes (Li et al. Sec. 3.2); no error tables
    # adaptive: timesteps scored in each stage
    stages: tuple[int, ...] = param((5, 20), low=1)
    # adaptive: classes kept after each stage
    keep: tuple[int, ...] = param((2, 1), low=1)
    loss: str = param("l2", choices=("l2", "l1"))
    n_images: int = param(180, low=1)          # real test images of the base classes (balanced)
    # images per batch (batching never changes a result)
    batch_size: int = param(32, low=1, result=False)


@dataclass
class DriftConfig:
    # base classes no anchor names
    heldout_classes: tuple[str, ...] = param(("square", "star", "ring", "arrow"))
    anchor_templates: int = param(2, low=1)       # caption templates anchors may use: the first N
    template: int = param(0, low=0)               # the anchored template drift is measured with
    # the held-out one (index into the dataset's templates)
    heldout_template: int = param(2, low=0)
    pairs: int = param(16, low=2)                 # paired generations per prompt
    attribute_prompts: int = param(32, low=0)     # held-out prompts that name colours (shapes only)
    attribute_pairs: int = param(6, low=1)        # generations per attribute prompt


@dataclass
class GanConfig:
    seed: int = param(0, low=0)               # the pretrained GAN's own seed (--bases N: 0..N-1)
    z_dim: int = param(64, low=1, arch=True)
    w_dim: int = param(64, low=1, arch=True)
    # G widths from 4x4 up (one: the same)
    channels: tuple[int, ...] = param((32,), low=1, arch=True)
    mapping_layers: int = param(2, low=1, arch=True)
    mapping_lr_mul: float = param(1.0, above=0, arch=True)  # StyleGAN: 0.01
    d_arch: str = param("plain", choices=("plain", "resnet"), arch=True)  # minigan/discriminator.py
    d_channels: tuple[int, ...] = param((128, 64, 64), low=1, arch=True)  # D widths from 4x4 up
    steps: int = param(2000, low=1)
    batch_size: int = param(32, low=2)        # minibatch stddev needs groups of 2+
    lr: float = param(2e-3, low=0)            # Adam (0, 0.99), G and D
    r1_gamma: float = param(0.1, low=0)
    r1_every: int = param(4, low=1)           # lazy R1: every N D steps, scaled by N
    ema_decay: float = param(0.99, low=0, high=1)
    augment: tuple[str, ...] = param(("translation",), choices=AUGMENTATIONS)  # DiffAugment policy
    checkpoint_every: int = param(500, low=0, result=False)
    eval_samples: int = param(2000, low=2)    # generated images for FD-eval and the self-init check


@dataclass
class TransferConfig:
    # minigan/transfer.py
    generator: str = param("hypermod", choices=("scratch", "finetune", "hypermod"))
    seed: int = param(0, low=0)              # repeat: self-init, training draws, samples (--seeds)
    selfinit: bool = param(True)             # self-initialise the hypernetwork (hypermod only)
    ssl: str = param("barlow", choices=("none", "barlow", "ntxent"))  # self-supervised loss on D
    head: str = param("lowrank", choices=("dense", "lowrank"), arch=True)  # hyper-modulation heads
    rank: int = param(8, low=1, arch=True)
    # class embedding of the hypernetwork
    embed_dim: int = param(32, low=1, arch=True)
    d_cond: str = param("multihead", choices=("multihead", "projection"), arch=True)
    # D's class heads (official: random)
    d_class_init: str = param("random", choices=("random", "copy"))
    selfinit_steps: int = param(400, low=1)  # official: 10k
    selfinit_batch: int = param(16, low=1)   # official: 32
    selfinit_lr: float = param(1e-2, low=0)  # heads, cosine-decayed to 0 (official: 2e-3, constant)
    # class network's lr / the heads' (official: 0.01)
    selfinit_class_lr_mul: float = param(0.01, low=0)
    # embedding noise after the copy, x |e| (official: 0)
    selfinit_noise: float = param(0.0, low=0)
    steps: int = param(800, low=1)           # official: 200k at batch 10
    batch_size: int = param(32, low=2)
    # G's trainable parameters (hypermod: heads; official 2e-3);
    # -1: the preset's, per variant (core.presets.TRANSFER_LR)
    lr: float = param(-1.0, low=-1)
    # hypermod class network's lr / heads' (official: 0.001)
    class_lr_mul: float = param(1.0, low=0)
    d_lr: float = param(2e-3, low=0)         # official: 2e-3
    # D's per-class logits learn this much faster (official: 1)
    d_class_lr_mul: float = param(10.0, low=0)
    r1_gamma: float = param(0.1, low=0)      # official: 10 (StyleGAN v1 at 256 px)
    ema_decay: float = param(0.99, low=0, high=1)
    # official: none
    augment: tuple[str, ...] = param(("color", "translation"), choices=AUGMENTATIONS)
    ssl_weight: float = param(0.01, low=0)   # Barlow Twins weight (official: 0.01)
    checkpoint_every: int = param(100, low=0, result=False)
    eval_samples: int = param(1000, low=4)   # generated images per class for the metrics


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    evalnet: EvalNetConfig = field(default_factory=EvalNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    customize: CustomizeConfig = field(default_factory=CustomizeConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def updated(self, section: str, **values) -> "Config":
        """A copy with some fields of one section replaced, e.g.
        cfg.updated("customize", method="lora")."""
        return dataclasses.replace(
            self, **{section: dataclasses.replace(getattr(self, section), **values)})

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Rebuild a config saved with to_dict (e.g. from a checkpoint). Keys this version does not
        know (fields since removed) are skipped with a warning: no current model depends on them."""
        sections = {}
        for f in dataclasses.fields(cls):
            section_type, stored = f.default_factory, d.get(f.name, {})
            types = typing.get_type_hints(section_type)
            for key in sorted(set(stored) - set(types)):
                warnings.warn(f"ignoring stored config key {f.name}.{key}: unknown config key")
            sections[f.name] = section_type(**{k: coerce(v, types[k], f"{f.name}.{k}")
                                               for k, v in stored.items() if k in types})
        return cls(**sections)


def as_override(value) -> str:
    """A field's value as the command line writes it (coerce reads it back): tuples comma-separated,
    booleans true/false."""
    if isinstance(value, tuple):
        return ",".join(as_override(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def coerce(value, typ, key: str):
    """value as the field type int, float, str, bool or tuple[...]; strings are parsed
    (command line)."""
    if typing.get_origin(typ) is tuple:
        item_type = typing.get_args(typ)[0]
        items = (value.split(",") if isinstance(value, str)
                 else value if isinstance(value, (list, tuple)) else [value])
        return tuple(coerce(v.strip() if isinstance(v, str) else v, item_type, key)
                     for v in items if not (isinstance(v, str) and v.strip() == ""))
    if typ is bool:
        truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if isinstance(value, bool):
            return value
        if str(value).lower() not in truth:
            raise ConfigError(f"{key} expects a boolean (true/false), got {value!r}")
        return truth[str(value).lower()]
    if typ is str:
        return str(value)
    try:
        if isinstance(value, bool) or (typ is int and isinstance(value, float)
                                       and not value.is_integer()):
            raise ValueError
        return typ(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} expects {typ.__name__}, got {value!r}") from None


def field_default(name: str):
    """The declared default of 'section.field' (None for a name that is not a field)."""
    section, _, key = name.partition(".")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    if section not in fields:
        return None
    return {f.name: f.default for f in dataclasses.fields(fields[section].default_factory)}.get(key)


def arch_fields(section) -> dict:
    """The architecture fields of one config section, as a dict."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
            if f.metadata.get("arch")}


def result_fields(section) -> dict:
    """The fields of one config section that change what a run computes
    (core.runs keys runs by them)."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
            if f.metadata.get("result", True)}
