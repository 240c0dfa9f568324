#!/usr/bin/env bash
# The prepared check for a lent GPU (device tool), from the repo root there:
#   bash bench/gpu_device_run.sh            (carry .gpu, made by `python bench/gpu_pack.py pack`)
# Fine-tunes the sentiment branch K=6 and K=12 on one GPU without Ray (`ecrec train --local`),
# after timing the encoder eager vs CUDA graphs. Everything lands in $OUT: log.txt, encoder.json,
# metrics.jsonl and the branches split in 15 MB parts (8 files, the tool's limit; `cat` joins them).
# DRY=1 runs a small version on a CPU (with Ray absent or blocked) in about 9 minutes.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 ECREC_PROGRESS=0
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
HOME_DIR=/tmp/ecrec-home; export ECREC_HOME=$HOME_DIR
PY=${PY:-python3}
exec > >(tee "$OUT/log.txt") 2>&1
date; nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
$PY bench/gpu_pack.py unpack .gpu "$HOME_DIR" || exit 1
EXTRA=()
if [ "${DRY:-0}" = 1 ]; then
  EXTRA=(use_gpu=false extra_zh_binary=200 zh_binary_dev=50 heldout_per_category=40 max_length=32 train_limit=60
         epochs=1)
fi
if [ "${SKIP_ENCODER:-0}" != 1 ]; then
echo "== encoder eager vs CUDA graphs"
timeout 130 $PY bench/gpu_encoder.py --model-dir "$HOME_DIR/models/multilingual-e5-small" --out "$OUT/encoder.json" ${GPU_ENCODER_ARGS:-}
echo "rc=$?"
fi
BUDGET=${BUDGET:-570}   # seconds for the whole script: K=12 gets what K=6 and the encoder leave
for k in 6 12; do
  t=$(( k == 6 ? 200 : BUDGET - SECONDS )); t=$(( t < 30 ? 30 : t )); [ "${DRY:-0}" = 1 ] && t=900
  echo "== sentiment K=$k"
  # `ecrec train sentiment --local ...` without the rest of the CLI (the image lacks pydantic)
  timeout $t $PY -c 'import sys; from argparse import Namespace; from pathlib import Path; from training.cli import _train
k, data, *sets = sys.argv[1:]
_train(Namespace(task="sentiment", config=Path("training/configs/gpu.yaml"), data=Path(data), workers=None,
                 epochs=None, set=[f"branch_layers={k}", *sets], out=Path(f"/tmp/runs/k{k}"),
                 storage=Path("/tmp/runs/storage"), name=f"k{k}", home=None, local=True))' \
    $k "$HOME_DIR/data" "${EXTRA[@]}" > /tmp/runs-k$k.log 2>&1
  echo "rc=$?"; grep -v "it/s\]" /tmp/runs-k$k.log | tail -5
  [ -f /tmp/runs/k$k/metrics.json ] && $PY -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))" \
    /tmp/runs/k$k/metrics.json >> "$OUT/metrics.jsonl"
  [ -f /tmp/runs/k$k/branch.safetensors ] && split -b 15000000 -d /tmp/runs/k$k/branch.safetensors "$OUT/k$k.branch.part"
done
$PY - "$OUT/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    print(m["config"]["branch_layers"], m["epochs_run"], round(m["fit_wall_s"]), {s: {x: round(v, 4) for x, v in m[s].items() if isinstance(v, float)} for s in m if isinstance(m[s], dict) and "accuracy" in m[s]})
PY
date
