# One-command set-up: `make test` and `make demo` create .venv from the project's own files if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.afnext-installed
# PyTorch and Triton are pinned here, not in the constraints file, because their builds depend on the machine:
# torch 2.13.0 is a CPU build on the project's CI machines (a file on their disk, seconds to install instead of
# the GB of CUDA libraries PyPI's default build pulls), and Triton runs the kernel tests in its interpreter.
# On a GPU machine: make test TORCH=torch==2.14.1 (torch then picks the Triton it was built with).
TORCH ?= torch==2.13.0 triton==3.9.0
# Every other package is installed at the tested version in CONSTRAINTS (pyproject.toml keeps open ranges).
# Refresh it on purpose: `make lock` runs the suite on the newest versions allowed (`make test-latest`) and, if it
# passes, writes what it installed there. CONSTRAINTS= installs the newest versions allowed.
CONSTRAINTS ?= .ci/constraints.txt
LATEST_VENV ?= .venv-latest
LATEST_TORCH ?= torch==2.13.0
# What `make test` runs (CI too): every test but the GPU ones, on 2 pytest workers (pytest-xdist; a worker that
# runs out of tests takes queued ones from the other, so one long test at the end does not leave a core idle)
# with one OpenMP thread each (torch's default of one thread per core slows down 100x when processes share cores).
TESTS ?= tests
JOBS ?= 2
export OMP_NUM_THREADS = 1
export MKL_NUM_THREADS = 1
XDIST := -n $(JOBS) --dist worksteal

.PHONY: test test-fast test-slow test-gpu test-latest lock demo lint format clean

# Installed with uv (from PyPI, into the venv): it resolves and installs the same versions as pip, and compiles
# the bytecode on both cores, in 27 s where pip took 98 s on a 2-core machine (1.8 GB of wheels). uv does not read
# pip's configuration, so the wheel folders pip is configured to look in (`PIP_FIND_LINKS`, `pip config get
# global.find-links`; e.g. where the CPU torch file lies) are passed.
FIND_LINKS ?= $(sort $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV := $(VENV)/bin/uv

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv
	$(UV) pip install --quiet --compile-bytecode --python $(PY) $(addprefix --find-links ,$(FIND_LINKS)) \
		$(addprefix --constraint ,$(CONSTRAINTS)) $(TORCH) -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(XDIST) -m "not gpu" -q --durations=15 $(TESTS)

test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow and not gpu" -q $(TESTS)

test-slow: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "slow and not gpu" -q $(TESTS)

test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu -q $(TESTS)

# The whole suite on the newest versions pyproject.toml allows, in a venv of its own made afresh (torch stays
# LATEST_TORCH: the newest allowed, 2.14.1, is a multi-GB CUDA build; set LATEST_TORCH=torch==2.14.1 to take it).
test-latest:
	rm -rf $(LATEST_VENV)
	$(MAKE) test VENV=$(LATEST_VENV) CONSTRAINTS= TORCH="$(LATEST_TORCH)"

# Pin what test-latest installed and tested (torch, triton and the CUDA libraries stay with TORCH).
lock: test-latest
	$(LATEST_VENV)/bin/uv pip freeze --python $(LATEST_VENV)/bin/python --exclude-editable \
		| grep -v -i -E '^(torch|triton|nvidia-|cuda-|pip|uv)==' \
		| sed '1i # Tested versions CI installs (make lock writes this file after make test-latest passed).' \
		> $(CONSTRAINTS)
	@$(LATEST_VENV)/bin/uv pip freeze --python $(LATEST_VENV)/bin/python | grep -i -E '^(torch|triton)==' \
		| sed 's/^/tested with (pinned by TORCH, not in the constraints): /'

demo: $(STAMP)
	$(VENV)/bin/afnext demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(LATEST_VENV) build dist *.egg-info
