"""The command lines a learner meets first: every command takes the run.* options,
`evaluate.py sample` draws from a GAN checkpoint too, and the helps say what each option means
and its default."""
import pytest
import torch

import evaluate
import train
from core import checkpoint
from core.images import read_images
from core.cli import make_config
from minigan.pretrain import build_generator
from minigan.transfer import HyperModulatedGenerator
from pipeline.command import build_parser
from tests.conftest import save_untrained_diffusion

GAN = ["--gan.channels=8", "--gan.d_channels=8", "--transfer.rank=2", "--transfer.embed_dim=8"]


@pytest.fixture(scope="module")
def diffusion_checkpoint(tmp_path_factory):
    return save_untrained_diffusion(tmp_path_factory.mktemp("d"))[1]


def gan_checkpoint(out, kind: str):
    """An untrained tiny GAN saved as a pretraining or (hyper-modulated) transfer checkpoint."""
    cfg = make_config("quick", [f"--run.out_dir={out}", *GAN])
    G = build_generator(cfg)
    if kind == "gan-transfer":
        G = HyperModulatedGenerator(G, len(cfg.data.target_classes), head="lowrank", rank=2,
                                    embed_dim=8)
    path = out / f"{kind}.pt"
    checkpoint.save(path, {"kind": kind, "config": cfg.to_dict(), "step": 0,
                           "ema": {"model": G.state_dict()}})
    return path


def test_sample_takes_the_run_options(diffusion_checkpoint, tmp_path):
    before = torch.get_num_threads()
    out = evaluate.main(["sample", "--ckpt", str(diffusion_checkpoint),
                         "--prompt", "a photo of a star", "--n", "2", "--steps", "2",
                         "--out", str(tmp_path / "s"), "--run.threads=1", "--run.unet_batch=4"])
    torch.set_num_threads(before)
    assert (tmp_path / "s.png").exists() and out["npz"].endswith("s.npz")
    with pytest.raises(SystemExit, match="takes only run.. overrides, got --diffusion.lr"):
        evaluate.main(["sample", "--ckpt", str(diffusion_checkpoint),
                       "--prompt", "a photo of a star", "--diffusion.lr=1"])


def test_sample_draws_from_a_gan(tmp_path):
    """A transfer checkpoint: one row per target class, or one class;
    a pretrained one: unconditional."""
    transfer = gan_checkpoint(tmp_path, "gan-transfer")
    evaluate.main(["sample", "--ckpt", str(transfer), "--n", "3", "--out", str(tmp_path / "all")])
    x = read_images(str(tmp_path / "all.npz"))
    assert x.shape == (5 * 3, 16, 16, 3)                       # 5 target classes x 3
    evaluate.main(["sample", "--ckpt", str(transfer), "--class", "star", "--n", "4",
                   "--out", str(tmp_path / "one")])
    assert read_images(str(tmp_path / "one.npz")).shape[0] == 4
    with pytest.raises(SystemExit, match="this GAN draws star, cross, heart, crescent, arrow"):
        evaluate.main(["sample", "--ckpt", str(transfer), "--class", "circle"])
    pretrained = gan_checkpoint(tmp_path, "gan-pretrain")
    evaluate.main(["sample", "--ckpt", str(pretrained), "--n", "5", "--out", str(tmp_path / "u")])
    assert read_images(str(tmp_path / "u.npz")).shape[0] == 5
    with pytest.raises(SystemExit, match="unconditional"):
        evaluate.main(["sample", "--ckpt", str(pretrained), "--class", "star"])


def test_helps_give_meanings_and_defaults(capsys):
    for command in ("sample", "fid", "drift"):
        with pytest.raises(SystemExit):
            evaluate.main([command, "--help"])
        text = capsys.readouterr().out
        assert "default" in text and "--debug" in text
    sample = evaluate.build_parser()._subparsers._group_actions[0].choices["sample"].format_help()
    for option in ("--n", "--guidance", "--eta"):
        line = sample[sample.index(option + " "):].split("\n--")[0]
        assert "default" in line, option
    top = build_parser(train.STAGES, train.__doc__).format_help()
    for hint in ("--run.out_dir", "--run.threads", "--customize.images", "--bases", "--plan"):
        assert hint in top
