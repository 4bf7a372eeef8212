#!/usr/bin/env bash
# Build the CelebA models that cfe may not ship (CelebA's licence forbids redistributing
# checkpoints trained on its images): celeba-mouth (Mouth_Slightly_Open, the seeds' task) and
# celeba-smiling, each with its Mirror-CFE decoder, VAE (+ probes) and oracle; celeba-mouth
# also gets GCI's conditional VAE. They go to $CFE_WEIGHTS_DIR (default ~/.cache/cfe/weights),
# never into this repository, where `cfe models` and `--model celeba-mouth` find them.
#
# Usage: CFE_DATA_DIR=../shared/datasets bash scripts/train_celeba.sh [mouth|smiling|all] [--device cuda]
# CPU time on 2 cores (measured 2026-11-23/24): mouth ~3.8 h, smiling ~1.4 h (needs mouth first).
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH="${1:-all}"
shift || true
DEV=("$@")
CELEBA_DIR="${CFE_WEIGHTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cfe/weights}"
mkdir -p "$CELEBA_DIR"
M="$CELEBA_DIR/celeba-mouth"
S="$CELEBA_DIR/celeba-smiling"

if [[ "$WHICH" == mouth || "$WHICH" == all ]]; then
  cfe train-clf --dataset celeba:Mouth_Slightly_Open --epochs 25 --out "$M" "${DEV[@]}"
  cfe train-gen --model "$M" --method vae --epochs 10 "${DEV[@]}"
  cfe train-gen --model "$M" --method cvae --epochs 10 "${DEV[@]}"   # GCI's conditional generator
  cfe train-gen --model "$M" --method mirror --epochs 3 "${DEV[@]}"
  cfe train-clf --dataset celeba:Mouth_Slightly_Open --arch convnet --seed 1 --epochs 20 --oracle --out "$M" "${DEV[@]}"
fi
if [[ "$WHICH" == smiling || "$WHICH" == all ]]; then
  # warm start from the mouth classifier (same faces, related features), 8 epochs
  cfe train-clf --dataset celeba:Smiling --init "$M/classifier.safetensors" --epochs 8 --lr 1e-3 --out "$S" "${DEV[@]}"
  cfe train-gen --model "$S" --method mirror --epochs 3 "${DEV[@]}"
  cfe train-gen --model "$S" --method vae --epochs 10 "${DEV[@]}"
  cfe train-clf --dataset celeba:Smiling --arch convnet --seed 1 --epochs 20 --oracle --out "$S" "${DEV[@]}"
fi
