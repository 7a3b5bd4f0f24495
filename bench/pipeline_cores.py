"""The default pipeline's wall clock on one core and on two, and how busy its workers were.

    python -m bench.pipeline_cores   # quick: `taskset -c 0` and `taskset -c 0,1`
    python -m bench.pipeline_cores --cores 0,1 --args="--seeds 3"

Each run starts from an empty output folder of its own (runs/bench/cores-<cores>/...) with nothing
else running, `taskset` restricting the process and its workers to the given cores (the pipeline
then starts one worker per core it may use). The pipeline's own summary
(runs/.../logs/pipeline.json) gives the core-seconds of work (CPU time of the units) against wall
clock x workers; this writes both runs' figures to runs/bench/pipeline_cores.json.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import cpu_model, save

ROOT = Path(__file__).resolve().parents[1]


def timed_run(cores: str, args: list[str], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    done = subprocess.run(["taskset", "-c", cores, sys.executable, "train.py",
                           f"--run.out_dir={out}", *args],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"the run on cores {cores} failed: "
                         f"{done.stderr.strip().splitlines()[-1:]}")
    preset = next((a.split("=", 1)[1] for a in args if a.startswith("--preset=")), "quick")
    summary = json.loads((out / preset / "logs" / "pipeline.json").read_text())
    return {"cores": cores, "args": args, "wall_seconds": wall, "workers": summary["workers"],
            "cpu_share": summary["cpu_share"], "busy_share": summary["busy_share"],
            "unit_seconds": summary["unit_seconds"], "cpu_seconds": summary["cpu_seconds"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--cores", default="0;0,1",
                        help="core sets, ';'-separated (taskset -c syntax)")
    parser.add_argument("--args", default="", help="train.py arguments, e.g. '--seeds 3'")
    parser.add_argument("--out", default="runs/bench/pipeline_cores.json")
    opts = parser.parse_args()
    args = shlex.split(opts.args)
    result = {"cpu": cpu_model(), "args": args, "runs": []}
    for cores in opts.cores.split(";"):
        tag = cores.replace(",", "_") + ("-" + "_".join(a.strip("-").replace("=", "") for a in args)
                                         if args else "")
        r = timed_run(cores, args, ROOT / "runs" / "bench" / f"cores-{tag}")
        result["runs"].append(r)
        print(f"cores {cores}: {r['wall_seconds'] / 60:.1f} min on {r['workers']} worker(s); "
              f"CPU time {100 * r['cpu_share']:.0f}% of workers x wall, "
              f"units running {100 * r['busy_share']:.0f}%", flush=True)
        save(opts.out, result)


if __name__ == "__main__":
    main()
