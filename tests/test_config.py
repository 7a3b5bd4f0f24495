"""Config presets, command-line overrides and every error path: unknown keys, types, ranges, fields
that must agree (resolution vs UNet levels and attention), and fields the program sets itself."""
import dataclasses

import pytest

from core.cli import make_config, parse_overrides
from core.config import Config, arch_fields, result_fields
from core.errors import ConfigError
from core.presets import METHOD_SCHEDULES, PRESETS, customize_schedule


def test_presets_differ_and_quick_is_default():
    assert make_config().data.dataset == "shapes"
    cifar = make_config("cifar10")
    assert (cifar.data.dataset == "cifar10" and cifar.data.resolution == 32
            and cifar.run.preset == "cifar10")


def test_every_preset_is_valid_and_has_a_customization_schedule_and_a_gan_curve():
    from minigan.transfer import CURVE_K
    for name in PRESETS:
        cfg = make_config(name)
        assert (set(METHOD_SCHEDULES[name])
                == set(dataclasses.fields(cfg.customize)[0].metadata["choices"]))
        assert CURVE_K[name]   # `--chain gan-curve --preset <name>` has k values without --k


def test_override_types_are_parsed():
    cfg = make_config("quick", ["--diffusion.lr=1e-4", "--diffusion.steps", "7",
                                "--run.compile=true", "--data.source_classes=circle, square",
                                "--diffusion.channel_mults=1,2",
                                "--diffusion.attention_resolutions=8"])
    assert cfg.diffusion.lr == 1e-4 and isinstance(cfg.diffusion.lr, float)
    assert cfg.diffusion.steps == 7 and cfg.run.compile is True
    assert cfg.data.source_classes == ("circle", "square")
    assert cfg.diffusion.channel_mults == (1, 2)


def test_overrides_do_not_leak_into_later_configs():
    make_config("quick", ["--diffusion.steps=3"])
    assert make_config("quick").diffusion.steps != 3


@pytest.mark.parametrize("args, message", [
    (["--diffusion.lrr=1"], "did you mean 'lr'"),
    (["--difusion.lr=1"], "did you mean 'diffusion'"),
    (["--diffusion.steps=1.5"], "expects int"),
    (["--diffusion.lr=fast"], "expects float"),
    (["--run.compile=maybe"], "expects a boolean"),
    (["--diffusion.lr"], "has no value"),
    (["lr=3"], "--section.field=value"),
])
def test_bad_overrides_name_the_problem(args, message):
    with pytest.raises(ConfigError, match=message):
        make_config("quick", args)


@pytest.mark.parametrize("args, message", [  # issue rows 5, 9, 10, 13: refused before any work
    (["--diffusion.steps=0"], "diffusion.steps=0 is below its minimum 1"),
    (["--clip.steps=-5"], "clip.steps=-5 is below its minimum 1"),
    (["--diffusion.batch_size=0"], "diffusion.batch_size=0 is below its minimum 1"),
    (["--diffusion.sample_steps=0"], "diffusion.sample_steps=0 is below its minimum 1"),
    (["--diffusion.sample_steps=2000"], "exceeds diffusion.timesteps=1000"),
    (["--diffusion.lr=nan"], "diffusion.lr=nan is not a finite number"),
    (["--diffusion.ema_decay=1.5"], "above its maximum 1"),
    (["--diffusion.grad_clip=0"], "must be greater than 0"),
    (["--customize.steps=0"], "trains nothing"),
    (["--customize.method=dreambooth"],
     "customize.method='dreambooth' is not one of: full, full\\+prior"),
    (["--transfer.generator=hyper"], "transfer.generator='hyper' is not one of"),
    (["--transfer.ssl=simclr"], "transfer.ssl='simclr' is not one of: none, barlow, ntxent"),
    (["--transfer.generator=finetune"], "transfer.selfinit=true needs transfer.generator=hypermod"),
    (["--gan.augment=color,flip"], "gan.augment='flip' is not one of"),
    (["--run.device=tpu"], "run.device='tpu'"),
    (["--run.preset=cifar10"], "run.preset cannot be overridden; choose it with --preset"),
    (["--run.preset=/tmp/x"], "run.preset cannot be overridden"),
    (["--data.resolution=17"], "data.resolution=17"),
    (["--data.resolution=20"], "attention at \\[8, 4\\] would never run"),
    (["--data.resolution=24", "--diffusion.attention_resolutions=6"], "must be a power of two"),
    (["--diffusion.base_channels=9"], "must divide into"),
    (["--classifier.adaptive=true", "--classifier.keep=3,2"], "must decrease to 1"),
])
def test_out_of_range_and_incompatible_values_are_refused(args, message):
    with pytest.raises(ConfigError, match=message):
        make_config("quick", args)


def test_a_zero_learning_rate_is_a_valid_customization_control():
    cfg = make_config("quick", ["--customize.lr=0", "--customize.method=lora"])
    assert customize_schedule(cfg) == (METHOD_SCHEDULES["quick"]["lora"][0], 0.0)
    assert customize_schedule(make_config("quick", ["--customize.steps=7"]))[0] == 7


def test_unknown_preset_names_valid_ones():
    with pytest.raises(ConfigError, match="quick, cifar10"):
        make_config("imagenet")


def test_dict_round_trip_skips_removed_keys_but_checks_types():
    cfg = make_config("cifar10", ["--diffusion.steps=11"])
    assert Config.from_dict(cfg.to_dict()) == cfg
    bad = cfg.to_dict()
    bad["diffusion"]["nonsense"] = 1
    with pytest.warns(UserWarning, match="ignoring stored config key diffusion.nonsense"):
        assert Config.from_dict(bad) == cfg
    bad["diffusion"]["steps"] = "many"
    with pytest.raises(ConfigError, match="expects int"):
        Config.from_dict(bad)


def test_parse_overrides_pairs():
    assert parse_overrides(["--a.b=1", "--c.d", "x=y"]) == [("a.b", "1"), ("c.d", "x=y")]


def test_arch_fields_are_the_model_shape_only():
    fields = arch_fields(make_config().diffusion)
    assert "base_channels" in fields and "lr" not in fields and "steps" not in fields


def test_result_fields_leave_out_what_does_not_change_results():
    fields = result_fields(make_config().diffusion)
    assert ("lr" in fields and "steps" in fields and "checkpoint_every" not in fields
            and "sample_every" not in fields)
