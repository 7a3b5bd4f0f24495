"""The `cifar10` preset, the one a GPU owner runs, executed end to end on the CPU at its full model
widths with tiny counts (a few steps, a few images): every stage of both papers, then the report. A
bug that shows only at full width (a shape, a dropout left on) fails here instead of after an hour
of GPU time. Slow: about half an hour on 2 cores (the README gives the measured time)."""
import json

import pytest

import train
from core.cli import make_config

TINY_COUNTS = [  # counts only: every width, depth and resolution stays the preset's
    "--data.train_subset=60", "--data.test_subset=40", "--data.k_per_target=4",
    "--clip.steps=2", "--clip.batch_size=8", "--clip.warmup=1",
    "--evalnet.epochs=1", "--evalnet.batch_size=8", "--evalnet.warmup_epochs=0",
    "--diffusion.steps=2", "--diffusion.batch_size=4", "--diffusion.warmup=1",
    "--diffusion.sample_every=0", "--diffusion.sample_steps=2", "--diffusion.quality_samples=2",
    "--customize.steps=2", "--customize.fidelity_samples=4", "--customize.images_per_anchor=1",
    "--customize.empty_anchor_images=2",
    "--classifier.n_images=18", "--classifier.n_timesteps=4", "--classifier.stages=2,4",
    "--classifier.keep=2,1", "--drift.pairs=2",
    "--gan.steps=2", "--gan.batch_size=4", "--gan.eval_samples=8", "--gan.checkpoint_every=0",
    "--transfer.steps=2", "--transfer.batch_size=4", "--transfer.selfinit_steps=2",
    "--transfer.selfinit_batch=2", "--transfer.eval_samples=4", "--transfer.checkpoint_every=0",
    "--run.threads=2",
]


@pytest.mark.slow
def test_every_stage_of_the_cifar10_preset_runs_at_full_width(tmp_path, cifar10_root):
    overrides = [f"--data.root={cifar10_root}", f"--run.out_dir={tmp_path}", *TINY_COUNTS]
    cfg = make_config("cifar10", overrides)
    full = make_config("cifar10")
    assert ((cfg.diffusion.base_channels, cfg.diffusion.dropout, cfg.gan.channels,
             cfg.evalnet.channels)
            == (full.diffusion.base_channels, full.diffusion.dropout, full.gan.channels,
                full.evalnet.channels))
    train.main(["--preset", "cifar10", "--jobs", "1", *overrides])
    run = tmp_path / "cifar10"
    assert (run / "report.html").exists()
    drifts = sorted(p.parent.name for p in (run / "drift").glob("*/metrics.json"))
    assert drifts == ["full-functional-s0", "full-none-s0", "lora-functional-s0", "lora-none-s0"]
    functional = json.loads((run / "customize" / "lora-functional-s0" / "metrics.json").read_text())
    assert functional["regularizer_first"] == 0.0          # dropout 0.1 is off while customizing
    transfers = sorted(p.parent.name for p in (run / "gan-transfer").glob("*/metrics.json"))
    assert transfers == [f"b0-{variant}-k4-s0" for variant in (   # the 6 ablation rows, one seed
        "finetune", "hypermod+selfinit+ssl-dense", "hypermod+selfinit+ssl-lowrank",
        "hypermod+selfinit-lowrank", "hypermod-lowrank", "scratch")]
