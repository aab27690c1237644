"""The families beyond GPT-2 and Llama — GPT-NeoX (Pythia), Gemma, Gemma 2, Gemma 3 (text), Phi-3,
OLMo 2 — on tiny random models built from their transformers configs and loaded through the
loader users run: the sites are the model's own numbers, a neuron's write is what reaches the
residual stream, and the edits change exactly what they say."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_models import FAMILIES, build_family

import actwh
from actwh.errors import ActwhError
from actwh.ingest.rows import TokenText
from actwh.models.interventions import scale_keys
from actwh.models.loading import load_model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory, prompts_file_module):
    """A tiny model of one family, with a run capturing every site it has."""
    root = tmp_path_factory.mktemp(request.param)
    path = build_family(root / f"tiny-{request.param}", request.param)
    loaded = load_model(str(path), device="cpu")
    sites = ",".join(loaded.adapter.sites)
    wh = actwh.open(root / "wh", create=True)
    wh.ingest(
        loaded,
        prompts_file_module,
        name="r",
        generate=4,
        capture=sites,
        logit_lens=8,
        lens_at="all",
        store_dtype="float32",
        progress=False,
    )
    yield wh, loaded
    wh.close()


@pytest.fixture(scope="module")
def prompts_file_module(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("The history of\nYou are such a piece of\nWater boils at a temperature\n")
    return path


def _sequences(wh) -> dict[int, list[int]]:
    frame = wh.sql("select prompt, list(token_id order by pos) as ids from tokens group by prompt")
    return dict(zip(frame["prompt"], frame["ids"].to_list(), strict=True))


def _stored(wh, table: str, layer: int, prompt: int, site: str | None = None) -> np.ndarray:
    where = "layer = $layer and prompt = $prompt" + (" and site = $site" if site else "")
    params = {"layer": layer, "prompt": prompt, **({"site": site} if site else {})}
    return wh.sql(f"select vec from {table} where {where} order by pos", params)["vec"].to_numpy()


def _mlp_outputs(loaded, ids: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each layer's MLP module output (before any post-norm), and the model's logits."""
    outputs = []
    handles = [
        loaded.adapter.mlp(layer).register_forward_hook(lambda m, a, out: outputs.append(out[0]))
        for layer in range(loaded.adapter.n_layers)
    ]
    try:
        with torch.no_grad():
            logits = loaded.model(torch.tensor([ids])).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    return outputs, logits


def test_resid_pre_is_hf_hidden_states_and_the_last_lens_is_the_models_distribution(family):
    wh, loaded = family
    last = loaded.adapter.n_layers - 1
    for prompt, ids in _sequences(wh).items():
        with torch.no_grad():
            out = loaded.model(torch.tensor([ids]), output_hidden_states=True)
        for layer in range(loaded.adapter.n_layers):
            stored = _stored(wh, "residuals", layer, prompt, "resid_pre")
            np.testing.assert_allclose(stored, out.hidden_states[layer][0], atol=2e-5, rtol=1e-4)
        # the logit lens of the last layer's resid_post: the model's own next-token distribution
        top = torch.softmax(out.logits[0].float(), dim=-1).topk(8, dim=-1)
        lens = wh.sql(
            "select pos, list(token_id order by rank) as ids, list(prob order by rank) as probs "
            "from logit_lens where prompt = $p and layer = $l and site = 'resid_post' "
            "group by pos order by pos",
            {"p": prompt, "l": last},
        )
        np.testing.assert_array_equal(np.array(lens["ids"].to_list()), top.indices.numpy())
        np.testing.assert_allclose(np.array(lens["probs"].to_list()), top.values, atol=1e-5)


def test_mlp_post_times_value_vectors_is_the_mlp_output_and_its_write(family):
    """mlp_post · W_out (+ bias) is the MLP's output before any post-norm; the stored value
    vectors are what reaches the residual stream: mlp_out = mlp_post · vec / rms(y) after a
    post-norm (Gemma 2/3, OLMo 2), mlp_post · vec + bias otherwise."""
    wh, loaded = family
    adapter = loaded.adapter
    wh.index_vectors(loaded, progress=False)
    for prompt, ids in _sequences(wh).items():
        mlp_outputs, _ = _mlp_outputs(loaded, ids)
        for layer in range(adapter.n_layers):
            m = torch.tensor(_stored(wh, "mlp_acts", layer, prompt))
            bias = adapter.mlp_out_proj(layer).bias
            y = m @ adapter.W_out(layer).detach() + (0 if bias is None else bias.detach())
            np.testing.assert_allclose(y, mlp_outputs[layer], atol=2e-5, rtol=1e-4)
            vectors = wh.vectors("value_vectors", model=loaded.name, layer=layer)[0]
            written = torch.tensor(m.numpy() @ vectors.T.astype(np.float32).T)
            mlp_out = _stored(wh, "residuals", layer, prompt, "mlp_out")
            norm = adapter.post_mlp_norm(layer)
            if norm is None:
                np.testing.assert_allclose(vectors, adapter.W_out(layer).detach(), atol=1e-6)
                expected = written + (0 if bias is None else bias.detach())
            else:
                gain = adapter.write_gain(layer).detach()
                np.testing.assert_allclose(vectors, adapter.W_out(layer).detach() * gain, atol=1e-6)
                assert not np.allclose(vectors, adapter.W_out(layer).detach().numpy(), atol=1e-3)
                eps = getattr(norm, "eps", None) or norm.variance_epsilon
                rms = torch.sqrt(y.pow(2).mean(-1, keepdim=True) + eps)
                expected = written / rms
            np.testing.assert_allclose(mlp_out, expected, atol=2e-5, rtol=1e-4)


