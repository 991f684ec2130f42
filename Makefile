# Set-up and entry points; every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Data: ../shared/data when it exists (read-only there; outputs go under runs/).
SHARED_DATA := $(abspath ../shared/data)
export G2LSTM_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: install run test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
# Triton as on the GPU machines (torch 2.11's): the tests run the CUDA kernels in its CPU interpreter.
	$(PY) -m pip install -q triton==3.6.0
	$(PY) -m pip install -q -e '.[test,cuda,dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m g2lstm demo --out runs/demo

# The whole suite, one worker a core (pytest-xdist): its subprocess end-to-end runs are mostly single-threaded.
test: install
	$(PY) -m pytest -q -n auto

# Everyday work: the suite without the tests marked slow (kills, torchrun, memory, fuzzing); under 2 minutes.
test-fast: install
	$(PY) -m pytest -q -n auto -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src

bench: install
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
