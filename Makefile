# mdslam: the two commands of the README, and a few helpers.
#   make book   set up .venv, install everything, build the book (the main job)
#   make test   set up .venv if needed, run the test suite
# Book helpers: make chapter CH=01 [BOOK_ARGS="-p ruwe_max 1.2"], make render,
# make notebooks (jupytext .md -> .ipynb for Jupyter/papermill), make test-browser.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The offline mirror of real public data; downloads go to the cache otherwise.
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
export MDSLAM_DATA_MIRROR ?= $(SHARED_DATA)
endif
export MPLBACKEND ?= Agg
PYTEST_ARGS ?= -m "not slow"
BOOK_ARGS ?=
CH ?= 01

.PHONY: install book chapter render notebooks test test-core test-browser lint clean

$(BIN)/mdslam: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# MIST bolometric corrections for the isochrones (datasets: mist_bolometric_corrections):
	# only this package's data file is read, so not its heavy dependencies (numba, dynesty, ...)
	$(BIN)/python -m pip install --quiet --no-deps "astrolachesis==1.0.9"
	# PARSEC's own Gaia magnitudes (1-500 Myr), only for the check of the MIST colours in tests
	$(BIN)/python -m pip install --quiet --no-deps "stelpar==1.0.0"
	touch $@

install: $(BIN)/mdslam

book: install
	$(BIN)/mdslam book $(BOOK_ARGS)

# execute one chapter (papermill), then re-render the book with it
chapter: install
	$(BIN)/mdslam book --only $(CH) $(BOOK_ARGS)

# render the executed chapters already in _build/executed (no execution)
render: install
	$(BIN)/mdslam book --render-only $(BOOK_ARGS)

# the paired .ipynb of every chapter (generated, gitignored), for Jupyter and papermill
notebooks: install
	$(BIN)/jupytext --sync notebooks/[0-9][0-9]_*.md

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the core alone: a fresh venv with `pip install .` (no extras) runs the core's tests
CORE_TESTS := tests/test_core_install.py tests/test_flags.py tests/test_checks.py tests/test_sampling.py \
              tests/test_relations.py tests/test_validation.py tests/test_slam.py
test-core:
	rm -rf .venv-core
	$(PYTHON) -m venv .venv-core
	.venv-core/bin/python -m pip install --quiet . pytest
	cd tests/.. && .venv-core/bin/python -m pytest -m "not slow" -p no:cacheprovider $(CORE_TESTS)

# headless Chromium over the built book (run `make book` first)
test-browser: install
	MDSLAM_BOOK_HTML=$(CURDIR)/_build/html $(BIN)/python -m pytest tests/test_book.py -m browser

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf _build .pytest_cache
