"""minigan stages: pretraining and transfer end to end on a tiny config, exact resume, and which
parameters each transfer variant trains."""
import hashlib

import pytest
import torch

from core import checkpoint
from core.cli import make_config
from core.config import TransferConfig
from core.presets import TRANSFER_LR
from core.files import read_json
from pipeline.runs import stage_dir
from eval.evalnet import load_evaluator, train_evaluator
from eval.report import markdown_tables
from eval.results import current_runs
from minigan.discriminator import Discriminator, conditional_from_unconditional
from minigan.generator import Generator
from minigan.hypermod import HyperModulatedGenerator
from minigan.loop import GanTrainer, LoopSpec
from minigan.pretrain import judge_pretrained, load_pretrained, pretrain_gan
from minigan.selfinit import self_initialize, self_initialize_and_check, selfinit_check
from minigan.transfer import (ABLATION, build_models, few_shot_targets, transfer_gan, transfer_spec,
                              variant_name)

SWITCHES = {  # the ablation rows as command-line switches
    "scratch": ["--transfer.generator=scratch", "--transfer.selfinit=false", "--transfer.ssl=none"],
    "finetune": ["--transfer.generator=finetune", "--transfer.selfinit=false",
                 "--transfer.ssl=none"],
    "hypermod": ["--transfer.selfinit=false", "--transfer.ssl=none"],
    "hypermod+selfinit": ["--transfer.ssl=none"],
    "hypermod+selfinit+ssl": [],
}

TINY = ["--data.shapes_train_size=300", "--data.shapes_test_size=100", "--data.k_per_target=4",
        "--evalnet.channels=8,16", "--evalnet.epochs=1", "--evalnet.batch_size=50",
        "--gan.z_dim=16", "--gan.w_dim=16", "--gan.channels=8", "--gan.d_channels=8",
        "--gan.mapping_layers=2", "--gan.steps=4", "--gan.batch_size=8", "--gan.r1_every=2",
        "--gan.eval_samples=40", "--transfer.embed_dim=8", "--transfer.rank=2",
        "--transfer.selfinit_steps=3", "--transfer.selfinit_batch=4", "--transfer.steps=3",
        "--transfer.batch_size=8", "--transfer.eval_samples=10", "--run.threads=1"]


def tiny_config(out_dir, *extra):
    return make_config("quick", [f"--run.out_dir={out_dir}", *TINY, *extra])


