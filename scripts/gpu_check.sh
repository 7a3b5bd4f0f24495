#!/usr/bin/env bash
# GPU check, for a fresh CUDA machine without network: unpack the carried CIFAR-10 copy, run the tests that
# exercise the GPU path (bf16 autocast and torch.compile on CUDA, every stage of the cifar10 preset at full
# width), measure throughput, run a shortened CIFAR-10 pipeline, and set its measured time per stage beside
# what bench.gpu_estimate projects for it. Everything goes to $OUT (default runs/gpu_check).
#
#   here:         mkdir -p carry && cp <offline CIFAR-10 pack: cifar10-jpeg.npz and its unpack.py> carry/
#   GPU machine:  bash scripts/gpu_check.sh        (carry/ travels with the working tree; git ignores it)
#
# Budget, a guess (this script has not run on a GPU yet): about 13 minutes of one H100 in all, at most
# PIPELINE_SECONDS (default 420) of them the shortened pipeline (SHORT below: the preset's model widths, fewer
# steps and images), which bench.gpu_estimate projects at 5.5 minutes at 10% MFU (3.6 at 20%, 10.0 at 5%);
# when the cap stops it, what finished is still summarised. A part that fails is logged and the next part
# runs; the exit status says whether any failed.
# Outputs: log.txt, device.json, pytest_*.xml, bench_diffusion.json, bench_gan.json, gpu_estimate_short.json,
# tables.md, report.html, summary.json (each stage's measured seconds next to the projection, implied MFU).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_check}
RUN=${RUN:-runs/gpu_check_runs}
PIPELINE_SECONDS=${PIPELINE_SECONDS:-420}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/log.txt") 2>&1
start=$(date +%s)
failed=()
part() {  # part NAME COMMAND...: run it, log its time, remember a failure and go on
    local name=$1; shift
    echo "== $name ($(( $(date +%s) - start ))s)"
    "$@" || { echo "!! $name failed (exit $?)"; failed+=("$name"); }
}

SHORT=(--run.out_dir="$RUN"
       --clip.steps=300 --clip.warmup=30 --evalnet.epochs=2 --evalnet.warmup_epochs=0.5
       --diffusion.steps=1500 --diffusion.warmup=150 --diffusion.sample_every=0 --diffusion.checkpoint_every=0
       --customize.steps=100 --classifier.n_images=180 --classifier.n_timesteps=50 --classifier.stages=10,50
       --classifier.keep=3,1 --drift.pairs=4
       --gan.steps=1000 --gan.checkpoint_every=0 --gan.eval_samples=2000
       --transfer.steps=300 --transfer.selfinit_steps=100 --transfer.checkpoint_every=0 --transfer.eval_samples=250)

unpack() { [ -f data/cifar10/train.npz ] && [ -f data/cifar10/test.npz ] || $PY carry/unpack.py data/cifar10; }
device() {
    $PY - "$OUT/device.json" <<'PY'
import json, sys, torch
assert torch.cuda.is_available(), "no CUDA device visible to torch"
p = torch.cuda.get_device_properties(0)
info = {"gpu": p.name, "memory_gib": p.total_memory / 2**30, "capability": f"{p.major}.{p.minor}",
        "torch": torch.__version__, "cuda": torch.version.cuda, "bf16": torch.cuda.is_bf16_supported()}
print(info)
json.dump(info, open(sys.argv[1], "w"), indent=1)
PY
}
pytest_part() { local xml=$1; shift; $PY -m pytest -q -p no:cacheprovider --junitxml="$OUT/$xml" "$@"; }
tables() { $PY evaluate.py table --preset cifar10 --run.out_dir="$RUN" > "$OUT/tables.md"; }

part "unpack CIFAR-10" unpack
part "device" device
# bf16 on CPU and CUDA; compile tests on CUDA only (their CPU variants take minutes of C++ compilation)
part "tests: bf16 and torch.compile" pytest_part pytest_precision.xml -m "slow or not slow" \
    tests/test_precision.py -k "bf16 or cuda"
part "tests: every cifar10 stage at full width (on CUDA)" pytest_part pytest_smoke.xml -m slow \
    tests/test_cifar10_smoke.py
part "tests: models" pytest_part pytest_models.xml tests/test_unet.py tests/test_diffusion.py \
    tests/test_evalnet.py tests/test_minigan_models.py
part "throughput: diffusion" $PY -m bench.bench_diffusion --presets quick,cifar10 --device cuda --iters 20 \
    --out "$OUT/bench_diffusion.json"
part "throughput: GAN (CPU and CUDA)" $PY -m bench.bench_gan --threads 8 --out "$OUT/bench_gan.json"
part "shortened CIFAR-10 pipeline" timeout "$PIPELINE_SECONDS" $PY train.py --preset cifar10 --jobs 1 "${SHORT[@]}"
part "tables" tables
part "report" $PY evaluate.py report --preset cifar10 --run.out_dir="$RUN" --out "$OUT/report.html"
part "estimate of the shortened run" $PY -m bench.gpu_estimate --preset cifar10 --threads 8 "${SHORT[@]}" \
    --out "$OUT/gpu_estimate_short.json"
part "summary" $PY - "$RUN/cifar10" "$OUT/gpu_estimate_short.json" "$OUT/summary.json" <<'PY'
import json, sys
from pathlib import Path
run, estimate, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
metrics = {str(p.parent.relative_to(run)): json.loads(p.read_text()) for p in sorted(run.rglob("metrics.json"))}
est = json.loads(estimate.read_text()) if estimate.exists() else {"stages": [], "assumptions": {}}
rows = []
for stage in est["stages"]:  # "clip", "customize full-none-s0", "gan-transfer finetune" -> their run folders
    kind, _, name = stage["stage"].partition(" ")
    folder = next((f for f in metrics if f in (kind, f"{kind}/{name}") or f.startswith(f"{kind}/{name}-k")), None)
    m = metrics.get(folder, {})
    seconds = m.get("train_seconds") if stage["steps"] else m.get("seconds")   # drift: its whole measurement
    work = [w for w in stage["work"] if w["what"] == "training steps"] if stage["steps"] else stage["work"]
    flops = sum(w["flops"] for w in work)
    peak = est["assumptions"]["peak_flops_per_second"][work[0]["precision"]] if work else None
    projected = sum(max(w["flops"] / (peak * 0.1), w["floor_seconds"]) for w in work)
    mfu = flops / (seconds * peak) if seconds else None
    rows.append({"stage": stage["stage"], "folder": folder, "measured_seconds": seconds, "counted_flops": flops,
                 "projected_seconds_at_10pct_mfu": projected, "implied_mfu_vs_h100_peak": mfu})
    print(f"{stage['stage']:45s} measured {seconds or float('nan'):8.1f} s, projected {projected:8.1f} s, "
          f"implied MFU {mfu or float('nan'):.1%}")
out.write_text(json.dumps({"stages": rows, "metrics": metrics}, indent=1, default=float))
PY
echo "== done ($(( $(date +%s) - start ))s); failed parts: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
