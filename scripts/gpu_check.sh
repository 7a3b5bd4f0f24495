#!/usr/bin/env bash
# GPU check for a fresh GPU machine without network (README, "GPU recipe"): unpack the carried CIFAR-10 copy,
# smoke-test the CUDA paths, measure throughput, and run a shortened CIFAR-10 pipeline (about 7 minutes on one
# H100), writing JSON and the report to $OUT (default runs/gpu_check).
#
#   here:         mkdir -p carry && cp ../shared/data/cifar10/{cifar10-jpeg.npz,unpack.py} carry/
#   GPU machine:  bash scripts/gpu_check.sh          (carry/ travels with the working tree; it is git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_check}
RUN=${RUN:-runs/gpu_check_runs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/log.txt") 2>&1
start=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - start ))s)"; }

stamp "unpack CIFAR-10"
[ -f data/cifar10/train.npz ] || $PY carry/unpack.py data/cifar10
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"

stamp "smoke tests on the GPU machine (CPU-sized tests, CUDA visible)"
$PY -m pytest -q -x tests/test_diffusion.py tests/test_unet.py tests/test_evaluator.py -p no:cacheprovider

stamp "throughput"
$PY -m bench.bench_diffusion --device cuda --out "$OUT/bench_diffusion.json"
$PY -m bench.bench_gan --device cuda --out "$OUT/bench_gan.json"

stamp "shortened CIFAR-10 pipeline"
SHORT=(--run.out_dir="$RUN" --clip.steps=400 --evalnet.epochs=4 --diffusion.steps=3000
       --diffusion.sample_every=0 --customize.steps=200 --classifier.n_images=450
       --gan.steps=1500 --transfer.steps=500 --transfer.selfinit_steps=200)
$PY train.py --preset cifar10 "${SHORT[@]}"
$PY evaluate.py classify --preset cifar10 "${SHORT[@]}" --out "$OUT/classifier.json"
$PY evaluate.py table --preset cifar10 --run.out_dir="$RUN" > "$OUT/tables.md"
cp "$RUN/cifar10/report.html" "$OUT/report.html"
$PY - "$RUN/cifar10" "$OUT/summary.json" <<'PY'
import json, sys
from pathlib import Path
run, out = Path(sys.argv[1]), sys.argv[2]
summary = {p.parent.name if p.name == "metrics.json" else p.stem: json.loads(p.read_text())
           for p in sorted(run.glob("*/metrics.json")) + sorted(run.glob("drift/*.json"))}
Path(out).write_text(json.dumps(summary, indent=1, default=float))
PY
stamp "done"