def state_hash(tensors):
    h = hashlib.sha256()
    for name, t in sorted(tensors.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny evaluator and a tiny pretrained GAN in one run folder (built once for this module)."""
    out = tmp_path_factory.mktemp("runs")
    cfg = tiny_config(out)
    torch.manual_seed(0)
    train_evaluator(cfg)
    metrics = pretrain_gan(cfg)
    return out, metrics


def test_pretrain_writes_checkpoint_grid_and_metrics(pretrained):
    out, metrics = pretrained
    stage = out / "quick" / "gan-pretrain" / "b0"
    assert {"checkpoint.pt", "grid.png", "metrics.json"} <= {p.name for p in stage.iterdir()}
    assert read_json(stage / "metrics.json")["steps"] == 4 == metrics["steps"]
    judged = judge_pretrained(tiny_config(out))
    assert judged["fd_eval_vs_source"] >= 0 and judged["n_fake"] == 40
    payload = checkpoint.load(stage / "checkpoint.pt", kind="gan-pretrain")
    assert payload["step"] == 4 and {"G", "D", "opt_g", "opt_d", "ema", "rng"} <= set(payload)


def crash_after(steps, monkeypatch, stage, *args, **kwargs):
    """Run a stage that is killed (KeyboardInterrupt) in the middle of its step `steps` + 1."""
    real_step = GanTrainer.g_step

    def crashing(self):
        if self.step == steps:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(GanTrainer, "g_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        stage(*args, **kwargs)
    monkeypatch.setattr(GanTrainer, "g_step", real_step)


def test_pretrain_resume_matches_uninterrupted_run(tmp_path, pretrained, monkeypatch):
    resumed = tiny_config(tmp_path / "a", "--gan.steps=6", "--gan.checkpoint_every=4")
    straight = tiny_config(tmp_path / "b", "--gan.steps=6")
    for cfg in (resumed, straight):
        stage_dir(cfg, "eval-net").mkdir(parents=True)
        for name in ("evaluator.pt", "metrics.json"):
            (stage_dir(cfg, "eval-net") / name).write_bytes(
                (stage_dir(tiny_config(pretrained[0]), "eval-net") / name).read_bytes())
    crash_after(4, monkeypatch, pretrain_gan, resumed)
    assert checkpoint.load(stage_dir(resumed, "gan-pretrain", "b0") / "checkpoint.pt")["step"] == 4
    a, b = pretrain_gan(resumed), pretrain_gan(straight)
    assert a["final_losses"] == b["final_losses"]          # step 6, bit for bit
    ckpt_a = checkpoint.load(tmp_path / "a" / "quick" / "gan-pretrain" / "b0" / "checkpoint.pt")
    ckpt_b = checkpoint.load(tmp_path / "b" / "quick" / "gan-pretrain" / "b0" / "checkpoint.pt")
    assert state_hash(ckpt_a["ema"]["model"]) == state_hash(ckpt_b["ema"]["model"])


def test_pretrain_refuses_other_architecture(pretrained):
    cfg = tiny_config(pretrained[0], "--gan.channels=16")
    with pytest.raises(checkpoint.CheckpointMismatch, match="gan.channels"):
        pretrain_gan(cfg)


@pytest.mark.parametrize("variant", ["hypermod+selfinit+ssl", "finetune"])
def test_transfer_smoke_and_resume(pretrained, variant, monkeypatch):
    out = pretrained[0]
    cfg = tiny_config(out, *SWITCHES[variant], "--transfer.steps=5",
                      "--transfer.checkpoint_every=3")
    straight = transfer_gan(cfg)
    run = out / "quick" / "gan-transfer" / straight["name"]
    assert ({"checkpoint.pt", "grid.png", "real.png", "metrics.json"}
            <= {p.name for p in run.iterdir()})
    q = straight["quality"]
    assert set(q["per_class"]) == {"star", "cross", "heart", "crescent", "arrow"}
    # transfer.eval_samples = 10 samples of each of the 5 targets judged: accuracy is k / 50
    assert q["samples_per_class"] == 10 and q["overall"]["n_fake"] == 50
    assert q["accuracy"] * 50 == pytest.approx(round(q["accuracy"] * 50), abs=1e-6)
    crash_after(3, monkeypatch, transfer_gan, cfg, force=True)
    resumed = transfer_gan(cfg)
    assert resumed["final_losses"] == straight["final_losses"]
    if variant.startswith("hypermod"):
        check = resumed["start_check"]
        assert check["selfinit_steps"] == 3                      # TINY's transfer.selfinit_steps
        for m in (check["random_heads"], check["after_selfinit"]):
            assert m["n"] == 40                                  # gan.eval_samples samples a set
            assert m["ratio"] == m["fd_modulated_vs_base"] / m["fd_base_vs_base"]
    assert straight["variant"] in markdown_tables(out / "quick")


@pytest.mark.parametrize("variant", list(SWITCHES))
def test_each_variant_trains_what_it_claims(pretrained, variant):
    cfg = tiny_config(pretrained[0], *SWITCHES[variant])
    assert variant_name(cfg).startswith(variant)
    _, images, labels = few_shot_targets(cfg)
    G, D, g_groups, base = build_models(cfg, torch.device("cpu"))
    trainable = {id(p) for group in g_groups for p in group["params"]}
    if isinstance(G, HyperModulatedGenerator):
        assert trainable == {id(p) for p in G.trainable_parameters()}
        assert not any(id(p) in trainable for p in G.base.parameters())
    else:
        assert trainable == {id(p) for p in G.parameters()}  # scratch and finetune: everything
    frozen = {n: p.detach().clone() for n, p in G.named_parameters() if id(p) not in trainable}
    frozen.update({f"buffer {n}": b.clone() for n, b in G.named_buffers()})
    moving = {n: p.detach().clone() for n, p in G.named_parameters() if id(p) in trainable}
    d_before = {n: p.detach().clone() for n, p in D.named_parameters()}
    trainer = GanTrainer(G, D, g_groups, cfg.gan.z_dim, images, labels, 5, transfer_spec(cfg),
                         variant)
    for _ in range(2):
        trainer.d_step()
        trainer.g_step()
        trainer.step += 1
    now = dict(G.named_parameters())
    now.update({f"buffer {n}": b for n, b in G.named_buffers()})
    assert state_hash({n: now[n] for n in frozen}) == state_hash(frozen)   # bitwise unchanged
    assert all(not torch.equal(now[n], moving[n]) for n in moving)  # every claimed tensor moves
    assert any(not torch.equal(p, d_before[n]) for n, p in D.named_parameters())


@pytest.mark.slow
def test_ablation_runs_every_variant_and_the_table_lists_them(tmp_path):
    import argparse
    import train
    from pipeline.scheduler import unique
    out = tmp_path  # its own folder: the module's shared one holds transfers with other settings
    opts = argparse.Namespace(bases=1, seeds=1, k=None)
    # in this process, in dependency order
    for unit in unique(train.paper2(tiny_config(out), opts)):
        train.STAGES[unit.stage](unit.config, False)
    runs, _ = current_runs(out / "quick" / "gan-transfer", out)
    results = {r["variant"]: r for r in runs}
    assert len(runs) == len(ABLATION) == 6                       # one run per ablation row
    assert sorted(results) == ["finetune", "hypermod+selfinit+ssl-dense",
                               "hypermod+selfinit+ssl-lowrank", "hypermod+selfinit-lowrank",
                               "hypermod-lowrank", "scratch"]
    table = markdown_tables(out / "quick")
    assert all(name in table for name in results)
    dense, lowrank = (results["hypermod+selfinit+ssl-dense"],
                      results["hypermod+selfinit+ssl-lowrank"])
    assert lowrank["trainable_parameters"] < dense["trainable_parameters"]


def test_short_transfer_makes_samples_depend_on_the_label():
    """Two target classes that differ trivially (bright left half / bright right half): after
    self-initialization, the embedding copy and 150 transfer steps with the default transfer
    settings, the same z draws the bright side on the requested label's side. (The image's mean
    brightness would not do: AdaIN normalizes each channel, so hyper-modulation cannot move it.)"""
    t, lr = TransferConfig(), TRANSFER_LR["quick"]["hypermod-lowrank"]
    torch.manual_seed(0)
    g = Generator(8, z_dim=16, w_dim=16, channels=16, mapping_layers=2)
    hg = HyperModulatedGenerator(g, 2, head="lowrank", rank=4, embed_dim=16)
    self_initialize(hg, 100, 8, t.selfinit_lr, t.selfinit_class_lr_mul, progress=False)
    hg.copy_embedding_to_all_classes(0, t.selfinit_noise,
                                     generator=torch.Generator().manual_seed(0))
    d = conditional_from_unconditional(Discriminator(8, channels=16), 2, init=t.d_class_init)
    labels = torch.arange(2).repeat_interleave(16)
    left = torch.ones(8, 8)
    left[:, 4:] = -1
    # (32, 3, 8, 8)
    real = 0.8 * torch.stack([left, left.flip(1)])[labels][:, None].expand(-1, 3, -1, -1)
    spec = LoopSpec(steps=150, batch_size=16, lr_g=lr, lr_d=t.d_lr, r1_gamma=t.r1_gamma, r1_every=4,
                    ema_decay=0.9, augment=(), d_class_lr_mul=t.d_class_lr_mul)
    GanTrainer(hg, d, hg.parameter_groups(lr, t.class_lr_mul), 16, real, labels, 2, spec,
               "two classes").train(lambda state: None, progress=False)
    z, noise = torch.randn(64, 16), g.make_noise(64)
    with torch.no_grad():
        sides = [hg(z, torch.full((64,), c), noise=noise) for c in (0, 1)]
    left_minus_right = [(x[..., :4].mean() - x[..., 4:].mean()).item() for x in sides]
    assert left_minus_right[0] > 0.5 and left_minus_right[1] < -0.5, left_minus_right


@pytest.mark.parametrize("head", ["lowrank", "dense"])
def test_self_initialization_brings_the_start_fd_ratio_to_the_floor(pretrained, head):
    """The start check itself, not only a falling loss:
    FD-eval(modulated, base) / FD-eval(base, base) far above 1 with random heads, at most 1.5 after
    self-initialization and the embedding copy."""
    cfg = tiny_config(pretrained[0], f"--transfer.head={head}", "--transfer.selfinit_steps=150")
    G, _ = load_pretrained(cfg, "cpu")
    torch.manual_seed(0)
    hg = HyperModulatedGenerator(G, 5, head=head, rank=2, embed_dim=8)
    check = self_initialize_and_check(hg, load_evaluator(cfg), cfg.transfer, n_check=200)
    assert check["random_heads"]["ratio"] > 2 and check["after_selfinit"]["ratio"] <= 1.5, check


def test_selfinit_check_is_one_for_the_identity_and_large_for_random_heads(pretrained):
    cfg = tiny_config(pretrained[0])
    evaluator = load_evaluator(cfg)
    G, _ = load_pretrained(cfg, "cpu")
    hg = HyperModulatedGenerator(G, 5, head="dense", embed_dim=8)
    assert selfinit_check(evaluator, hg, 40)["ratio"] > 2  # random dense heads: far from G
    hg.set_identity_modulation()
    assert selfinit_check(evaluator, hg, 40)["ratio"] == pytest.approx(1, abs=1e-3)
