#!/usr/bin/env bash
# Retrain every model with the commands recorded in their metadata (CPU: ~5 h on 2 cores).
# Usage: CFE_DATA_DIR=../shared/datasets bash scripts/train_all.sh [--device cuda]
# CelebA models go to $CFE_WEIGHTS_DIR (default ~/.cache/cfe/weights), never into this repository:
# CelebA's licence forbids redistributing anything derived from its images, checkpoints included.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=("$@")
CELEBA_DIR="${CFE_WEIGHTS_DIR:-$HOME/.cache/cfe/weights}"

# MNIST: classifier, Mirror-CFE decoder, VAE + attribution probes, oracle
cfe train-clf --dataset mnist --out weights/mnist "${DEV[@]}"
cfe train-gen --model mnist --method mirror --epochs 15 "${DEV[@]}"
cfe train-gen --model mnist --method vae "${DEV[@]}"
cfe train-clf --dataset mnist --arch convnet --seed 1 --epochs 10 --oracle --out weights/mnist "${DEV[@]}"

# BloodMNIST: classifier, oracle, Mirror-CFE decoder
cfe train-clf --dataset bloodmnist --out weights/bloodmnist "${DEV[@]}"
cfe train-clf --dataset bloodmnist --arch convnet --seed 1 --epochs 15 --oracle --out weights/bloodmnist "${DEV[@]}"
cfe train-gen --model bloodmnist --method mirror --epochs 6 "${DEV[@]}"
cfe train-gen --model bloodmnist --method vae --epochs 10 "${DEV[@]}"

# Fashion-MNIST: 12 epochs, then two fine-tuning stages (91.71 % -> 91.89 % -> 92.68 %); oracle
cfe train-clf --dataset fashion-mnist --augment shift-flip --out weights/fashion-mnist "${DEV[@]}"
cp weights/fashion-mnist/classifier.safetensors /tmp/fmnist_stage1.safetensors
cfe train-clf --dataset fashion-mnist --init /tmp/fmnist_stage1.safetensors --epochs 4 --lr 5e-4 --seed 1 \
    --augment shift-flip --out weights/fashion-mnist "${DEV[@]}"
cp weights/fashion-mnist/classifier.safetensors /tmp/fmnist_stage2.safetensors
cfe train-clf --dataset fashion-mnist --init /tmp/fmnist_stage2.safetensors --epochs 6 --lr 1e-3 --label-smoothing 0.1 \
    --batch-size 256 --seed 2 --out weights/fashion-mnist "${DEV[@]}"
cfe train-clf --dataset fashion-mnist --arch convnet --seed 1 --epochs 5 --oracle --out weights/fashion-mnist "${DEV[@]}"
cfe train-gen --model fashion-mnist --method vae --epochs 4 "${DEV[@]}"
cfe train-gen --model fashion-mnist --method mirror --epochs 3 "${DEV[@]}"

# CelebA (64², outside the repository)
cfe train-clf --dataset celeba:Mouth_Slightly_Open --epochs 25 --out "$CELEBA_DIR/celeba-mouth" "${DEV[@]}"
cfe train-gen --model "$CELEBA_DIR/celeba-mouth" --method vae --epochs 10 "${DEV[@]}"
cfe train-gen --model "$CELEBA_DIR/celeba-mouth" --method cvae --epochs 10 "${DEV[@]}"   # GCI's conditional generator
cfe train-gen --model "$CELEBA_DIR/celeba-mouth" --method mirror --epochs 3 "${DEV[@]}"
cfe train-clf --dataset celeba:Mouth_Slightly_Open --arch convnet --seed 1 --epochs 20 --oracle --out "$CELEBA_DIR/celeba-mouth" "${DEV[@]}"
# Smiling: warm start from the mouth classifier (same faces, related features), 8 epochs
cfe train-clf --dataset celeba:Smiling --init "$CELEBA_DIR/celeba-mouth/classifier.safetensors" --epochs 8 --lr 1e-3 \
    --out "$CELEBA_DIR/celeba-smiling" "${DEV[@]}"
cfe train-gen --model "$CELEBA_DIR/celeba-smiling" --method mirror --epochs 3 "${DEV[@]}"
cfe train-gen --model "$CELEBA_DIR/celeba-smiling" --method vae --epochs 10 "${DEV[@]}"
cfe train-clf --dataset celeba:Smiling --arch convnet --seed 1 --epochs 20 --oracle --out "$CELEBA_DIR/celeba-smiling" "${DEV[@]}"
