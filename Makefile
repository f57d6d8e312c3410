# The two commands of the README: `make demo` and `make test`.
# Each sets up .venv (once; again only when pyproject.toml changes) and then runs.
# CI (.ci/run) adds the docs site and the smoke runs on other Pythons and versions.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := tests/data/s2_l2a_worldcereal_118x4x64x64.nc

# What the smoke runs test on Python 3.12 and 3.13 and at the lowest dependency versions
# (a few minutes each, Numba's compilation included): the public API and its import cost,
# the packaging, every stored payload version, the video codecs, and stores written,
# reopened lazily and read by plain zarr, packed into ZIP files (zipfile differs by Python).
SMOKE_TESTS := tests/test_imports.py tests/test_packaging.py tests/test_compatibility.py \
	tests/test_video.py tests/test_shards.py tests/test_store.py tests/test_metadata.py \
	tests/test_packed.py
SMOKE_DIR := build/smoke
# the lowest versions pyproject.toml allows run on the lowest Python it allows
LOWEST_PYTHON := 3.11

.PHONY: setup demo test test-slow lint docs bench notebooks smoke smoke-py312 smoke-py313 \
	smoke-lowest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,docs]'
	# the CPU build of torch (the torch extra), so that the tests of eocube.torch run
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# uv makes the smoke runs' environments, and resolves the lowest versions
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	# compile eocube's Numba kernels once, here, rather than in the first command
	$(BIN)/eocube warmup
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/eocube demo $(SAMPLE)

# the suite less its end-to-end runs (marked slow); test-slow runs those, CI runs both
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check eocube tests benchmarks notebooks
	$(BIN)/mypy

# the site, into build/site; strict: a broken link, anchor or include fails
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

smoke: smoke-py312 smoke-py313 smoke-lowest

# A fresh environment per run, eocube with the smoke extra, then SMOKE_TESTS. Each keeps
# its own Numba cache: Numba keeps one cache per Python version, which another Numba
# release (the lowest run's) would overwrite under the main environment.
smoke-py312 smoke-py313: smoke-py3%: $(STAMP)
	$(call smoke_run,py3$*,$(shell bash .ci/find-python 3.$* || echo MISSING),)

smoke-lowest: $(STAMP)
	$(call smoke_run,lowest,$(shell bash .ci/find-python $(LOWEST_PYTHON) || echo MISSING),--resolution lowest-direct)

# $(1): name, $(2): interpreter, $(3): uv's resolution options
define smoke_run
	@test "$(2)" != MISSING || { echo "smoke-$(1): no Python for it (see above)" >&2; exit 1; }
	rm -rf $(SMOKE_DIR)/$(1)
	$(BIN)/uv venv --quiet --python $(2) $(SMOKE_DIR)/$(1)
	$(BIN)/uv pip install --quiet --python $(SMOKE_DIR)/$(1)/bin/python $(3) -e '.[smoke]'
	$(BIN)/uv pip freeze --python $(SMOKE_DIR)/$(1)/bin/python \
		| grep -iE '^(numpy|numba|av|xarray|dask|zarr|fsspec|pyarrow|huggingface.hub)=='
	NUMBA_CACHE_DIR=$(CURDIR)/$(SMOKE_DIR)/numba-$(1) \
		$(SMOKE_DIR)/$(1)/bin/python -m pytest -q $(SMOKE_TESTS)
endef

# run the notebooks and commit them with their outputs (and docs/images/)
notebooks: $(STAMP)
	$(BIN)/python notebooks/run.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.codec_core

clean:
	rm -rf $(VENV) build dist *.egg-info
