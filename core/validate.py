"""Every rule a config must follow, checked before any work: each field's declared range
(core.config param), then the fields that must agree, among them the image resolution with each
model a command builds (the UNet's levels and attention, the GAN's doubling resolutions, the
evaluator's halving stages)."""
from __future__ import annotations

import dataclasses
import math
import re

from core.captions import TEMPLATES, check_caption, vocabulary
from core.config import DATASETS, ClassifierConfig, Config, DataConfig
from core.errors import ConfigError


def _check_field(key: str, value, meta: dict) -> None:
    """One field against its declared range (every element of a tuple)."""
    for v in value if isinstance(value, tuple) else (value,):
        if meta["choices"] is not None and v not in meta["choices"]:
            raise ConfigError(f"{key}={v!r} is not one of: {', '.join(map(str, meta['choices']))}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key}={v} is not a finite number")
        if meta["low"] is not None and v < meta["low"]:
            raise ConfigError(f"{key}={v} is below its minimum {meta['low']}")
        if meta["high"] is not None and v > meta["high"]:
            raise ConfigError(f"{key}={v} is above its maximum {meta['high']}")
        if meta["above"] is not None and v <= meta["above"]:
            raise ConfigError(f"{key}={v} must be greater than {meta['above']}")


def levels(resolution: int, n_levels: int) -> list[int]:
    """Resolutions of n_levels halving levels starting at `resolution`."""
    return [resolution // 2 ** i for i in range(n_levels)]


# what validate() can check the image resolution against
MODELS = ("clip", "evalnet", "unet", "gan")


def models_for(stage: str | None) -> tuple[str, ...]:
    """The models a train.py stage builds or loads (None: the whole pipeline, every model)."""
    if stage is None:
        return MODELS
    if stage in ("clip", "eval-net"):
        return ("clip",) if stage == "clip" else ("evalnet",)
    return ("evalnet", "gan") if stage.startswith("gan") else ("clip", "evalnet", "unet")


def validate(cfg: Config, models: tuple[str, ...] = MODELS) -> Config:
    """Refuse a config that cannot work, naming the field: every field's range, then the
    fields that must agree, including the image resolution with each of `models` (the ones the
    command will build)."""
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(section.default_factory):
            _check_field(f"{section.name}.{f.name}", getattr(getattr(cfg, section.name), f.name),
                         f.metadata)
    for key, path in (("run.out_dir", cfg.run.out_dir), ("customize.images", cfg.customize.images)):
        _check_utf8(key, path)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", cfg.run.device):
        raise ConfigError(f"run.device={cfg.run.device!r}; valid: auto, cpu, cuda, cuda:N, mps")
    _check_classes(cfg.data)
    for model in models:
        CHECKS[model](cfg)
    if cfg.classifier.adaptive:
        _check_classifier(cfg.classifier, len(DATASETS[cfg.data.dataset]) - 1)
    cc = cfg.customize
    if cc.steps == 0:
        raise ConfigError("customize.steps=0 trains nothing; give steps >= 1 "
                          "(or -1 for the method's default); "
                          "the no-change control is customize.lr=0")
    _check_prompts(cfg)
    _check_drift_split(cfg)
    if cfg.transfer.selfinit and cfg.transfer.generator != "hypermod":
        raise ConfigError(f"transfer.selfinit=true needs transfer.generator=hypermod "
                          f"(got {cfg.transfer.generator}); set --transfer.selfinit=false")
    if cfg.diffusion.sample_steps > cfg.diffusion.timesteps:
        raise ConfigError(f"diffusion.sample_steps={cfg.diffusion.sample_steps} exceeds "
                          f"diffusion.timesteps={cfg.diffusion.timesteps}")
    return cfg


def _check_utf8(key: str, path) -> None:
    """A folder name the results can record: UTF-8 text (a command line's undecodable bytes arrive
    as lone surrogates, which no JSON file, log or report can hold)."""
    if not isinstance(path, str):
        return
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = path.encode("utf-8", "surrogateescape")   # the bytes as given
        except UnicodeEncodeError:
            raw = path.encode("utf-8", "backslashreplace")
        raise ConfigError(f"{key} must be UTF-8 text, got {raw!r}; rename the folder") from None


def _check_prompts(cfg: Config) -> None:
    """customize.prompt is a template with one {} for the placeholder, and it and the prior prompt
    use only words the tokenizer knows, within the text encoder's context."""
    cc, words = cfg.customize, vocabulary(cfg.data.dataset, DATASETS[cfg.data.dataset])
    if (cc.prompt.count("{}") != 1
            or cc.prompt.replace("{}", "").count("{") + cc.prompt.count("}") != 1):
        raise ConfigError(f"customize.prompt={cc.prompt!r} needs exactly one {{}} "
                          f"for the placeholder and no other braces, e.g. 'a photo of a {{}}'")
    for key, text in (("customize.prompt", cc.prompt.format(cc.placeholder)),
                      ("customize.prior_prompt", cc.prior_prompt)):
        try:
            check_caption(text, words, cfg.clip.context_length)
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None


def _check_classes(d: DataConfig) -> None:
    """Every class named exists in the dataset; GAN source and target classes are disjoint."""
    names = DATASETS[d.dataset]
    for key, value in (("concept_class", (d.concept_class,)), ("source_classes", d.source_classes),
                       ("target_classes", d.target_classes)):
        unknown = [c for c in value if c not in names]
        if unknown or not value:
            raise ConfigError(f"data.{key} names unknown classes {unknown}; "
                              f"{d.dataset} has {', '.join(names)}")
    overlap = set(d.source_classes) & set(d.target_classes)
    if overlap:
        raise ConfigError(f"data.source_classes and data.target_classes overlap: {sorted(overlap)}")


def _check_drift_split(cfg: Config) -> None:
    """The held-out classes are base classes, some base classes stay anchored;
    the anchored template drift is measured with is among the first drift.anchor_templates,
    the held-out one after them."""
    d, base = cfg.drift, [c for c in DATASETS[cfg.data.dataset] if c != cfg.data.concept_class]
    unknown = [c for c in d.heldout_classes if c not in base]
    if unknown or len(set(d.heldout_classes)) >= len(base):
        raise ConfigError(f"drift.heldout_classes={d.heldout_classes}: must be base classes "
                          f"({', '.join(base)}) and leave at least one anchored")
    n = len(TEMPLATES[cfg.data.dataset])
    if not d.template < d.anchor_templates <= d.heldout_template < n:
        raise ConfigError(f"need drift.template < drift.anchor_templates <= drift.heldout_template "
                          f"< {n} (the {cfg.data.dataset} templates), got {d.template}, "
                          f"{d.anchor_templates}, {d.heldout_template}")


def _check_unet(cfg: Config) -> None:
    """The UNet halves the image once per level but the last; attention runs only at those
    resolutions; every width divides into attention heads and GroupNorm groups."""
    r, dc = cfg.data.resolution, cfg.diffusion
    unet_levels = levels(r, len(dc.channel_mults))
    if r % 2 ** (len(dc.channel_mults) - 1):
        raise ConfigError(f"data.resolution={r} cannot be halved {len(dc.channel_mults) - 1} times "
                          f"for the UNet's {len(dc.channel_mults)} levels "
                          f"(diffusion.channel_mults={dc.channel_mults})")
    unused = [a for a in dc.attention_resolutions if a not in unet_levels]
    if unused:
        raise ConfigError(f"diffusion.attention_resolutions={dc.attention_resolutions}: "
                          f"at data.resolution={r} the UNet's levels are at {unet_levels} pixels, "
                          f"so attention at {unused} would never run")
    for width in sorted({dc.base_channels * m for m in dc.channel_mults}):
        groups = min(8, width // 4) or 1
        if width % dc.heads or width % groups:
            raise ConfigError(f"UNet width {width} (diffusion.base_channels x channel_mults) "
                              f"must divide into {dc.heads} attention heads "
                              f"and {groups} GroupNorm groups")


def _check_clip(cfg: Config) -> None:
    if cfg.clip.width % cfg.clip.heads:
        raise ConfigError(f"clip.width={cfg.clip.width} "
                          f"must divide into clip.heads={cfg.clip.heads}")


def _check_gan(cfg: Config) -> None:
    """The GAN grows from 4x4 by doubling; its widths are one number or one per resolution."""
    r = cfg.data.resolution
    if r & (r - 1):
        raise ConfigError(f"data.resolution={r}: the GAN grows from 4x4 by doubling, "
                          "so it must be a power of two")
    n = int(math.log2(r)) - 1                            # resolutions 4, 8, ..., r
    for key, widths in (("gan.channels", cfg.gan.channels),
                        ("gan.d_channels", cfg.gan.d_channels)):
        if len(widths) not in (1, n):
            raise ConfigError(f"{key} needs 1 width or {n} "
                              f"(one per resolution 4..{r} at data.resolution={r}), got {widths}")


def _check_evalnet(cfg: Config) -> None:
    r, channels = cfg.data.resolution, cfg.evalnet.channels
    if len(channels) < 2 or r % 2 ** (len(channels) - 1):
        raise ConfigError(f"evalnet.channels={channels}: a stem plus at least one stage, "
                          f"and data.resolution={r} halved once per stage")


CHECKS = {"clip": _check_clip, "evalnet": _check_evalnet, "unet": _check_unet, "gan": _check_gan}


def _check_classifier(c: ClassifierConfig, n_classes: int) -> None:
    """Each adaptive stage scores an even sub-grid of the full timestep grid;
    kept classes decrease to 1."""
    n, stages, keep = c.n_timesteps, c.stages, c.keep
    if len(stages) != len(keep) or not stages:
        raise ConfigError("classifier.stages and classifier.keep need the same (non-zero) length")
    if any(n % s for s in stages):
        raise ConfigError(f"classifier.stages={stages}: "
                          f"every stage size must divide n_timesteps={n}")
    if list(keep) != sorted(keep, reverse=True) or keep[-1] != 1 or keep[0] > n_classes:
        raise ConfigError(f"classifier.keep={keep} must decrease to 1 "
                          f"and never exceed the {n_classes} classes")
