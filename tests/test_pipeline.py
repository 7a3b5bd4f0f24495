"""core/pipeline.py and the step list of `python train.py`: skipping, forcing, failures that name the rerun
command, waiting on the background chain, and which steps the default pipeline runs."""
import os
import subprocess
import sys
import time

import pytest
import torch

import train
from core.config import make_config
from core.pipeline import Step, StepFailed, run_steps, share_cores, wait_for
from minigan.transfer import ABLATION


def test_run_steps_skips_finished_steps_and_force_reruns_them(tmp_path):
    ran = []
    done = tmp_path / "done.json"
    done.write_text("{}")
    steps = [Step("a", lambda: ran.append("a"), done, "cmd a"), Step("b", lambda: ran.append("b"), tmp_path / "b", "")]
    run_steps(steps)
    assert ran == ["b"]
    run_steps(steps, force=True)
    assert ran == ["b", "a", "b"]


def test_a_failing_step_names_itself_and_its_rerun_command(tmp_path):
    def boom():
        raise ValueError("bad value")
    with pytest.raises(StepFailed, match=r"step 'customize lora/none' failed: ValueError: bad value(.|\n)*"
                                         r"python train.py customize --method lora"):
        run_steps([Step("customize lora/none", boom, tmp_path / "x", "python train.py customize --method lora")])


def test_wait_for_returns_once_the_file_is_written_and_fails_if_the_writer_died(tmp_path):
    target = tmp_path / "metrics.json"
    writer = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(1); open({str(target)!r}, 'w')"])
    wait_for(target, writer, tmp_path / "log")
    assert target.exists()
    writer.wait()
    with pytest.raises(StepFailed, match="ended without writing"):
        wait_for(tmp_path / "never.json", writer, tmp_path / "log")
    with pytest.raises(StepFailed):                          # an old file does not count after --force
        wait_for(target, writer, tmp_path / "log", since=time.time() + 60)


def test_share_cores_gives_the_second_core_back_when_the_background_process_ends():
    before = torch.get_num_threads()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        share_cores(sleeper)
        assert torch.get_num_threads() == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    share_cores(sleeper)
    assert torch.get_num_threads() == (os.cpu_count() or 1)
    torch.set_num_threads(before)


def test_default_pipeline_runs_full_and_lora_with_and_without_the_regularizer_and_every_gan_variant(tmp_path):
    cfg = make_config("quick", [f"--run.out_dir={tmp_path}"])
    chains = train.pipeline(cfg, [], all_methods=False)
    names = {chain: [s.name for s in steps] for chain, steps in chains.items()}
    assert names["evaluator"] == ["eval-net"]
    assert names["diffusion"][:2] == ["clip", "diffusion"]
    assert [n for n in names["diffusion"] if n.startswith("drift")] == [
        "drift full/none", "drift full/functional", "drift lora/none", "drift lora/functional"]
    assert names["gan"][0] == "gan-pretrain" and len(names["gan"]) == 1 + len(ABLATION)
    every = train.pipeline(cfg, [], all_methods=True)
    assert sum(s.name.startswith("drift") for s in every["diffusion"]) == 2 * 5
    rerun = {s.name: s.command for s in chains["diffusion"]}["customize lora/functional"]
    assert rerun.startswith("python train.py customize --method lora --reg functional --preset quick")
