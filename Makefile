# One-command set-up: `make test` and `make demo` create .venv from the project's own files if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.afnext-installed
# PyTorch is installed first and pinned: 2.13.0 is a CPU build on the project's CI machines (a file on
# their disk, minutes to install instead of the GB of CUDA libraries PyPI's default build pulls).
# On a GPU machine: make test TORCH=torch==2.14.1 (or any build satisfying pyproject.toml).
TORCH ?= torch==2.13.0
# What `make test` runs (CI too): every test but the GPU ones, on 2 pytest workers (pytest-xdist) with one
# OpenMP thread each (torch's default of one thread per core slows down 100x when processes share cores).
TESTS ?= tests
JOBS ?= 2
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: test test-fast test-slow test-gpu demo lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(JOBS) -m "not gpu" -q --durations=15 $(TESTS)

test-fast: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "not slow and not gpu" -q $(TESTS)

test-slow: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "slow and not gpu" -q $(TESTS)

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu -q $(TESTS)

demo: $(STAMP)
	$(VENV)/bin/afnext demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) build dist *.egg-info
