"""Benchmark models built from a config, with random weights: no hub needed.

``python -m bench.models gpt2-medium DIR`` writes a GPT-2-medium-shaped model (24 layers,
d_model 1024, d_mlp 4096, 16 heads, 1024 positions; GELU MLP like the paper's model) to ``DIR``,
with the embedded model's tokenizer (so the shipped prompts tokenize as usual; the vocabulary is
SmolLM2's 49,152 tokens, not GPT-2's 50,257). ``actwh`` and the benchmarks load it like any local
model directory. Speed is what it is for: its weights are random, its text is noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from actwh.models.loading import shipped_model_dir

SHAPES = {
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_inner=4096, n_head=16, n_positions=1024),
}


def build(shape: str, path: Path) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(shipped_model_dir())
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **SHAPES[shape],
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    print(build(args.shape, args.path))


if __name__ == "__main__":
    main()
