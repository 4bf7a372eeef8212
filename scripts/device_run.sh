#!/usr/bin/env bash
# One prepared run for a lent GPU machine (the `device` tool: ~15 minutes of device time per
# session, one command of at most 10 minutes, nothing installed there but PyTorch & co.).
# It checks the CUDA path against the CPU, times the engine on CUDA, and builds the CelebA
# mouth model at 128² (classifier, oracle, Mirror-CFE decoder) with time-boxed training.
#
#   bash scripts/device_run.sh stage        # here: copy MNIST + CelebA into local/devdata (~54 MB)
#   run tool: command "bash scripts/device_run.sh run", carry ["local/devdata"], timeout_s 580
#   bash scripts/device_run.sh unpack DIR   # here: the returned CelebA weights -> $CFE_WEIGHTS_DIR/celeba-mouth-128
#   SMOKE=1 bash scripts/device_run.sh run  # here, on CPU: every step for a few seconds (checks this script)
#
# $OUT gets at most 8 files (the tool's limit): log.txt, parity.json, speed_cuda.json,
# celeba_eval.json, celeba_panel.png and the three CelebA .safetensors. CelebA models are
# never committed (licence); `unpack` puts them where `cfe models` finds them.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-run}"
DATA=local/devdata

if [[ "$MODE" == stage ]]; then
  SRC="${CFE_DATA_DIR:?set CFE_DATA_DIR to the datasets folder}"
  mkdir -p "$DATA"
  cp -r "$SRC/mnist" "$SRC/celeba" "$DATA/"
  du -sh "$DATA"
  exit 0
fi
if [[ "$MODE" == unpack ]]; then
  FROM="${2:?give the folder the returned files are in}"
  TO="${CFE_WEIGHTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cfe/weights}/celeba-mouth-128"
  mkdir -p "$TO"
  cp "$FROM"/classifier.safetensors "$FROM"/mirror.safetensors "$FROM"/oracle.safetensors "$TO/"
  echo "-> $TO"
  exit 0
fi
[[ "$MODE" == run ]] || { echo "usage: $0 stage|run|unpack DIR" >&2; exit 2; }

OUT="${OUT:-/tmp/cfe_device_out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONPATH="$PWD" CFE_DATA_DIR="$PWD/$DATA" PYTHONUNBUFFERED=1 COLUMNS=200
export CFE_WEIGHTS_DIR=/tmp/cfe_weights
W=/tmp/cfe_work
M="$CFE_WEIGHTS_DIR/celeba-mouth-128"
rm -rf "$W" "$M" && mkdir -p "$W" "$M"
CFE=(python3 -m cfe_cli)
log() { echo "[$(date +%T) +${SECONDS}s] $*"; }

if [[ "${SMOKE:-0}" == 1 ]]; then  # CPU, a few seconds per step: checks the script, not the numbers
  DEV=cpu; T_S1=4; T_S2=4; CLF=(--epochs 1 --max-steps 3); ORC=(--epochs 1 --max-steps 3)
  SPEED=(--batch-sizes 1,8 --n 16 --methods mirror,pgd); NEV=4
else
  DEV=cuda; T_S1=60; T_S2=150; CLF=(--epochs 30); ORC=(--epochs 20)
  SPEED=(--batch-sizes 1,256,4096 --n 4096 --methods mirror,attack,pgd); NEV=100
fi

log "machine"
nvidia-smi -L 2>/dev/null || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

log "1. CUDA vs CPU: the same explanation and the MNIST six-pair evaluation"
timeout 90 "${CFE[@]}" explain mnist:test:12 --model mnist --target 3 --device "$DEV" --out "$W/e_dev"
timeout 90 "${CFE[@]}" explain mnist:test:12 --model mnist --target 3 --device cpu --out "$W/e_cpu"
timeout 120 "${CFE[@]}" evaluate --model mnist --method mirror --pairs 8:3,3:8,9:4,4:9,6:5,5:6 --n 200 \
    --no-realism --device "$DEV" --out "$W/ev_mnist"
python3 - "$W" "$OUT/parity.json" <<'EOF'
import json, sys
w, out = sys.argv[1], sys.argv[2]
doc = {}
try:
    a = json.load(open(f"{w}/e_dev/metrics.json"))["results"][0]
    b = json.load(open(f"{w}/e_cpu/metrics.json"))["results"][0]
    keys = ("source_pred", "cf_pred", "first_cfe_k", "valid", "l1", "reflection_conf", "seconds")
    doc["explain_mnist_test_12"] = {"device": {k: a.get(k) for k in keys}, "cpu": {k: b.get(k) for k in keys}}