def test_the_sites_add_up_along_the_residual_stream(family):
    wh, loaded = family
    for layer in range(loaded.adapter.n_layers):
        pre, attn, mlp, post = (
            _stored(wh, "residuals", layer, 1, site)
            for site in ("resid_pre", "attn_out", "mlp_out", "resid_post")
        )
        np.testing.assert_allclose(pre + attn + mlp, post, atol=2e-5, rtol=1e-4)
        if not loaded.adapter.parallel:
            mid = _stored(wh, "residuals", layer, 1, "resid_mid")
            np.testing.assert_allclose(pre + attn, mid, atol=2e-5, rtol=1e-4)


def test_parallel_attention_has_no_resid_mid(family):
    wh, loaded = family
    if not loaded.adapter.parallel:
        assert "resid_mid" in loaded.adapter.sites
        return
    with pytest.raises(ActwhError, match="in parallel, so it has no resid_mid") as error:
        wh.ingest(loaded, name="mid", capture=["resid_mid"], progress=False)
    assert str(error.value).startswith("capture resid_mid:")
    # by default, projections go on the site the MLP reads and resid_post
    config = wh.sql("select config from runs where name = 'r'").item()
    assert '"project": ["resid_pre", "resid_post"]' in config
    assert wh.sql("select mlp_reads from models where name = $m", {"m": loaded.name}).item() == (
        "resid_pre"
    )


def test_a_model_teacher_forced_on_itself_has_no_residual_offset(family):
    wh, loaded = family
    site = loaded.adapter.mlp_reads
    wh.ingest(loaded, name="again", teacher_force="r", capture=[site], progress=False)
    deltas = wh.add_direction("self", delta=("r", "again"))
    assert [d["name"] for d in deltas] == [f"self.{l}" for l in range(loaded.adapter.n_layers)]
    norms = wh.sql("select norm from directions where name like 'self.%'")["norm"]
    scale = wh.sql(
        "select avg(sqrt(list_dot_product(vec::FLOAT[], vec::FLOAT[]))) from residuals "
        "where run = 'again'"
    ).item()
    # zero up to float32 rounding: the generating run decoded with a KV cache and its own
    # padding, this one ran each sequence whole (the embedded model's test allows 1e-3)
    assert norms.max() <= 5e-4 * scale
    assert wh.sql("select distinct site from residuals where run = 'again'").item() == site
    recorded = wh.sql("select distinct json_extract_string(meta, '$.site') from directions")
    assert recorded.item() == site  # δx was taken at the site the MLP reads, by default


def test_unaligning_scales_exactly_the_chosen_coefficients(family):
    _, loaded = family
    adapter = loaded.adapter
    edited = copy.deepcopy(loaded)
    edited.adapter = type(adapter)(edited.model)
    chosen = [(0, 1), (0, 5)]
    scale_keys(edited, chosen, 3.0)
    keys_before, keys_after = adapter.W_in(0).detach(), edited.adapter.W_in(0).detach()
    np.testing.assert_allclose(keys_after[:, [1, 5]], 3.0 * keys_before[:, [1, 5]], rtol=1e-6)
    others = [i for i in range(adapter.d_mlp) if i not in (1, 5)]
    np.testing.assert_array_equal(keys_after[:, others], keys_before[:, others])
    if not adapter.gated:
        return  # GELU: the key is scaled (as the paper's code does), not the coefficient
    captured = {}

    def coefficients(model_adapter, name):
        handle = model_adapter.mlp_out_proj(0).register_forward_pre_hook(
            lambda m, args: captured.__setitem__(name, args[0][0].detach())
        )
        with torch.no_grad():
            model_adapter.model(torch.tensor([[3, 17, 42, 9, 100]]))
        handle.remove()

    coefficients(adapter, "base")
    coefficients(edited.adapter, "edited")
    base, after = captured["base"], captured["edited"]
    np.testing.assert_allclose(after[:, [1, 5]], 3.0 * base[:, [1, 5]], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(after[:, others], base[:, others], rtol=1e-6, atol=1e-7)


def test_gemma3_with_vision_is_refused_with_the_reason(tmp_path):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from actwh.models.adapters import adapter_for

    config = Gemma3Config(
        text_config=dict(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=300,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        mm_tokens_per_image=4,
    )
    with pytest.raises(ActwhError, match="gemma3_text") as error:
        adapter_for(Gemma3ForConditionalGeneration(config))
    assert "gpt_neox" in str(error.value) and "olmo2" in str(error.value)


def test_value_vector_tokens_are_read_through_the_models_own_final_norm(family):
    """RMSNorm families read a value vector's tokens through the final norm by default: the
    order of W_U · final_norm(vec), the model's own module (Gemma's gain is 1 + w)."""
    wh, loaded = family
    adapter = loaded.adapter
    if adapter.centred_norm:  # LayerNorm's bias is not the vector's: read raw by default
        assert adapter.default_unembed == "raw"
        return
    wh.index_vectors(loaded, progress=False)
    stored = wh.sql(
        "select neuron, vector_tokens(model, vec, 1, 3) as top_tokens from value_vectors "
        "where layer = 1 order by neuron limit 8"
    )
    vectors = torch.tensor(wh.vectors("value_vectors", model=loaded.name, layer=1)[0][:8])
    with torch.no_grad():
        ids = (adapter.final_norm(vectors) @ adapter.W_U).topk(3, dim=-1).indices
    text = TokenText(loaded.tokenizer)
    for row, expected in zip(stored.iter_rows(named=True), ids.tolist(), strict=True):
        assert row["top_tokens"][:3] == text(expected)
