# mdslam: the two commands of the README, and a few helpers.
#   make book   set up .venv, install everything, build the book (the main job)
#   make test   set up .venv if needed, run the test suite
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

.PHONY: install book test lint clean

$(BIN)/mdslam: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/mdslam

book: install
	$(BIN)/mdslam book $(BOOK_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf _build .pytest_cache
