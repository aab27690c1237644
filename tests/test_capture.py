"""The captured numbers are the model's numbers: checked against HF and recomputed from weights."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

import actwh
from actwh.ingest.options import IngestOptions
from actwh.ingest.worker import ingest
from actwh.models.loading import load_model

SITES = "resid_pre,resid_mid,resid_post,mlp_post"


@pytest.fixture
def captured(tmp_path, model_dir, prompts_file):
    options = IngestOptions(
        name="r",
        generate=6,
        capture=SITES,
        batch_size=3,
        store_dtype="float32",
        prompt_logprobs=True,
        progress=False,
    )
    summary = ingest(str(tmp_path / "wh"), str(model_dir), str(prompts_file), options)
    return actwh.open(tmp_path / "wh"), load_model(str(model_dir), device="cpu"), summary


def _sequences(wh) -> dict[int, list[int]]:
    tokens = wh.sql("select prompt, list(token_id order by pos) as ids from tokens group by prompt")
    return dict(zip(tokens["prompt"], tokens["ids"].to_list(), strict=True))


def _vectors(wh, table: str, layer: int, prompt: int, site: str | None = None) -> np.ndarray:
    where = "layer = $layer and prompt = $prompt" + (" and site = $site" if site else "")
    params = {"layer": layer, "prompt": prompt, **({"site": site} if site else {})}
    frame = wh.sql(f"select pos, vec from {table} where {where} order by pos", params)
    assert frame["pos"].to_list() == list(range(frame.height)), "positions must be 0..n-1"
    return frame["vec"].to_numpy()


def test_row_counts_and_positions(captured):
    wh, loaded, summary = captured
    n_layers = loaded.adapter.n_layers
    n_tokens = wh.sql("select count(*) as n from tokens")["n"][0]
    assert n_tokens == summary.n_tokens
    counts = wh.sql("select site, layer, count(*) as n from residuals group by all")
    assert set(counts["n"]) == {n_tokens}
    assert counts.height == 3 * n_layers  # three residual sites
    assert wh.sql("select count(*) as n from mlp_acts")["n"][0] == n_tokens * n_layers
    # every prompt: positions 0..len-1, prompt tokens first, then exactly n_generated tokens
    per_prompt = wh.sql(
        "select t.prompt, count(*) as n, min(pos) as lo, max(pos) as hi, "
        "sum(is_generated::int) as gen, any_value(g.n_generated) as n_generated, "
        "any_value(g.n_prompt_tokens) as n_prompt "
        "from tokens t join generations g using (run, prompt) group by t.prompt"
    )
    assert per_prompt.height == 4
    for row in per_prompt.iter_rows(named=True):
        assert row["lo"] == 0 and row["hi"] == row["n"] - 1
        assert row["gen"] == row["n_generated"]
        assert row["n"] == row["n_prompt"] + row["n_generated"]


def test_resid_pre_equals_hf_hidden_states(captured):
    wh, loaded, _ = captured
    for prompt, ids in _sequences(wh).items():
        with torch.no_grad():
            out = loaded.model(torch.tensor([ids]), output_hidden_states=True)
        for layer in range(loaded.adapter.n_layers):
            stored = _vectors(wh, "residuals", layer, prompt, "resid_pre")
            expected = out.hidden_states[layer][0].numpy()
            np.testing.assert_allclose(stored, expected, atol=2e-5, rtol=1e-4)


def test_mlp_post_recomputed_from_weights(captured):
    """GELU(ln_2(x) W_in + b_in) for GPT-2, act(gate(x)) * up(x) for Llama, from resid_mid."""
    wh, loaded, _ = captured
    adapter = loaded.adapter
    for prompt in _sequences(wh):
        for layer in range(adapter.n_layers):
            resid_mid = torch.tensor(_vectors(wh, "residuals", layer, prompt, "resid_mid"))
            mlp = adapter.mlp(layer)
            norm = adapter.mlp_norm(layer)
            with torch.no_grad():
                if loaded.architecture == "gpt2":
                    x = torch.nn.functional.layer_norm(
                        resid_mid, norm.normalized_shape, norm.weight, norm.bias, norm.eps
                    )
                    expected = torch.nn.functional.gelu(
                        x @ mlp.c_fc.weight + mlp.c_fc.bias, approximate="tanh"
                    )
                else:
                    x = resid_mid * torch.rsqrt(
                        resid_mid.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon
                    )
                    x = x * norm.weight
                    gate = x @ mlp.gate_proj.weight.T
                    expected = torch.nn.functional.silu(gate) * (x @ mlp.up_proj.weight.T)
            stored = _vectors(wh, "mlp_acts", layer, prompt)
            np.testing.assert_allclose(stored, expected.numpy(), atol=2e-5, rtol=1e-4)


def test_resid_post_is_next_resid_pre(captured):
    wh, loaded, _ = captured
    for layer in range(loaded.adapter.n_layers - 1):
        post = _vectors(wh, "residuals", layer, 1, "resid_post")
        pre = _vectors(wh, "residuals", layer + 1, 1, "resid_pre")
        np.testing.assert_array_equal(post, pre)


def test_greedy_matches_hf_generate(captured):
    wh, loaded, _ = captured
    gens = wh.sql("select prompt, n_prompt_tokens, n_generated from generations order by prompt")
    sequences = _sequences(wh)
    for row in gens.iter_rows(named=True):
        ids = sequences[row["prompt"]]
        prompt = torch.tensor([ids[: row["n_prompt_tokens"]]])
        out = loaded.model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=row["n_generated"],
            do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
        assert out[0].tolist()[: len(ids)] == ids


def test_logprobs_are_the_models(captured):
    wh, loaded, _ = captured
    tokens = wh.sql("select prompt, pos, logprob from tokens where prompt = 1 order by pos")
    ids = _sequences(wh)[1]
    with torch.no_grad():
        logp = torch.log_softmax(loaded.model(torch.tensor([ids])).logits[0], -1)
    expected = [None] + [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
    got = tokens["logprob"].to_list()
    assert got[0] is None
    np.testing.assert_allclose(got[1:], expected[1:], atol=1e-4)


def test_float16_storage_is_close(tmp_path, gpt2_dir, prompts_file):
    for dtype in ("float16", "float32"):
        options = IngestOptions(
            name=dtype, generate=3, capture="resid_mid", store_dtype=dtype, progress=False
        )
        ingest(str(tmp_path / "wh"), str(gpt2_dir), str(prompts_file), options)
    wh = actwh.open(tmp_path / "wh")
    frame = wh.scan("residuals").filter(pl.col("layer") == 1).sort("run", "prompt", "pos").collect()
    half = frame.filter(pl.col("run") == "float16")["vec"].to_numpy()
    full = frame.filter(pl.col("run") == "float32")["vec"].to_numpy()
    assert half.dtype == np.float32 and half.shape == full.shape
    np.testing.assert_allclose(half, full, rtol=2e-3, atol=2e-3)


def test_prompt_logprobs_are_opt_in(tmp_path, gpt2_dir, prompts_file):
    ingest(
        str(tmp_path / "wh"),
        str(gpt2_dir),
        str(prompts_file),
        IngestOptions(name="r", generate=3, progress=False),
    )
    rows = actwh.open(tmp_path / "wh").sql(
        "select is_generated, count(logprob) as with_logprob, count(*) as n from tokens group by 1"
    )
    counts = {r[0]: r[1:] for r in rows.iter_rows()}
    assert counts[False][0] == 0 and counts[True][0] == counts[True][1] > 0


def test_tokens_that_split_a_character_show_as_bytes(gpt2_dir):
    """A byte-level token holding part of a UTF-8 character reads as <0xE6>, never as "�"; the
    pieces of a text still spell it."""
    import re

    from actwh.ingest.rows import TokenText

    tokenizer = load_model(str(gpt2_dir), device="cpu").tokenizer
    text = " naïve 日本 — ok"
    ids = tokenizer(text)["input_ids"]
    shown = TokenText(tokenizer)(ids)
    assert not any("\ufffd" in piece for piece in shown)
    assert any(re.fullmatch(r"(<0x[0-9A-F]{2}>)+", piece) for piece in shown)
    spelled = re.sub(
        rb"<0x([0-9A-F]{2})>", lambda m: bytes([int(m.group(1), 16)]), "".join(shown).encode()
    )
    assert spelled.decode() == text


def test_vectors_keep_real_positions_and_scale_only_rows_beyond_float16():
    """float16; a row with a value beyond its range is stored divided by a power of two (its
    vec_scale), or the block as float32, or refused; what sits at a padding position never
    counts."""
    from actwh.errors import ActwhError
    from actwh.ingest.generate import Ran
    from actwh.ingest.rows import Flat, vector_array

    valid = torch.tensor([[False, True, True], [True, True, True]])
    ran = Ran(torch.zeros(2, 3, dtype=torch.long), valid, torch.zeros_like(valid), None, [0, 0], [])
    flat = Flat.of(ran, [7, 8])
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    x[0, 0] = 1e6  # padding
    real = x[valid].numpy()

    def stored(x, overflow="scale"):
        array, dtype, scale = vector_array(flat, x, "float16", "resid_mid layer 0", overflow)
        values = array.flatten().to_numpy().reshape(len(flat), -1)
        return values, dtype, scale.to_numpy(zero_copy_only=False)

    values, dtype, scale = stored(x)
    assert dtype == "float16" and values.dtype == np.float16 and np.isnan(scale).all()
    np.testing.assert_allclose(values, real, rtol=1e-3)
    x[1, 2, 3] = -7e4
    x[1, 1, 0] = 3e5
    values, dtype, scale = stored(x)
    assert dtype == "float16" and values.dtype == np.float16
    np.testing.assert_array_equal(np.isnan(scale), [True, True, True, False, False])
    assert list(scale[3:]) == [8.0, 2.0]  # 3e5 / 8 and 7e4 / 2 fit below 65504
    restored = values.astype(np.float32) * np.nan_to_num(scale, nan=1.0)[:, None]
    truth = x[valid].numpy()
    peak = np.abs(truth).max(axis=1, keepdims=True)
    assert (np.abs(restored - truth) / peak).max() <= 2**-11  # float16's precision, per row
    values, dtype, _ = stored(x, overflow="float32")
    assert dtype == "float32"
    np.testing.assert_array_equal(values, x[valid].numpy())
    with pytest.raises(ActwhError, match="activation 3e\\+05 does not fit float16"):
        stored(x, overflow="error")
