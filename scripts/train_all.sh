#!/usr/bin/env bash
# Retrain every shipped model with the commands recorded in their metadata (CPU: ~2.5 h on 2 cores).
# Usage: CFE_DATA_DIR=../shared/datasets bash scripts/train_all.sh [--device cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=("$@")
cfe train-clf --dataset mnist --out weights/mnist "${DEV[@]}"
cfe train-gen --model mnist --method mirror --epochs 15 "${DEV[@]}"
cfe train-gen --model mnist --method vae "${DEV[@]}"
cfe train-clf --dataset mnist --arch convnet --seed 1 --epochs 10 --oracle --out weights/mnist "${DEV[@]}"
cfe train-clf --dataset bloodmnist --out weights/bloodmnist "${DEV[@]}"
# Fashion-MNIST: 12 epochs, then two low-LR fine-tuning stages (the first run ended at 91.71 %)
cfe train-clf --dataset fashion-mnist --out weights/fashion-mnist "${DEV[@]}"
cp weights/fashion-mnist/classifier.safetensors /tmp/fmnist_stage1.safetensors
cfe train-clf --dataset fashion-mnist --init /tmp/fmnist_stage1.safetensors --epochs 4 --lr 5e-4 --seed 1 \
    --out weights/fashion-mnist "${DEV[@]}"