except (OSError, KeyError, IndexError, ValueError) as e:
    doc["explain_error"] = repr(e)
try:
    ev = json.load(open(f"{w}/ev_mnist/metrics.json"))
    doc["evaluate_mnist_6pairs_n200"] = {"device": ev["device"], "overall": ev["overall"]}
except (OSError, KeyError, ValueError) as e:
    doc["evaluate_error"] = repr(e)
json.dump(doc, open(out, "w"), indent=2)
print(json.dumps(doc)[:2000])
EOF

log "2. speed on $DEV (MNIST, fp32; no video: imageio-ffmpeg is not on the device machine)"
timeout 120 python3 benchmarks/speed.py --model mnist "${SPEED[@]}" --device "$DEV" --no-video \
    --json "$OUT/speed_cuda.json"

log "3a. CelebA closed <-> slightly opened mouth at 128²: classifier"
timeout 200 "${CFE[@]}" train-clf --dataset celeba:Mouth_Slightly_Open --size 128 "${CLF[@]}" --device "$DEV" --out "$M"
log "3b. oracle"
timeout 90 "${CFE[@]}" train-clf --dataset celeba:Mouth_Slightly_Open --size 128 --arch convnet --seed 1 "${ORC[@]}" \
    --oracle --device "$DEV" --out "$M"
# the celeba-mouth recipe of scripts/train_celeba.sh, with time budgets instead of epochs, and the wide decoder with
# bilinear SPE (at 64² on CPU, 450 steps each: no colour bands where the narrow one drew them; docs/models/celeba-mouth.md);
# 192 channels, not the 256 measured there, so that its bfloat16 copy (13.2 MiB at 128²) fits the 16 MiB per returned file
log "3c. Mirror-CFE decoder: ${T_S1} s + ${T_S2} s"
timeout $((T_S1 + 120)) "${CFE[@]}" train-gen --model "$M" --method mirror --skip-stem --csp-rho 0.3,0.8 --disc class \
    --width 192 --min-width 64 --spe-upsample bilinear \
    --epochs 500 --precision bf16 --time-limit "$T_S1" --device "$DEV" --out "$W/mirror_s1.safetensors"
timeout $((T_S2 + 120)) "${CFE[@]}" train-gen --model "$M" --method mirror --init "$W/mirror_s1.safetensors" --disc class \
    --lambda-adv 2 --k-cfe-share 0.5 --epochs 500 --schedule cosine --precision bf16 --lr 2e-4 --lr-d 8e-4 \
    --no-disc-rec --time-limit "$T_S2" --device "$DEV"
log "3d. evaluate (n = $NEV per direction) and one panel"
P="closed mouth:slightly opened mouth,slightly opened mouth:closed mouth"
timeout 120 "${CFE[@]}" evaluate --model "$M" --method mirror --pairs "$P" --n "$NEV" --no-realism --device "$DEV" \
    --out "$W/ev_celeba" && cp "$W/ev_celeba/metrics.json" "$OUT/celeba_eval.json"
timeout 60 "${CFE[@]}" explain celeba:Mouth_Slightly_Open:test:7 --model "$M" --device "$DEV" --out "$W/ex_celeba" \
    && cp "$(ls "$W"/ex_celeba/no7_*.png | grep -v '_cf\|_reflection' | head -1)" \
    "$OUT/celeba_panel.png"
cp "$M"/classifier.safetensors "$M"/oracle.safetensors "$OUT/" 2>/dev/null
# the decoder as bfloat16 (same metadata; loading casts it back to float32): fp32 would be over 16 MiB
python3 - "$M/mirror.safetensors" "$OUT/mirror.safetensors" <<'EOF' || true
import sys
import torch
from safetensors import safe_open
from safetensors.torch import save_file
with safe_open(sys.argv[1], "pt") as f:
    meta = f.metadata()
    state = {k: f.get_tensor(k).to(torch.bfloat16) if f.get_tensor(k).is_floating_point() else f.get_tensor(k)
             for k in f.keys()}
save_file(state, sys.argv[2], metadata=meta)
EOF
ls -la "$OUT"
log "done"
