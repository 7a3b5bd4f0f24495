"""train.py's command line: the pipeline's options, config overrides, and errors printed
as one line.

    python train.py [STAGE] [--preset P] [--bases N] [--seeds N] [--methods a,b] [--regs a,b]
                    [--k 10,100] [--papers 1,2] [--jobs N] [--plan] [--force] [--debug]
                    [--section.field=value ...]

Every option is checked before any work: an unknown one is refused with the closest known one
suggested (`--seed` -> `--seeds`), a bad value names the option. `--section.field=value` overrides
are taken apart from the options first, so a value may hold spaces (`--run.out_dir="my runs"`).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import sys
import traceback

from core.config import CustomizeConfig
from core.errors import ConfigError, UserError
from core.presets import DEFAULT_SEEDS, PRESETS

SHORTCUTS = {"--method": "customize.method", "--reg": "customize.reg"}
DEFAULT_METHODS, DEFAULT_REGS = ("full", "lora"), ("none", "functional")
ALL_METHODS = ("full", "full+prior", "lora", "custom", "ti")
COMMON_OVERRIDES = (
    "common config overrides (any field of core/config.py, --section.field=value):\n"
    "  --run.out_dir=DIR         where runs go (default: runs; each preset in DIR/<preset>/)\n"
    "  --run.threads=N           torch CPU threads per process "
        "(default: 1 per pipeline worker, torch's own for a stage)\n"
    "  --run.device=cpu|cuda     (default: auto)\n"
    "  --customize.images=DIR    a folder of 3-20 images of your own concept, learned as <new0>\n"
    "  --diffusion.seed=N        which base model a stage trains or uses "
        "(the pipeline sets it per base)\n"
    "  --gan.seed=N              which pretrained GAN a stage trains or uses\n"
)


def choices_of(field: str) -> tuple[str, ...]:
    """The valid values of a CustomizeConfig field, from its declaration."""
    return next(f for f in dataclasses.fields(CustomizeConfig)
                if f.name == field).metadata["choices"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a ConfigError:
    one line, exit status 1, like every other error."""

    def error(self, message):
        raise ConfigError(message)


def names(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    """'full,lora' -> ('full', 'lora'), each one checked."""
    out = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in out if n not in allowed]
    if bad or not out:
        raise ConfigError(f"{option} {text!r}: valid names are {', '.join(allowed)}")
    return out


def positive_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ConfigError(f"{option} {text!r}: expected positive whole numbers, "
                          "comma-separated (e.g. 10,100)")
    return values


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(options, overrides): `--section.field=value` and `--section.field value` go to overrides
    (with --method/--reg expanded), everything else stays for argparse."""
    options, overrides, i = [], [], 0
    while i < len(argv):
        name, has_value, value = argv[i].partition("=")
        if name in SHORTCUTS or (name.startswith("--") and "." in name):
            if not has_value:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{name} has no value: write {name}=VALUE")
                i, value = i + 1, argv[i + 1]
            overrides.append(f"--{SHORTCUTS.get(name, name[2:])}={value}")
        else:
            options.append(argv[i])
        i += 1
    return options, overrides


def build_parser(stages, doc: str) -> OneLineParser:
    parser = OneLineParser(description=doc, epilog=COMMON_OVERRIDES, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default=None, metavar="STAGE",
                        help=f"run one stage: {', '.join(stages)} (default: the whole pipeline)")
    parser.add_argument("--preset", default="quick", choices=list(PRESETS), help="default: quick")
    parser.add_argument("--force", action="store_true", help="rerun finished stages from scratch")
    parser.add_argument("--bases", default="1",
                        help="base models (diffusion models and pretrained GANs), each "
                             "with its own seed 0..N-1 (default: 1)")
    parser.add_argument("--seeds", default=None,
                        help="customization and transfer seeds per base model (default: "
                             + ", ".join(f"{p} {n}" for p, n in DEFAULT_SEEDS.items()) + ")")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"customization methods (default: {','.join(DEFAULT_METHODS)}; all: "
                             f"{','.join(ALL_METHODS)})")
    parser.add_argument("--all-methods", action="store_true", help="every customization method")
    parser.add_argument("--regs", default=",".join(DEFAULT_REGS),
                        help=f"regularizers (default: {','.join(DEFAULT_REGS)}; also l2)")
    parser.add_argument("--k", default=None,
                        help="GAN transfer: real images per target class, e.g. 10,100 "
                             "(default: the preset's data.k_per_target)")
    parser.add_argument("--papers", default="1,2", help="which papers' units to run (default: 1,2)")
    parser.add_argument("--jobs", default="0",
                        help="worker processes (default 0: one per core, at most one "
                             "per 3 GB of memory; 1 on a GPU)")
    parser.add_argument("--plan", action="store_true",
                        help="print every unit as a standalone command (level, id, "
                             "the ids it waits for, command) and run nothing")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    # a pipeline worker
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def parse_command(argv: list[str], stages, doc: str = "") -> tuple[argparse.Namespace, list[str]]:
    """(options, config overrides) of train.py's command line, every option checked and typed."""
    options, overrides = split_overrides(list(argv))
    parser = build_parser(stages, doc)
    known = [o for action in parser._actions for o in action.option_strings]
    for o in options:
        name = o.partition("=")[0]
        if name.startswith("-") and not name[1:2].isdigit() and name not in known:   # -2: a value
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"unknown option {name}"
                              + (f" (did you mean {close[0]}?)" if close else "")
                              + "; see python train.py --help")
    opts = parser.parse_args(options)
    if opts.stage is not None and opts.stage not in stages:
        close = difflib.get_close_matches(opts.stage, list(stages), n=1)
        raise ConfigError(f"unknown stage {opts.stage!r}"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; stages: {', '.join(stages)}")
    opts.methods = (ALL_METHODS if opts.all_methods
                    else names(opts.methods, choices_of("method"), "--methods"))
    opts.regs = names(opts.regs, choices_of("reg"), "--regs")
    opts.bases = positive_ints(opts.bases, "--bases")[0]
    opts.seeds = (positive_ints(opts.seeds, "--seeds")[0] if opts.seeds
                  else DEFAULT_SEEDS[opts.preset])
    opts.k = positive_ints(opts.k, "--k") if opts.k else None
    opts.papers = names(opts.papers, ("1", "2"), "--papers")
    try:
        opts.jobs = int(opts.jobs)
    except ValueError:
        opts.jobs = -1
    if opts.jobs < 0:
        raise ConfigError(f"--jobs {opts.jobs}: expected a whole number >= 0 (0: one per core)")
    return opts, overrides


@contextlib.contextmanager
def user_errors(debug: bool, rerun_hint: str = "rerun the same command to continue"):
    """Turn what a user can fix (UserError, OSError) into one line, `error: ...`, exit status 1
    (--debug adds the traceback), and Ctrl-C into one line saying how to go on;
    a bug keeps its traceback."""
    try:
        yield
    except (UserError, OSError) as err:
        if debug:
            traceback.print_exc()
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        sys.exit(f"interrupted: {rerun_hint}")
