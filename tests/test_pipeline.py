"""`python train.py`: the units of both papers and their order, the scheduler's workers (dying with
their parent however it ends, giving the same results for any number of them), the plan, options
checked before any work, and tables that follow the current base models."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from core.cli import make_config
from eval.results import results_json
from minigan.transfer import ABLATION, CURVE
from pipeline.command import parse_command
from pipeline.scheduler import label, plan, unique

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data.shapes_train_size=300", "--data.shapes_test_size=100", "--clip.width=16",
        "--clip.layers=1", "--clip.heads=2", "--clip.embed_dim=16", "--clip.image_channels=8,16",
        "--clip.steps=3", "--clip.batch_size=16", "--evalnet.channels=8,16", "--evalnet.epochs=1",
        "--evalnet.batch_size=32", "--diffusion.base_channels=8", "--diffusion.channel_mults=1,2",
        "--diffusion.attention_resolutions=8", "--diffusion.heads=2", "--diffusion.batch_size=8",
        "--diffusion.warmup=2", "--diffusion.steps=3", "--diffusion.sample_every=0",
        "--diffusion.sample_steps=2", "--diffusion.timesteps=100", "--diffusion.quality_samples=2",
        "--customize.steps=2", "--customize.fidelity_samples=4", "--customize.k_images=2",
        "--customize.attribute_anchors=2", "--customize.images_per_anchor=1",
        "--customize.empty_anchor_images=2", "--classifier.n_images=18",
        "--classifier.n_timesteps=4", "--classifier.stages=2,4", "--classifier.keep=2,1",
        "--drift.pairs=2", "--drift.attribute_prompts=2", "--drift.attribute_pairs=1",
        "--gan.steps=3", "--gan.batch_size=8", "--gan.eval_samples=20", "--gan.channels=8",
        "--gan.d_channels=8", "--transfer.steps=3", "--transfer.batch_size=8",
        "--transfer.selfinit_steps=2", "--transfer.selfinit_batch=4", "--transfer.eval_samples=12"]


def units(argv):
    opts, overrides = parse_command(argv, train.STAGES)
    cfg = make_config(opts.preset, overrides)
    return cfg, unique(train.paper1(cfg, opts) + train.paper2(cfg, opts))


def pipeline(out, *args, timeout=600):
    return subprocess.run([sys.executable, "train.py", f"--run.out_dir={out}", *TINY, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def values(out):
    """Every per-run value of both papers, without the clocks."""
    data = results_json(Path(out) / "quick")
    return {paper: {c: {m: v for m, v in ms.items() if m != "seconds"}
                    for c, ms in data[paper]["values"].items()}
            for paper in ("paper1", "paper2")}


# ---------------------------------------------------------------------------------------- the units

def test_the_units_of_both_papers():
    cfg, us = units([])
    stages = [u.stage for u in us]
    assert stages.count("clip") == 1 and stages.count("eval-net") == 1  # shared by both papers
    assert [label(u, cfg) for u in us if u.stage == "drift"] == [
        "drift", "drift reg=functional", "drift method=lora", "drift method=lora reg=functional"]
    assert stages.count("gan-transfer") == len(ABLATION) and stages.count("drift-floor") == 1
    for u in us:  # every wait is in the list
        assert all(d in us and us.index(d) < us.index(u) for d in u.after)
    drift = next(u for u in us if u.stage == "drift")
    assert {d.stage for d in drift.after} == {"customize", "drift-floor", "eval-net"}
    diffusion = next(u for u in us if u.stage == "diffusion")
    # the base model does not wait for the judge
    assert [d.stage for d in diffusion.after] == ["clip"]


def test_bases_seeds_and_k_multiply_the_units():
    cfg, us = units(["--bases", "2", "--seeds", "3", "--k", "10,100"])
    count = lambda stage: sum(u.stage == stage for u in us)  # noqa: E731
    assert (count("clip") == 1 and count("eval-net") == 1 and count("diffusion") == 2
            and count("gan-pretrain") == 2)
    assert count("drift") == 2 * 3 * 4 and count("drift-floor") == 2 * 3
    assert count("gan-transfer") == 2 * 3 * (len(ABLATION) + len(CURVE))
    seeds = {u.config.diffusion.seed for u in us if u.stage == "customize"}
    assert (seeds == {0, 1}
            and {u.config.gan.seed for u in us if u.stage == "gan-transfer"} == {0, 1})


@pytest.mark.parametrize("argv,message", [
    (["--methods", "fulll"],
     "--methods 'fulll': valid names are full, full+prior, lora, custom, ti"),
    (["--k", "0"], "--k '0': expected positive whole numbers"),
    (["--k", "-2"], "--k '-2': expected positive whole numbers"),
    (["--seeds", "0"], "--seeds '0'"),
    (["--seed", "3"], "unknown option --seed (did you mean --seeds?)"),
    (["--regs", "functionl"], "valid names are none, functional, replay, distill, l2"),
    (["custmize"], "unknown stage 'custmize' (did you mean 'customize'?)"),
])
def test_bad_options_stop_before_any_work_in_one_line(tmp_path, argv, message):
    start = time.time()
    done = subprocess.run([sys.executable, "train.py", f"--run.out_dir={tmp_path}", *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == f"error: {done.stderr.strip()[7:]}"
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert time.time() - start < 10 and not any(tmp_path.iterdir())              # no stage started


def test_an_override_may_hold_spaces(tmp_path):
    cfg, _ = units([f"--run.out_dir={tmp_path / 'runs with space'}"])
    assert cfg.run.out_dir.endswith("runs with space")


# -------------------------------------------------------------------------------------- the workers

def children(pid: int) -> list[int]:
    """The processes whose parent is pid (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit()
                    and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid):
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc to find the workers")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_die_with_their_parent(tmp_path, sig):
    """The parent alone gets the signal (as from `kill PID` or a scheduler): its workers follow
    within 10 s."""
    parent = subprocess.Popen([sys.executable, "train.py", f"--run.out_dir={tmp_path}",
                               "--jobs", "2"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers, started = [], 0
    for line in parent.stdout:                      # wait until both workers have a unit
        started += "] start " in line
        if started == 2:
            workers = children(parent.pid)
            break
    assert len(workers) == 2
    parent.send_signal(sig)
    parent.wait(timeout=30)
    deadline = time.time() + 10
    while any(alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(w) for w in workers)


def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    runs = {jobs: pipeline(tmp_path / f"j{jobs}", "--jobs", str(jobs)) for jobs in (1, 2, 3)}
    for jobs, done in runs.items():
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"on {jobs} worker(s)" in done.stdout
    assert values(tmp_path / "j1") == values(tmp_path / "j2") == values(tmp_path / "j3")
    assert "full / none" in values(tmp_path / "j1")["paper1"]


def test_a_plan_run_by_hand_gives_the_pipelines_tables(tmp_path):
    """Each unit's command, run level by level as another scheduler would, reproduces the pipeline's
    results."""
    assert pipeline(tmp_path / "pipe", "--jobs", "2", "--methods", "full",
                    "--papers", "1").returncode == 0
    listed = pipeline(tmp_path / "hand", "--plan", "--methods", "full", "--papers", "1")
    assert listed.returncode == 0 and not (tmp_path / "hand").exists()  # --plan runs nothing
    rows = [line.split("\t") for line in listed.stdout.strip().splitlines()]
    assert rows[0][:3] == ["0", "u001", "-"] and all(len(r) == 4 for r in rows)
    for level in sorted({int(r[0]) for r in rows}):
        for row in rows:
            if int(row[0]) == level:
                command = row[3].replace("python train.py", f"{sys.executable} train.py", 1)
                done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True,
                                      timeout=300)
                assert done.returncode == 0, (row, done.stderr[-1000:])
    assert values(tmp_path / "hand") == values(tmp_path / "pipe")


def test_bases_share_clip_and_the_evaluator_and_a_retrained_base_leaves_the_tables(tmp_path):
    done = pipeline(tmp_path, "--bases", "2", "--seeds", "2", "--papers", "1,2")
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "quick"
    assert sorted(p.name for p in (run / "diffusion").iterdir()) == ["b0", "b1"]
    assert sorted(p.name for p in (run / "gan-pretrain").iterdir()) == ["b0", "b1"]
    keys = [results_json(run)]
    import json
    clip = {
        json.loads((run / "diffusion" / b / "metrics.json").read_text())["run_key"]["inputs.clip"]
        for b in ("b0", "b1")}
    assert len(clip) == 1  # one CLIP under both base models
    assert (keys[0]["paper1"]["values"]["full / none"]["heldout_flip"].keys()
            == {"b0/s0", "b0/s1", "b1/s0", "b1/s1"})
    # retrain base b0 and its first seed only: its second seed's runs are of an older base model
    again = pipeline(tmp_path, "--seeds", "1", "--papers", "1", "--force", "--diffusion.steps=4")
    assert again.returncode == 0, again.stderr[-2000:]
    data = results_json(run)
    assert (data["paper1"]["values"]["full / none"]["heldout_flip"].keys()
            == {"b0/s0", "b1/s0", "b1/s1"})
    assert {e["run"] for e in data["left_out"]} >= {"b0-full-none-s1", "b0-lora-functional-s1"}
    assert "left out (its base model has been retrained since)" in again.stdout


def test_a_refused_rerun_runs_nothing_with_old_settings(tmp_path):
    """A rerun with a changed setting refuses the units it would change (their run keys differ); one
    with --force reruns them. A regularizer at another weight is a condition of its own (its own
    folder), so the tables then show both weights as separate rows, never one averaged over the
    two."""
    assert pipeline(tmp_path, "--papers", "1").returncode == 0
    refused = pipeline(tmp_path, "--papers", "1", "--customize.lambda_fr=0.5")
    assert refused.returncode == 1 and "customize.lambda_fr: 3.0 -> 0.5" in refused.stdout
    assert pipeline(tmp_path, "--papers", "1", "--customize.lambda_fr=0.5",
                    "--force").returncode == 0
    import json
    for metrics in (tmp_path / "quick" / "customize").glob("*/metrics.json"):
        lambda_fr = json.loads(metrics.read_text())["run_key"]["customize.lambda_fr"]
        assert lambda_fr == (3.0 if "-functional-s" in metrics.parent.name
                             else 0.5), metrics.parent.name
    rows = results_json(tmp_path / "quick")["paper1"]["values"]
    assert {"full / functional", "full / functional-w0.5", "full / none"} <= set(rows)


def test_plan_commands_carry_each_units_config():
    cfg, us = units(["--bases", "2"])
    rows = plan(us, cfg, ["python", "train.py", "--preset", "quick"], threads=1)
    customize = [r for r in rows if " customize " in r["command"]]
    assert any("--diffusion.seed=1" in r["command"] and "--customize.method=lora" in r["command"]
               for r in customize)
    assert all(r["command"].endswith("--run.threads=1") for r in rows)
    assert {r["level"] for r in rows if " clip " in r["command"]} == {0}
