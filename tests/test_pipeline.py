"""`python train.py`: the order of the two papers' stages, --force reaching every stage, one-line user errors,
and core/background.py (waiting on the background chain, giving the second core back)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from core import background
from core.errors import CheckpointMismatch, ConfigError
from minigan.transfer import ABLATION

ROOT = Path(__file__).resolve().parents[1]


def record_stages(monkeypatch, calls):
    """Replace every stage train.py calls by a recorder of (stage, method/run, force)."""
    def recorder(name):
        def stage(cfg, force=False):
            detail = {"customize": f"{cfg.customize.method}/{cfg.customize.reg}",
                      "drift": f"{cfg.customize.method}/{cfg.customize.reg}",
                      "gan-transfer": f"{cfg.transfer.generator}/{cfg.transfer.selfinit}/{cfg.transfer.ssl}/"
                                      f"{cfg.transfer.head}"}.get(name, "")
            calls.append((name, detail, force))
            return {}
        return stage
    for attr, name in (("train_clip", "clip"), ("train_evaluator", "eval-net"), ("train_diffusion", "diffusion"),
                       ("customize", "customize"), ("drift_stage", "drift"), ("pretrain_gan", "gan-pretrain"),
                       ("transfer_gan", "gan-transfer")):
        monkeypatch.setattr(train, attr, recorder(name))
    monkeypatch.setattr(train, "write_report", lambda run, out: calls.append(("report", "", False)) or out)


def test_the_pipeline_runs_both_papers_in_order(monkeypatch, tmp_path):
    calls = []
    record_stages(monkeypatch, calls)
    train.main(["--jobs", "1", f"--run.out_dir={tmp_path}"])
    names = [c[0] for c in calls]
    assert names[:2] == ["eval-net", "gan-pretrain"] and names[-1] == "report"
    assert [c[1] for c in calls if c[0] == "gan-transfer"] == [f"{g}/{s}/{l}/{h}" for g, s, l, h in ABLATION]
    assert names[2 + len(ABLATION):4 + len(ABLATION)] == ["clip", "diffusion"]
    assert [c[1] for c in calls if c[0] == "drift"] == ["full/none", "full/functional", "lora/none", "lora/functional"]
    assert not any(force for _, _, force in calls)
    calls.clear()
    train.main(["--jobs", "1", "--all-methods", "--force", f"--run.out_dir={tmp_path}"])
    assert sum(c[0] == "drift" for c in calls) == 2 * 5
    assert all(force for name, _, force in calls if name != "report")   # --force reaches every stage


def test_one_stage_gets_its_overrides_and_force(monkeypatch, tmp_path):
    calls = []
    record_stages(monkeypatch, calls)
    seen = {}
    monkeypatch.setitem(train.STAGES, "customize", lambda cfg, force: seen.update(cfg=cfg, force=force))
    train.main(["customize", "--method", "lora", "--reg=functional", "--force", f"--run.out_dir={tmp_path}"])
    assert seen["force"] and seen["cfg"].customize.method == "lora" and seen["cfg"].customize.reg == "functional"


def test_user_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, tmp_path, capsys):
    """Issue row 13: an error inside a stage is `error: ...` with a non-zero exit, no traceback."""
    def mismatch(cfg, force):
        raise CheckpointMismatch("runs/x/last.pt was made with other settings")
    monkeypatch.setitem(train.STAGES, "diffusion", mismatch)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["diffusion", f"--run.out_dir={tmp_path}"])
    assert str(exit_info.value.code) == "error: runs/x/last.pt was made with other settings"
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["diffusion", "--debug", f"--run.out_dir={tmp_path}"])
    assert "Traceback" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="error: run.preset cannot be overridden"):
        train.main(["clip", "--run.preset=cifar10"])                     # issue row 5


def test_programming_errors_keep_their_traceback(monkeypatch, tmp_path):
    monkeypatch.setitem(train.STAGES, "clip", lambda cfg, force: {}["missing key"])
    with pytest.raises(KeyError):
        train.main(["clip", f"--run.out_dir={tmp_path}"])


def test_train_py_as_a_process_refuses_a_bad_device_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "train.py", "clip", "--run.device=tpu", f"--run.out_dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.strip().startswith("error: run.device='tpu'")
    assert len(done.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())  # nothing written


def test_wait_for_returns_once_ready_and_fails_if_the_process_died(tmp_path):
    target = tmp_path / "metrics.json"
    writer = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(1); open({str(target)!r}, 'w')"])
    background.wait_for(target.exists, writer, tmp_path / "log", "the file was written")
    writer.wait()
    with pytest.raises(background.BackgroundFailed, match="ended before the other file was written"):
        background.wait_for((tmp_path / "never").exists, writer, tmp_path / "log", "the other file was written")


def test_a_failed_background_chain_reports_the_end_of_its_log(tmp_path):
    log = tmp_path / "chain.log"
    child = background.start([sys.executable, "-c", "import sys; print('stage gan-pretrain failed'); sys.exit(3)"],
                             log)
    with pytest.raises(background.BackgroundFailed, match="exit status 3(.|\n)*stage gan-pretrain failed"):
        background.wait(child, log)


CLAIMER = """
import sys
from pathlib import Path
from core.background import claim
print(" ".join(str(i) for i in range(40) if claim(Path(sys.argv[1]), f"unit-{i}")))
"""


def test_claim_gives_every_name_to_exactly_one_of_several_racing_processes(tmp_path):
    racers = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path / "claims")], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
    won = [set(map(int, r.communicate(timeout=120)[0].split())) for r in racers]
    assert set().union(*won) == set(range(40))
    assert sum(len(w) for w in won) == 40                  # no name twice


def test_the_helper_takes_customizations_from_the_end_and_each_runs_once(monkeypatch, tmp_path):
    """The main process has claimed the first unit when the helper arrives: the helper runs the others from
    the last one back, and the main process, walking on, finds them all taken."""
    calls = []
    record_stages(monkeypatch, calls)
    args, overrides = train.parse_args(["--seeds", "2", f"--run.out_dir={tmp_path}"])
    cfg = train.make_config("quick", overrides)
    units = train.customizations(cfg, args.methods, args.seeds, args.regs)
    claims = train.stage_dir(cfg, train.CLAIMS)
    assert background.claim(claims, train.run_name(units[0][0][1]))
    train.run(units[0], False)
    train.help_with_customizations(cfg, args)
    train.run_shared(units, False, claims)                   # the main process, walking on: nothing left
    runs = [(c[0], c[1]) for c in calls]
    assert len(units) == 8 and len(runs) == 2 * len(units)    # every customization and drift once
    assert runs[2:4] == [("customize", "lora/functional"), ("drift", "lora/functional")]   # the last unit first
    assert runs[-2:] == [("customize", "full/none"), ("drift", "full/none")]               # down to the second


def test_share_cores_gives_the_second_core_back_when_the_background_process_ends():
    before = torch.get_num_threads()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        background.share_cores(sleeper)
        assert torch.get_num_threads() == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    background.share_cores(sleeper)
    assert torch.get_num_threads() == (os.cpu_count() or 1)
    torch.set_num_threads(before)


def test_config_errors_stop_before_any_stage(monkeypatch, tmp_path):
    calls = []
    record_stages(monkeypatch, calls)
    with pytest.raises(SystemExit, match="data.resolution=17"):
        train.main(["--data.resolution=17", f"--run.out_dir={tmp_path}"])     # issue row 9
    assert calls == []
    with pytest.raises(ConfigError):
        train.make_config("quick", ["--diffusion.steps=0"])


def test_seeds_default_to_the_presets_and_the_flag_wins():
    """cifar10-cpu's default run repeats its customizations and transfers (2 seeds), the others run one; an
    explicit --seeds overrides either."""
    assert train.parse_args([])[0].seeds == 1
    assert train.parse_args(["--preset", "cifar10-cpu"])[0].seeds == 2
    assert train.parse_args(["--preset", "cifar10-cpu", "--seeds", "1"])[0].seeds == 1
    assert train.parse_args(["--seeds", "3"])[0].seeds == 3
    with pytest.raises(SystemExit):
        train.parse_args(["--seeds", "0"])
