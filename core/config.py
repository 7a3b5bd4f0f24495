"""Configuration: one dataclass per component, two presets, and command-line overrides.

Every field can be overridden as ``--section.field=value`` (or ``--section.field value``); e.g.
``--diffusion.lr=1e-3 --data.resolution=32``. Tuples are written comma-separated
(``--data.source_classes=circle,square``). Unknown sections or fields, values of the wrong type and
unknown presets stop with a message that names the valid choices.

Fields marked ``arch`` describe the shape of a model; a checkpoint whose stored ``arch`` fields differ
from the config a model is built from is refused (see core.checkpoint).
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
import warnings
from dataclasses import dataclass, field


def arch(default):
    """A field that changes a model's architecture (checked when loading checkpoints)."""
    return field(default=default, metadata={"arch": True})


@dataclass
class RunConfig:
    preset: str = "quick"
    out_dir: str = "runs"         # runs go to <out_dir>/<preset>/<stage>/
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    seed: int = 0
    threads: int = 0              # torch CPU threads; 0 keeps torch's default
    compile: bool = False         # torch.compile the diffusion UNet (CUDA only)


@dataclass
class DataConfig:
    dataset: str = arch("shapes")                  # shapes | cifar10
    root: str = "data/cifar10"                     # cifar10: folder with train.npz/test.npz, or torchvision root
    resolution: int = arch(16)
    shapes_train_size: int = 20000                 # procedural images per split (shapes only)
    shapes_test_size: int = 2000
    seed: int = 0                                  # shapes are a pure function of (seed, split, index)
    concept_class: str = "heart"                   # diffusion side: held out of all base training
    source_classes: tuple[str, ...] = ("circle", "square", "triangle", "ring", "diamond")  # GAN pretraining
    target_classes: tuple[str, ...] = ("star", "cross", "heart", "crescent", "arrow")      # GAN transfer
    k_per_target: int = 10                         # real images per target class for GAN transfer


@dataclass
class ClipConfig:
    context_length: int = arch(16)
    width: int = arch(64)          # text transformer width = token-state dim the UNet attends to
    layers: int = arch(2)
    heads: int = arch(4)
    embed_dim: int = arch(64)      # joint image/text embedding
    image_channels: tuple[int, ...] = arch((32, 64, 128))
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 50
    attribute_prob: float = 0.7    # chance each attribute phrase appears in a training caption


@dataclass
class EvalNetConfig:
    channels: tuple[int, ...] = arch((16, 32, 64))   # stem, then one stage per entry (each halves H, W)
    blocks_per_stage: int = arch(1)                  # residual blocks after each stage's downsampling
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.2                                  # SGD + Nesterov, peak of warm-up/cosine
    warmup_epochs: float = 0.5
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    max_shift: int = 1                               # random translation (pixels), with horizontal flips


@dataclass
class DiffusionConfig:
    base_channels: int = arch(16)
    channel_mults: tuple[int, ...] = arch((1, 2, 2))
    num_res_blocks: int = arch(1)
    attention_resolutions: tuple[int, ...] = arch((8, 4))
    heads: int = arch(4)
    dropout: float = 0.0
    timesteps: int = arch(1000)
    schedule: str = arch("cosine")       # cosine | linear
    steps: int = 1600
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cond_drop_prob: float = 0.1          # classifier-free guidance: caption replaced by the empty prompt
    attribute_prob: float = 0.5
    sample_every: int = 600              # per-class PNG grid every N steps (0: only at the end)
    checkpoint_every: int = 600
    sample_steps: int = 25               # DDIM steps
    guidance: float = 5.0
    eta: float = 0.0


@dataclass
class CustomizeConfig:
    method: str = "full"                 # full | full+prior | lora | custom | ti
    reg: str = "none"                    # none | functional
    k_images: int = 5
    placeholder: str = "<new0>"
    prompt: str = "a photo of a {}"
    steps: int = -1                      # < 0: the method's default below (0 is a valid no-op control)
    lr: float = -1.0                     # < 0: the method's default below (0 is the drift control)
    steps_full: int = 400                # per-method defaults, tuned on the quick preset so that each
    lr_full: float = 3e-4                # method learns the concept (see README)
    steps_lora: int = 300
    lr_lora: float = 3e-3
    steps_custom: int = 500
    lr_custom: float = 3e-3
    steps_ti: int = 300
    lr_ti: float = 5e-2
    lora_rank: int = 4
    lora_convs: bool = True              # adapters on the residual-block convolutions too
    lambda_pp: float = 1.0
    prior_prompt: str = ""               # empty: the first base class, see minidiff.regularizers
    n_prior_images: int = 32
    lambda_fr: float = 3.0                # quick: 1 left CDI unchanged for full; 5 cost LoRA 14 pts of fidelity
    empty_anchor_prob: float = 0.5       # share of anchors that are the empty prompt (CFG amplifies its drift)
    anchor_images: str = "generated"     # generated (base-model samples of the anchors) | concept
    fidelity_samples: int = 64


