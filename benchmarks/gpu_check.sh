#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a GPU machine without network: install the wheels carried in .whl/ (made here by
# benchmarks/gpu_wheels.sh) with --no-deps into /tmp/site, then run the 7B check and keep its log beside its results.
#
#   bash benchmarks/gpu_check.sh                      # results in $OUT (the device tool's folder) or ./gpu_check_out
#   bash benchmarks/gpu_check.sh --steps 3 --budget-s 300   # extra arguments go to gpu_check.py
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_check_out}
WHEELS=${WHEELS:-.whl}     # the carried wheels
SITE=${SITE:-/tmp/site}    # where they are installed
mkdir -p "$OUT"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no $WHEELS/*.whl here: run 'bash benchmarks/gpu_wheels.sh' on the machine with network and carry .whl" >&2
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" benchmarks/gpu_check.py --model-config 7b --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
