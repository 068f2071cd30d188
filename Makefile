# Two commands for a fresh clone (see README): `make demo` and `make test`. Both create .venv and install
# requirements.txt on first use (and again whenever requirements.txt changes).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: demo test test-all bench clean-venv

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

## Run the whole pipeline on the embedded default dataset, then show the metrics.
demo: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

## Run the test suite (slow cases deselected; `make test-all` runs them too).
test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

## Benchmarks (print numbers; record them in BENCHMARKS.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_render.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_prepare.py

clean-venv:
	rm -rf $(VENV)
