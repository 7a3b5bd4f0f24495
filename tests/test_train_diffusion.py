"""The diffusion training stage, and through it the run-folder protocol every stage follows
(pipeline.runs): checkpoint and grid written, exact resume after a crash, a finished run skipped
(not retrained, metrics kept), --force retraining from scratch, refusals when the config or an input
changed, a diverged run stopping with a finite checkpoint and a restart hint."""
import json

import pytest
import torch

import minidiff.train_diffusion as td
from core import checkpoint
from core.cli import make_config
from core.errors import CheckpointMismatch, Diverged, UserError
from tests.conftest import save_untrained_clip, save_untrained_evaluator, tiny_diffusion_overrides


def tiny_cfg(tmp_path, *extra):
    cfg = make_config("quick", tiny_diffusion_overrides(tmp_path)
                      + ["--diffusion.steps=6", "--evalnet.channels=8,16", *extra])
    save_untrained_clip(cfg)
    save_untrained_evaluator(cfg)
    return cfg


def stored_metrics(tmp_path):
    return json.loads((tmp_path / "quick" / "diffusion" / "b0" / "metrics.json").read_text())


def test_stage_writes_checkpoint_grid_and_metrics(tmp_path):
    cfg = tiny_cfg(tmp_path)
    metrics = td.train_diffusion(cfg)
    out = tmp_path / "quick" / "diffusion" / "b0"
    assert ((out / "last.pt").exists() and (out / "samples.png").exists()
            and (out / "metrics.json").exists())
    assert metrics["steps"] == 6 and metrics["train_images_per_second"] > 0
    judged = td.judge_diffusion(cfg)               # the evaluator's verdict is a stage of its own
    assert judged["samples"]["n_samples"] == 9 * cfg.diffusion.quality_samples
    model, diffusion, stored_cfg, payload = td.load_diffusion(out / "last.pt")
    assert payload["step"] == 6 and stored_cfg == cfg and diffusion.timesteps == 100


def test_resume_after_a_crash_gives_the_same_next_loss(tmp_path, monkeypatch):
    straight = td.train_diffusion(tiny_cfg(tmp_path / "a", "--diffusion.checkpoint_every=3"))
    cfg = tiny_cfg(tmp_path / "b", "--diffusion.checkpoint_every=3")
    real_step = td.training_step

    def crash_at_4(*args):
        if args[-1] == 4:  # the step
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(td, "training_step", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        td.train_diffusion(cfg)
    monkeypatch.setattr(td, "training_step", real_step)
    assert checkpoint.load(tmp_path / "b" / "quick" / "diffusion" / "b0" / "last.pt")["step"] == 3
    # not finished: no metrics
    assert not (tmp_path / "b" / "quick" / "diffusion" / "b0" / "metrics.json").exists()
    resumed = td.train_diffusion(cfg)
    assert resumed["resumed_from"] == 3
    assert resumed["final_loss"] == straight["final_loss"]
    a = checkpoint.load(tmp_path / "a" / "quick" / "diffusion" / "b0" / "last.pt")["ema"]["model"]
    b = checkpoint.load(tmp_path / "b" / "quick" / "diffusion" / "b0" / "last.pt")["ema"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_is_skipped_and_force_retrains_it(tmp_path, monkeypatch, capsys):
    """Issue row 1: rerunning a finished stage trains nothing and keeps its metrics; --force really
    retrains."""
    cfg = tiny_cfg(tmp_path)
    first = td.train_diffusion(cfg)
    calls = []
    real_step = td.training_step
    monkeypatch.setattr(td, "training_step", lambda *a: calls.append(a[-1]) or real_step(*a))
    again = td.train_diffusion(cfg)
    assert (calls == [] and again == stored_metrics(tmp_path)
            and again["final_loss"] == first["final_loss"])
    assert "finished before" in capsys.readouterr().out
    forced = td.train_diffusion(cfg, force=True)
    assert calls == list(range(6)) and forced["resumed_from"] == 0
    assert forced["final_loss"] == first["final_loss"]  # same seed, from scratch: the same run


def test_other_settings_are_refused_with_what_changed(tmp_path):
    """Issue row 1 (fewer steps) and row 3 (another lr): a finished or checkpointed run made with
    other settings is neither skipped nor continued."""
    td.train_diffusion(tiny_cfg(tmp_path))
    for extra, change in ((["--diffusion.steps=3"], "diffusion.steps: 6 -> 3"),
                          (["--diffusion.lr=1e-4"], "diffusion.lr: 0.003 -> 0.0001")):
        with pytest.raises(CheckpointMismatch, match=change + "(.|\n)*--force"):
            td.train_diffusion(tiny_cfg(tmp_path, *extra))
    # an unfinished run, checkpoint only
    (tmp_path / "quick" / "diffusion" / "b0" / "metrics.json").unlink()
    with pytest.raises(CheckpointMismatch,
                       match="last.pt was made with other settings(.|\n)*diffusion.steps"):
        td.train_diffusion(tiny_cfg(tmp_path, "--diffusion.steps=12"))


def test_a_retrained_clip_is_named_as_the_change(tmp_path):
    """Issue row 2: the text encoder changed under a checkpoint -> refusal naming the CLIP."""
    cfg = tiny_cfg(tmp_path, "--diffusion.checkpoint_every=2")
    td.train_diffusion(cfg)
    (tmp_path / "quick" / "diffusion" / "b0" / "metrics.json").unlink()
    from pipeline.runs import stage_dir
    clip = checkpoint.load(stage_dir(cfg, "clip") / "clip.pt")
    clip["model"]["logit_scale"] = clip["model"]["logit_scale"] + 1
    checkpoint.save(stage_dir(cfg, "clip") / "clip.pt", clip)
    with pytest.raises(CheckpointMismatch, match="inputs.clip"):
        td.train_diffusion(cfg)


def test_divergence_stops_with_a_finite_checkpoint_and_a_restart_hint(tmp_path):
    """Issue row 3: the NaN stop names the step and says how to start over; no checkpoint on disk is
    non-finite."""
    cfg = tiny_cfg(tmp_path, "--diffusion.lr=1e30", "--diffusion.warmup=1",
                   "--diffusion.grad_clip=1e30", "--diffusion.checkpoint_every=1")
    with pytest.raises(Diverged,
                       match=r"(loss is (nan|inf) at step \d+(.|\n)*--force)|(holds NaN or inf)"):
        td.train_diffusion(cfg)
    last = tmp_path / "quick" / "diffusion" / "b0" / "last.pt"
    if last.exists():
        payload = checkpoint.load(last)
        assert checkpoint.non_finite(payload) is None
    assert not (tmp_path / "quick" / "diffusion" / "b0" / "metrics.json").exists()


def test_missing_inputs_are_clear(tmp_path):
    """Training needs CLIP, not the evaluator; judging needs the base model and the evaluator."""
    cfg = make_config("quick", tiny_diffusion_overrides(tmp_path) + ["--diffusion.steps=1"])
    with pytest.raises(UserError, match="no finished run: run `python train.py clip"):
        td.train_diffusion(cfg)
    with pytest.raises(UserError,
                       match="no finished run: run `python train.py diffusion --preset quick "
                             "--diffusion.seed=0"):
        td.judge_diffusion(cfg)
    save_untrained_clip(cfg)
    td.train_diffusion(cfg)
    with pytest.raises(UserError, match="no finished run: run `python train.py eval-net"):
        td.judge_diffusion(cfg)
