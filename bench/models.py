"""Benchmark models built from a config, with random weights: no hub needed.

``python -m bench.models gpt2-medium DIR`` writes a GPT-2-medium-shaped model (24 layers,
d_model 1024, d_mlp 4096, 16 heads, 1024 positions; GELU MLP like the paper's model) to ``DIR``,
with the embedded model's tokenizer (so the shipped prompts tokenize as usual; the vocabulary is
SmolLM2's 49,152 tokens, not GPT-2's 50,257). ``smollm2-135m`` is the embedded model's own
architecture (Llama: 30 layers, d_model 576, d_mlp 1536, 9 heads, 3 KV heads), for a machine the
embedded model's weights cannot reach. ``--tokenizer DIR`` takes the tokenizer from a directory
instead of the embedded model. ``actwh`` and the benchmarks load the result like any local model
directory. Speed is what it is for: its weights are random, its text is noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

from actwh.models.loading import shipped_model_dir

SHAPES = {
    "gpt2-medium": (
        GPT2Config,
        dict(n_layer=24, n_embd=1024, n_inner=4096, n_head=16, n_positions=1024),
    ),
    "smollm2-135m": (
        LlamaConfig,
        dict(
            num_hidden_layers=30,
            hidden_size=576,
            intermediate_size=1536,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
        ),
    ),
}


def build(shape: str, path: Path, tokenizer_dir: Path | None = None) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or shipped_model_dir())
    torch.manual_seed(0)
    config_class, sizes = SHAPES[shape]
    config = config_class(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **sizes,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("path", type=Path)
    parser.add_argument("--tokenizer", type=Path, help="a directory with the tokenizer to use")
    args = parser.parse_args()
    print(build(args.shape, args.path, args.tokenizer))


if __name__ == "__main__":
    main()