@dataclass
class ClassifierConfig:
    n_timesteps: int = 40                # the full even grid of timesteps
    stages: tuple[int, ...] = (5, 20)    # adaptive: nested sub-grid size of each stage
    keep: tuple[int, ...] = (2, 1)       # classes kept after each stage
    loss: str = "l2"                     # l2 | l1
    prompt: str = "a photo of a {}"
    n_images: int = 180                  # real test images of the base classes (balanced)
    batch_size: int = 8                  # images per batch


@dataclass
class DriftConfig:
    seeds: int = 16                      # paired generations per base-class prompt
    noise_floor: bool = True


@dataclass
class GanConfig:
    z_dim: int = arch(64)
    w_dim: int = arch(64)
    channels: tuple[int, ...] = arch((32,))    # G widths from 4x4 up (one entry: the same everywhere)
    mapping_layers: int = arch(2)              # 2 as StyleGAN2-ADA's CIFAR config
    mapping_lr_mul: float = arch(1.0)          # StyleGAN uses 0.01; at a few thousand steps w must learn too
    d_arch: str = arch("plain")                 # plain (DCGAN convs) | resnet (StyleGAN2); see discriminator.py
    d_channels: tuple[int, ...] = arch((128, 64, 64))  # D widths from 4x4 up (plain D: the last is unused)
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3                     # Adam, betas (0, 0.99) as StyleGAN; same for G and D
    r1_gamma: float = 0.1                # StyleGAN2-ADA's heuristic is 2e-4 R^2 / batch; 1 and more blur
    r1_every: int = 4                    # lazy R1 (StyleGAN2): every N D steps, scaled by N
    ema_decay: float = 0.99
    augment: str = "translation"         # DiffAugment policy; colour slowed pretraining on 10k images
    checkpoint_every: int = 500
    eval_samples: int = 2000             # generated images for FD-eval and the self-init check


