"""Config presets, command-line overrides and every error path."""
import pytest

from core.config import Config, arch_fields, make_config, parse_overrides


def test_presets_differ_and_quick_is_default():
    assert make_config().data.dataset == "shapes"
    cifar = make_config("cifar10")
    assert cifar.data.dataset == "cifar10" and cifar.data.resolution == 32 and cifar.run.preset == "cifar10"


def test_override_types_are_parsed():
    cfg = make_config("quick", ["--diffusion.lr=1e-4", "--diffusion.steps", "7", "--run.compile=true",
                                "--data.source_classes=circle, square", "--diffusion.channel_mults=1,2"])
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
    with pytest.raises(ValueError, match=message):
        make_config("quick", args)


def test_unknown_preset_names_valid_ones():
    with pytest.raises(ValueError, match="quick, cifar10"):
        make_config("imagenet")


def test_dict_round_trip_skips_removed_keys_but_checks_types():
    cfg = make_config("cifar10", ["--diffusion.steps=11"])
    assert Config.from_dict(cfg.to_dict()) == cfg
    bad = cfg.to_dict()
    bad["diffusion"]["nonsense"] = 1
    with pytest.warns(UserWarning, match="ignoring stored config key diffusion.nonsense"):
        assert Config.from_dict(bad) == cfg
    bad["diffusion"]["steps"] = "many"
    with pytest.raises(ValueError, match="expects int"):
        Config.from_dict(bad)


def test_parse_overrides_pairs():
    assert parse_overrides(["--a.b=1", "--c.d", "x=y"]) == [("a.b", "1"), ("c.d", "x=y")]


def test_arch_fields_are_the_model_shape_only():
    fields = arch_fields(make_config().diffusion)
    assert "base_channels" in fields and "lr" not in fields and "steps" not in fields
