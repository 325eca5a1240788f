#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_check.py needs on the lent GPU machine (Python 3.12, x86-64, no network,
# torch/transformers/peft/numpy preinstalled, but no monai, ignite, pydicom or mlflow) into .whl/ (git-ignored),
# then check that what travels stays under the device tool's 64 MiB limit.
#
#   bash benchmarks/gpu_wheels.sh            # fetch into .whl/ and check the total
#   bash benchmarks/gpu_wheels.sh --no-mlflow   # only what the training path needs (the check then logs nothing)
#
# Versions are the ones this project's CPU test suite runs with, so the GPU run uses the code paths tested here.
# Each wheel is fetched with --no-deps: every dependency that the GPU image lacks is named below.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
LIMIT_MIB=${LIMIT_MIB:-64}

# the training path: bundle config (MONAI + ignite), AttTok package imports (pydicom), the HF versions tested here
CORE=(
  monai==1.6.1 pytorch-ignite==0.5.5 pydicom==3.0.2 transformers==5.23.0 peft==0.21.2 regex==2026.11.15
  typing-extensions==4.16.0
)
# MLflow's client with a local sqlite store (mlflow-skinny and the dependencies that the GPU image lacks)
MLFLOW=(
  mlflow-skinny==3.17.2 cachetools==7.3.2 fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.3 pydantic-core==2.50.4
  annotated-types==0.8.0 typing-inspection==0.4.5 gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3
  importlib-metadata==9.1.0 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2 python-dotenv==1.2.4 sqlparse==0.6.1 uvicorn==0.54.0
  sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 databricks-sdk==0.156.0 cryptography==50.0.2 cffi==2.1.1
  pycparser==3.12
)
WANT=("${CORE[@]}")
if [[ "${1:-}" != "--no-mlflow" ]]; then WANT+=("${MLFLOW[@]}"); fi

mkdir -p "$DEST"
PLAT=()
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do PLAT+=(--platform "$p"); done
for spec in "${WANT[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
    -d "$DEST" "$spec"
done

# one version of each distribution (two stop the whole install there)
dups=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [[ -n "$dups" ]]; then echo "two versions of: $dups (remove the old wheels from $DEST)" >&2; exit 1; fi

total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "wheels: $(ls "$DEST"/*.whl | wc -l) files, $(mib "$total") MiB; tracked files: $(mib "$tree") MiB; limit ${LIMIT_MIB} MiB"
if (( total + tree > LIMIT_MIB * 1048576 )); then
  echo "over the ${LIMIT_MIB} MiB that a device call carries: drop the MLflow set (--no-mlflow)" >&2
  exit 1
fi