@dataclass
class TransferConfig:
    variant: str = "hypermod+selfinit+ssl"  # scratch|finetune|hypermod|hypermod+selfinit|hypermod+selfinit+ssl
    head: str = arch("lowrank")          # dense | lowrank (hyper-modulation heads)
    rank: int = arch(8)
    embed_dim: int = arch(32)            # class embedding of the hypernetwork (32 keeps lowrank < 25% of G)
    d_cond: str = arch("multihead")      # multihead | projection
    selfinit_steps: int = 200
    selfinit_batch: int = 16
    selfinit_lr: float = 1e-2            # cosine-decayed to 0 over selfinit_steps
    steps: int = 800
    batch_size: int = 32
    lr: float = 1e-2                     # generator's trainable parameters
    d_lr: float = 2e-3                   # as in pretraining; 1e-2: D's loss spikes, 21% recognised
    d_class_lr_mul: float = 10.0         # D's per-class logits learn this much faster (1 = as the rest):
                                         # they start as copies and must break that symmetry in a short run
    r1_gamma: float = 0.1
    ema_decay: float = 0.99
    augment: str = "color,translation"   # DiffAugment's few-shot policy without cutout, whose R/2 square
                                         # hides half of a 16x16 shape (76.7% vs 64.2% recognised, README)
    ssl: str = "barlow"                  # barlow | ntxent
    ssl_weight: float = 0.01
    checkpoint_every: int = 100
    eval_samples: int = 200              # generated images per class for FD-eval, KID and accuracy


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

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Rebuild a config saved with to_dict (e.g. from a checkpoint). Keys this version does not know
        (fields since removed) are skipped with a warning: no current model depends on them."""
        cfg = cls()
        for section, values in d.items():
            for key, value in values.items():
                try:
                    cfg = _set(cfg, f"{section}.{key}", value)
                except ValueError as err:
                    if "unknown config" not in str(err):
                        raise
                    warnings.warn(f"ignoring stored config key {section}.{key}: {err}")
        return cfg


# ------------------------------------------------------------------------------------------ presets

def quick() -> Config:
    """Shapes at 16x16 on a 2-core CPU: every stage in minutes."""
    return Config()


def cifar10() -> Config:
    """CIFAR-10 at 32x32 on one GPU."""
    cfg = Config()
    cfg.run.preset = "cifar10"
    cfg.data = DataConfig(dataset="cifar10", resolution=32, concept_class="cat",
                          source_classes=("bird", "cat", "deer", "dog", "frog", "horse"),
                          target_classes=("airplane", "automobile", "ship", "truck"), k_per_target=100)
    cfg.clip = ClipConfig(width=256, layers=4, heads=8, embed_dim=256, image_channels=(64, 128, 256),
                          steps=3000, batch_size=512, lr=1e-3, warmup=200)
    cfg.evalnet = EvalNetConfig(channels=(64, 128, 256, 512), blocks_per_stage=1, epochs=16, batch_size=512,
                                lr=0.2, warmup_epochs=2, label_smoothing=0.2, max_shift=2)  # ResNet-9-like
    cfg.diffusion = DiffusionConfig(base_channels=128, channel_mults=(1, 2, 2), num_res_blocks=2,
                                    attention_resolutions=(16, 8), heads=8, dropout=0.1, steps=40000,
                                    batch_size=128, lr=2e-4, warmup=1000, ema_decay=0.9995,
                                    sample_every=5000, checkpoint_every=5000, sample_steps=50,
                                    guidance=3.0)
    cfg.customize = dataclasses.replace(cfg.customize, steps_full=400, lr_full=1e-4, steps_lora=400,
                                        lr_lora=1e-3, steps_custom=400, lr_custom=1e-3, steps_ti=1000,
                                        lr_ti=5e-3)
    cfg.classifier = ClassifierConfig(n_timesteps=100, stages=(20, 100), keep=(3, 1),
                                      prompt="a blurry photo of a {}", n_images=900, batch_size=16)
    # GAN part sized for ~15-20 min of one H100 (estimated, not measured): ~20 ms per pretraining step,
    # ~35 ms per transfer step (per-sample kernels), six transfer runs (minigan.transfer.ABLATION)
    cfg.gan = GanConfig(z_dim=128, w_dim=128, channels=(128,), d_channels=(128,), mapping_lr_mul=0.01,
                        steps=20000, batch_size=64, r1_gamma=0.01, ema_decay=0.999,
                        augment="color,translation,cutout", checkpoint_every=2000, eval_samples=5000)
    cfg.transfer = dataclasses.replace(cfg.transfer, embed_dim=64, selfinit_steps=1000, selfinit_batch=32,
                                       steps=2000, batch_size=64, lr=2e-3, d_lr=2e-3, r1_gamma=0.01,
                                       ema_decay=0.999, augment="color,translation,cutout",
                                       checkpoint_every=500, eval_samples=1000)
    return cfg


PRESETS = {"quick": quick, "cifar10": cifar10}


def make_config(preset: str = "quick", overrides: typing.Sequence[str] = ()) -> Config:
    """The named preset with command-line style overrides applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    cfg = PRESETS[preset]()
    for key, value in parse_overrides(overrides):
        cfg = _set(cfg, key, value)
    return cfg


# ------------------------------------------------------------------------------------ overrides

def parse_overrides(args: typing.Sequence[str]) -> list[tuple[str, str]]:
    """['--a.b=1', '--c.d', '2'] -> [('a.b', '1'), ('c.d', '2')]."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            raise ValueError(f"cannot parse {arg!r}: config overrides look like --section.field=value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(args):
            key, value = arg[2:], args[i + 1]
            i += 1
        else:
            raise ValueError(f"{arg!r} has no value: write {arg}=VALUE")
        pairs.append((key, value))
        i += 1
    return pairs


def _suggest(name: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid choices: {', '.join(choices)}"


def _set(cfg: Config, key: str, value) -> Config:
    """Return a copy of cfg with section.field set to value (a string is parsed by the field's type)."""
    section_name, _, field_name = key.partition(".")
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    if section_name not in sections:
        raise ValueError(f"unknown config section {section_name!r}{_suggest(section_name, sections)}")
    section = getattr(cfg, section_name)
    types = typing.get_type_hints(type(section))
    if field_name not in types:
        raise ValueError(f"unknown config key {key!r}{_suggest(field_name, types)}")
    typed = _coerce(value, types[field_name], key)
    return dataclasses.replace(cfg, **{section_name: dataclasses.replace(section, **{field_name: typed})})


def _coerce(value, typ, key: str):
    """Parse a string (or check a stored value) as the field type int, float, str, bool or tuple[...]."""
    if typing.get_origin(typ) is tuple:
        item_type = typing.get_args(typ)[0]
        items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) \
            else [value]
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, item_type, key)
                     for v in items if not (isinstance(v, str) and v.strip() == ""))
    if typ is bool:
        if isinstance(value, bool):
            return value
        truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if str(value).lower() not in truth:
            raise ValueError(f"{key} expects a boolean (true/false), got {value!r}")
        return truth[str(value).lower()]
    if typ is str:
        return str(value)
    try:
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return typ(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} expects {typ.__name__}, got {value!r}") from None


def arch_fields(section) -> dict:
    """The architecture fields of one config section, as a dict."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.metadata.get("arch")}
