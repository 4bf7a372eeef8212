#!/usr/bin/env bash
# Baseline outputs for the cfe_cli refactor check (recorded at commit da0afe0).
# Usage: bash commands.sh OUT_ROOT [REPO]
#   OUT_ROOT  folder the outputs go to (explain-mirror/, explain-attack/, explain-pgd/, animate-mirror/, eval/)
#   REPO      checkout whose code runs (default: /work/wt-docs, the code of da0afe0; pass the refactored checkout here)
# Then: python benchmarks/compare_outputs.py /work/baseline OUT_ROOT
# (copy of /work/baseline/commands.sh, the script that made the baseline /work/baseline)
set -euo pipefail
ROOT=${1:?usage: commands.sh OUT_ROOT [REPO]}
REPO=${2:-/work/wt-docs}
PY=${PY:-/work/venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export CFE_DATA_DIR=${CFE_DATA_DIR:-/work/shared/datasets}
mkdir -p "$ROOT"
cd "$REPO"
INPUTS="mnist:test:0 mnist:test:1 mnist:test:2 mnist:test:3 mnist:test:7"
# `explain` has no --frames option (only `animate` has); --video renders the default 100 frames.
$PY -m cfe_cli explain $INPUTS --model mnist --method mirror --video --device cpu --out "$ROOT/explain-mirror"
$PY -m cfe_cli explain $INPUTS --model mnist --method attack --device cpu --out "$ROOT/explain-attack"
$PY -m cfe_cli explain $INPUTS --model mnist --method pgd --device cpu --out "$ROOT/explain-pgd"
$PY -m cfe_cli animate $INPUTS --model mnist --method mirror --frames 8 --size 160 --device cpu --out "$ROOT/animate-mirror"
$PY -m cfe_cli evaluate --model mnist --method mirror,attack,pgd --pairs 8:3,3:8 --n 20 --device cpu --out "$ROOT/eval"
