"""Command-line overrides of the config: `--section.field=value` (or `--section.field value`).

    make_config("quick", ["--diffusion.lr=1e-3", "--data.source_classes=circle,square"])

Tuples are written comma-separated. An unknown section or field, a value of the wrong type or out of
its range, or a field the program sets itself (run.preset, chosen with --preset) stops with a
ConfigError that names the valid choices, before any work starts.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing

from core.config import Config, coerce
from core.presets import PRESETS
from core.validate import MODELS, validate
from core.errors import ConfigError


def make_config(preset: str = "quick", overrides: typing.Sequence[str] = (),
                models: tuple[str, ...] = MODELS) -> Config:
    """The named preset with command-line style overrides applied, validated (the image resolution
    against `models`: the ones the command will build, every model by default)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    cfg = PRESETS[preset]()
    for key, value in parse_overrides(overrides):
        cfg = set_field(cfg, key, value)
    return validate(cfg, models)


def parse_overrides(args: typing.Sequence[str]) -> list[tuple[str, str]]:
    """['--a.b=1', '--c.d', '2'] -> [('a.b', '1'), ('c.d', '2')]."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            raise ConfigError(f"unrecognized argument {arg!r}: config overrides look like "
                              "--section.field=value")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(args):
            key, value = arg[2:], args[i + 1]
            i += 1
        else:
            raise ConfigError(f"{arg!r} has no value: write {arg}=VALUE")
        pairs.append((key, value))
        i += 1
    return pairs


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?); valid choices: a, b, c' for an unknown name."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid choices: {', '.join(choices)}"


def set_field(cfg: Config, key: str, value: str) -> Config:
    """A copy of cfg with section.field set to the string value, parsed by the field's type."""
    section_name, _, field_name = key.partition(".")
    sections = {f.name for f in dataclasses.fields(cfg)}
    if section_name not in sections:
        raise ConfigError("unknown config section "
                          f"{section_name!r}{suggest(section_name, sections)}")
    section = getattr(cfg, section_name)
    fields = {f.name: f for f in dataclasses.fields(section)}
    if field_name not in fields:
        raise ConfigError(f"unknown config key {key!r}{suggest(field_name, fields)}")
    if fields[field_name].metadata.get("fixed"):
        raise ConfigError(f"{key} cannot be overridden; choose it with --{field_name}")
    typed = coerce(value, typing.get_type_hints(type(section))[field_name], key)
    return dataclasses.replace(
        cfg, **{section_name: dataclasses.replace(section, **{field_name: typed})})
