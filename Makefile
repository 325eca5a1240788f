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

test: $(VENV)/.installed
	$(PY) -m pytest -q

train: $(VENV)/.installed
	$(PY) -m monai.bundle run --config_file bundles/fundus_dr/configs/train.json

lint: $(VENV)/.installed
	$(PY) -m ruff check attok_monai tests benchmarks

.PHONY: install test train lint
