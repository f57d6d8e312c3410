# The two commands of the README: `make demo` and `make test`.
# Each sets up .venv (once; again only when pyproject.toml changes) and then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := tests/data/s2_l2a_worldcereal_118x4x64x64.nc

.PHONY: setup demo test lint bench notebooks clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	# the CPU build of torch (the torch extra), so that the tests of eocube.torch run
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# compile eocube's Numba kernels once, here, rather than in the first command
	$(BIN)/eocube warmup
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/eocube demo $(SAMPLE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check eocube tests benchmarks notebooks
	$(BIN)/mypy

# run the notebooks and commit them with their outputs (and docs/images/)
notebooks: $(STAMP)
	$(BIN)/python notebooks/run.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.codec_core

clean:
	rm -rf $(VENV) build dist *.egg-info
