"""torchrun with 2 CPU processes (gloo): DDP training writes the same checkpoint format as one process."""
import subprocess
import sys
from pathlib import Path

import torch

from core import checkpoint
from core.config import make_config
from minidiff.train_diffusion import load_diffusion
from tests.conftest import save_untrained_clip, tiny_diffusion_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_ddp_run_writes_a_normal_checkpoint(tmp_path):
    overrides = tiny_diffusion_overrides(tmp_path) + ["--diffusion.steps=3", "--run.threads=1"]
    cfg = make_config("quick", overrides)
    save_untrained_clip(cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "train.py"), "diffusion", *overrides]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    path = tmp_path / "quick" / "diffusion" / "last.pt"
    payload = checkpoint.load(path, kind="diffusion")
    assert payload["step"] == 3 and set(payload) == {"kind", "config", "step", "model", "ema", "optimizer", "text",
                                                     "vocab"}
    assert not any(k.startswith("module.") for k in payload["model"])  # the DDP wrapper is not in the names
    model, _, _, _ = load_diffusion(path)
    assert all(torch.isfinite(p).all() for p in model.unet.parameters())
    assert (tmp_path / "quick" / "diffusion" / "metrics.json").exists()
