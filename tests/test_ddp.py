"""torchrun with 2 CPU processes (gloo): distributed training writes the same checkpoint format as
one process, and (checked inside the GAN loop) leaves the ranks with bitwise identical weights."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from core import checkpoint
from core.cli import make_config
from eval.evalnet import train_evaluator
from minidiff.train_diffusion import load_diffusion
from tests.conftest import save_untrained_clip, save_untrained_evaluator, tiny_diffusion_overrides
from tests.test_minigan_training import TINY as TINY_GAN

ROOT = Path(__file__).resolve().parents[1]
GAN_KEYS = {"kind", "config", "step", "seconds", "log", "G", "D", "opt_g", "opt_d", "ema", "rng",
            "run_key"}


# Two ranks train a tiny GAN with the gradient all-reduce switched off, so each rank steps on its
# own batches: GanTrainer.train's closing check must stop the run.
UNSYNCED = """
import os
import torch
from core import distributed
from minigan.discriminator import Discriminator
from minigan.generator import Generator
from minigan.loop import GanTrainer, LoopSpec

distributed.init(torch.device("cpu"))
torch.manual_seed(0)
G, D = Generator(8, z_dim=8, w_dim=8, channels=8, mapping_layers=1), Discriminator(8, 8)
distributed.average_gradients = lambda params: None
spec = LoopSpec(steps=2, batch_size=4, lr_g=1e-2, lr_d=1e-2, r1_gamma=0.0, r1_every=1,
                ema_decay=0.9, augment=())
real = torch.rand(16, 3, 8, 8) * 2 - 1
GanTrainer(G, D, G.parameters(), 8, real, None, 0, spec, "unsynced").train(lambda s: None, False)
os._exit(0)  # no interpreter teardown: it can abort a rank (core.distributed.exit_rank)
"""


def torchrun(*args, script=ROOT / "train.py", succeed=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if succeed:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_process_ddp_run_writes_a_normal_checkpoint(tmp_path):
    overrides = tiny_diffusion_overrides(tmp_path) + ["--diffusion.steps=3", "--run.threads=1",
                                                      "--evalnet.channels=8,16"]
    cfg = make_config("quick", overrides)
    save_untrained_clip(cfg)
    save_untrained_evaluator(cfg)
    torchrun("diffusion", *overrides)
    path = tmp_path / "quick" / "diffusion" / "b0" / "last.pt"
    payload = checkpoint.load(path, kind="diffusion")
    assert payload["step"] == 3 and set(payload) == {"kind", "config", "step", "train_seconds",
                                                     "loss", "model", "ema", "optimizer", "text",
                                                     "vocab", "run_key"}
    # the DDP wrapper is not in the names
    assert not any(k.startswith("module.") for k in payload["model"])
    model, _, _, _ = load_diffusion(path)
    assert all(torch.isfinite(p).all() for p in model.unet.parameters())
    assert (tmp_path / "quick" / "diffusion" / "b0" / "metrics.json").exists()


def test_two_process_gan_pretrain_and_transfer(tmp_path):
    """R1, the SSL loss and a frozen base G all under 2 ranks; GanTrainer.train stops if the ranks'
    G or D differ at the end, so a zero exit status means the gradient averaging kept them
    identical. That check is shown to be live first: ranks that skip the averaging are stopped."""
    script = tmp_path / "unsynced.py"
    script.write_text(UNSYNCED)
    unsynced = torchrun(script=script, succeed=False)
    assert unsynced.returncode != 0, "ranks that never averaged their gradients were not stopped"
    assert "differs from rank 0's; gradients were not synchronised" in unsynced.stderr
    overrides = [f"--run.out_dir={tmp_path}", *TINY_GAN, "--gan.r1_every=1"]
    train_evaluator(make_config("quick", overrides))   # the evaluator does not train under torchrun
    torchrun("gan-pretrain", *overrides)
    pretrain = checkpoint.load(tmp_path / "quick" / "gan-pretrain" / "b0" / "checkpoint.pt",
                               kind="gan-pretrain")
    check_gan_payload(pretrain, GAN_KEYS, steps=4)
    torchrun("gan-transfer", *overrides)
    transfer = checkpoint.load(tmp_path / "quick" / "gan-transfer"
                               / "b0-hypermod+selfinit+ssl-lowrank-k4-s0" / "checkpoint.pt",
                               kind="gan-transfer")
    check_gan_payload(transfer, GAN_KEYS | {"run", "start_check"}, steps=3)


def check_gan_payload(payload, keys, steps):
    assert set(payload) == keys and payload["step"] == steps
    assert all(torch.isfinite(t).all() for t in payload["G"].values() if t.is_floating_point())
