# Two set-up commands (see README): `make train` runs the main job, `make test` runs the tests.
# Both create .venv on first use from the tested pins in constraints.txt (torch==2.13.0 CPU wheel).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ATTOK_DATA_ROOT ?= ../shared/data
export ATTOK_DATA_ROOT

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The main job in a reduced form (2 iterations, 16 validation images) before the tests, in this checkout: a test that
# depends on a clean tree (no earlier run's folders or weights) fails here, not on a user's machine.
smoke: $(VENV)/.installed
	$(PY) -m monai.bundle run --config_file bundles/fundus_dr/configs/train.json --epochs 1 --epoch_length 2 \
		--limit_val 16 --tsne False

test: smoke
	$(PY) -m pytest -q

# The main job takes AVX2 code paths (torch, MKL, oneDNN) on any x86-64 CPU, so an AVX-512 CPU ends where an AVX2-only
# one does (measured on AMD EPYCs: the README's figure on both; docs/study_defaults.md, round 11; an Intel Xeon under
# the same pins ended at 58.3 / 43.0, README). `make train KERNEL_PINS=` runs
# the CPU's own code paths.
KERNEL_PINS ?= $(if $(filter x86_64 amd64,$(shell uname -m)),ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)

train: $(VENV)/.installed
	$(KERNEL_PINS) $(PY) -m monai.bundle run --config_file bundles/fundus_dr/configs/train.json

# The compact generalist (the start of the docs' generalist rows): one thread and the AVX2 pins, so the folder
# runs/generalist/model is generalist E bit for bit on the AMD EPYC kinds measured (model.pt MD5 in docs/benchmarks.md;
# an Intel Xeon gave other weights, README; measured: 37 min wall
# beside two bundle runs on 2 cores, 24 min of CPU).
generalist: $(VENV)/.installed
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(KERNEL_PINS) $(PY) -m attok_monai.bundle run \
		--config bundles/compact_generalist --output_dir runs/generalist

lint: $(VENV)/.installed
	$(PY) -m ruff check attok_monai tests benchmarks

.PHONY: install smoke test train generalist lint
