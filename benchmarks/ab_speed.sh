#!/usr/bin/env bash
# Speed of two checkouts measured in one run, interleaved (A B A B ...), one thread each:
#   benchmarks/speed.py  (counterfactuals/s per method at batch 64, n = 512, MNIST) and
#   benchmarks/explain_folder.py  (end-to-end `cfe explain FOLDER` on 1,000 MNIST PNGs, files/s).
# Usage: bash benchmarks/ab_speed.sh OLD_CHECKOUT [NEW_CHECKOUT=.] [ROUNDS=2] [OUT=out/ab_speed]
# e.g.   git worktree add /tmp/cfe-old da0afe0 && bash benchmarks/ab_speed.sh /tmp/cfe-old
set -euo pipefail
OLD=$(cd "${1:?usage: ab_speed.sh OLD_CHECKOUT [NEW_CHECKOUT] [ROUNDS] [OUT]}" && pwd)
NEW=$(cd "${2:-.}" && pwd)
ROUNDS=${3:-2}
OUT=$(mkdir -p "${4:-out/ab_speed}" && cd "${4:-out/ab_speed}" && pwd)
PY=${PY:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for r in $(seq 1 "$ROUNDS"); do
  for side in old new; do
    repo=$OLD; [ "$side" = new ] && repo=$NEW
    (cd "$repo" && PYTHONPATH="$repo" $PY benchmarks/speed.py --methods mirror,attack,pgd --batch-sizes 64 --n 512 --no-video \
        --json "$OUT/speed-$side-$r.json" > /dev/null)
    $PY "$HERE/explain_folder.py" --repo "$repo" --n 1000 --json "$OUT/folder-$side-$r.json" > /dev/null
    echo "round $r $side done"
  done
done
$PY - "$OUT" "$ROUNDS" <<'PY'
import json, sys
from pathlib import Path
out, rounds = Path(sys.argv[1]), int(sys.argv[2])
for side in ("old", "new"):
    speed = [json.loads((out / f"speed-{side}-{r}.json").read_text()) for r in range(1, rounds + 1)]
    folder = [json.loads((out / f"folder-{side}-{r}.json").read_text()) for r in range(1, rounds + 1)]
    cells = {}
    for doc in speed:
        for row in doc["rows"]:
            cells.setdefault(row["method"], []).append(row["cf_per_second"])
    fps = [f["files_per_second"] for f in folder]
    print(side, {m: [round(v, 1) for v in vs] for m, vs in cells.items()}, "folder files/s", fps)
PY
