#!/usr/bin/env bash
# The device checks of docs/training-small-gpu.md, as one script (about 5 minutes on one H100):
#  1. bench_memory.py at the derain preset's real crop (128²) on the card;
#  2. a `ptg train --preset derain --max-memory 8GiB` run that must fit, its plan recorded with the card's name.
# Usage: bash benchmarks/memory_gpu.sh [OUT]   (OUT defaults to $OUT or /tmp/ptg-memory-gpu)
set -euo pipefail
OUT=${1:-${OUT:-/tmp/ptg-memory-gpu}}
PY=${PY:-.venv/bin/python}
PTG=${PTG:-.venv/bin/ptg}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
"$PY" benchmarks/bench_memory.py --device cuda --crop 128 --steps 6 --threads 8 --timeout 240 \
    --out "$OUT/memory-cuda.md" | tail -40
"$PTG" data samples --out "$OUT/samples" --task denoise --max-side 512 --force
"$PTG" extract-priors -m "$OUT/samples/manifest.jsonl" --model degradation -o "$OUT/priors.zarr" --device cuda
"$PTG" train --preset derain -m "$OUT/samples/manifest.jsonl" --priors "$OUT/priors.zarr" --out "$OUT/derain-8g" \
    --steps 20 --device cuda --max-memory 8GiB --quiet --set run.checkpoint_every=10 2>&1 | tee "$OUT/derain-8g.txt"
"$PY" - "$OUT/derain-8g" <<'EOF'
import sys, torch
from ptg.ptgrm.train.checkpoint import load_checkpoint
plan = load_checkpoint(f"{sys.argv[1]}/checkpoints/last.pt")["config"]["run"]["memory_plan"]
print(plan["device"], plan["line"], "fits" if plan["peak"] <= plan["budget"] else "DOES NOT FIT")
EOF
