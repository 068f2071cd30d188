# Two commands for a fresh clone (see README): `make demo` and `make test`. Both create .venv and install
# requirements.txt on first use (and again whenever requirements.txt changes).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install demo test bench clean-venv

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-compile -r requirements.txt
	@# the .pyc files pip would write one by one, on every core at once (some packages ship files that do not compile
	@# on this Python, e.g. templates and test data: pip skips them silently, and so does this), the packages' own
	@# test suites left out (pandas/tests, numba/tests, ...: never imported; 24 -> 18 s on 2 cores)
	@$(BIN)/python -m compileall -q -j 0 -x '/tests?/' $(VENV)/lib > /dev/null 2>&1 || true
	@touch $@

## Create .venv and install requirements.txt (demo and test do this first when needed).
install: $(STAMP)

## Run the whole pipeline on the embedded default dataset, then print the heads' accuracies and write the report
## (report/index.html: Fig. 6, confusion matrices, previews).
demo: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/maivar report

## Lint (ruff, configured in pyproject.toml), then the whole test suite on every core (pytest-xdist; a file's
## tests stay in one worker, so its module fixtures are built once; the files in tests/conftest.py's order, longest
## first: xdist's own reorder, by number of tests, is off). `python -m pytest` alone runs it in one process.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder

## Benchmarks (print numbers; record them in BENCHMARKS.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_render.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_prepare.py

clean-venv:
	rm -rf $(VENV)
