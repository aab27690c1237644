"""What a neuron writes: m_i·v_i, with m_i signed in gated MLPs (Llama family), ≈ ≥ 0 in GELU ones.

A tiny model gets one *planted* neuron that fires the same way on every token and whose value
vector points against a direction d: in a gated Llama it fires negatively (m ≈ −2.86), so it writes
*toward* d; in GPT-2 it fires positively (m ≈ +3), so it writes against d. Every analysis must see
the Llama neuron as a writer of d and leave the GPT-2 one where the paper's cosine puts it.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from cli_helpers import cli, cli_error
from tiny_models import build_gpt2, build_llama

import actwh
from actwh.ingest.rows import TokenText
from actwh.models.loading import load_model

LAYER, NEURON = 1, 5


def unit_direction(d_model: int) -> np.ndarray:
    d = np.random.default_rng(11).standard_normal(d_model).astype(np.float32)
    return d / np.linalg.norm(d)


def plant_writer(path, arch: str) -> np.ndarray:
    """Rewrite neuron (LAYER, NEURON) of the model saved at ``path``; returns the direction d."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    d = torch.tensor(unit_direction(model.config.hidden_size))
    with torch.no_grad():
        if arch == "llama":  # m = silu(gate) · up = silu(3) · (−1) on every token
            mlp = model.model.layers[LAYER].mlp
            mlp.gate_proj.weight[NEURON] = 0
            mlp.gate_proj.bias[NEURON] = 3
            mlp.up_proj.weight[NEURON] = 0
            mlp.up_proj.bias[NEURON] = -1
            mlp.down_proj.weight[:, NEURON] = -0.5 * d
        else:  # m = gelu(3) on every token
            mlp = model.transformer.h[LAYER].mlp
            mlp.c_fc.weight[:, NEURON] = 0
            mlp.c_fc.bias[NEURON] = 3
            mlp.c_proj.weight[NEURON] = -0.5 * d
    model.save_pretrained(path)
    return d.numpy()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def planted(request, tmp_path_factory):
    """A warehouse with the planted model, direction ``d``, a run ``base`` tracking every neuron,
    and ``tuned``: the same model teacher-forced on base's tokens."""
    arch = request.param
    root = tmp_path_factory.mktemp(f"planted-{arch}")
    if arch == "llama":
        model = build_llama(root / "planted", mlp_bias=True)
    else:
        model = build_gpt2(root / "planted")
    d = plant_writer(model, arch)
    np.save(root / "d.npy", d)
    prompts = root / "prompts.jsonl"
    texts = ["The history of", "You are such a piece of", "Holy", "Water boils at"]
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    wh = root / "wh"
    cli("index-vectors", wh, "--model", model, "--no-progress")
    cli("directions", "add", wh, "d", "--model", "planted", "--vector", root / "d.npy")
    n = 3 * {"llama": 48, "gpt2": 128}[arch]  # every neuron of the three layers
    track = ["--track-neurons", f"d:{n}", "--no-progress"]
    cli("ingest", wh, "--model", "planted", "--prompts", prompts, "--name", "base", *track)
    cli("ingest", wh, "--model", "planted", "--name", "tuned", "--teacher-force", "base", *track)
    return arch, wh, d


def test_the_planted_neuron_fires_as_built(planted):
    arch, wh, _ = planted
    with actwh.open(wh) as w:
        m = w.sql(
            "select act from neuron_acts where layer = $l and neuron = $n",
            {"l": LAYER, "n": NEURON},
        )["act"]
    expected = -torch.nn.functional.silu(torch.tensor(3.0)) if arch == "llama" else 2.9960
    np.testing.assert_allclose(m.to_numpy(), float(expected), rtol=1e-3)


def test_search_and_table1(planted):
    arch, wh, _ = planted
    with actwh.open(wh) as w:
        hits = w.search("d", k=400)
        table1 = w.query("top_toxic_vectors", model="planted", direction="d", k=400)
        for frame in (hits, table1):
            keys = list(zip(frame["layer"], frame["neuron"], strict=True))
            row = frame.row(keys.index((LAYER, NEURON)), named=True)
            assert row["cosine"] == pytest.approx(-1.0, abs=1e-5) and row["sign"] == -1
            if arch == "llama":  # it writes toward d when it fires negatively: the top writer
                assert keys[0] == (LAYER, NEURON)
                assert (
                    sorted(frame["cosine"].abs(), reverse=True) == frame["cosine"].abs().to_list()
                )
            else:  # GELU: the paper's ranking by cosine, where it comes last
                assert keys[-1] == (LAYER, NEURON)
                assert sorted(frame["cosine"], reverse=True) == frame["cosine"].to_list()
        # its top tokens are those of −v, the vector it writes toward d: read by hand through
        # the model's unembedding
        v = w.vectors("value_vectors", layer=LAYER, neuron=NEURON)[0][0]
        model = load_model(str(wh.parent / "planted"), device="cpu")
        u = torch.tensor(-v)[None]
        if model.adapter.default_unembed == "final_norm":  # gated models: through its gain
            u = model.adapter.through_final_norm(u)
        words = TokenText(model.tokenizer)((u @ model.adapter.W_U)[0].topk(10).indices.tolist())
        assert list(row["top_tokens"]) == words
        # which way it fires in a run: the search and Table 1's query say the same
        fired = w.search("d", k=400, run="base")
        same = w.query("top_toxic_vectors", model="planted", direction="d", k=400, run="base")
        columns = ["layer", "neuron", "sign"]
        assert fired.select(columns).equals(same.select(columns))
        # DuckDB sums in parallel: the same means may differ in their last bits
        for column in ["frac_pos", "mean_pos", "mean_neg"]:
            np.testing.assert_allclose(fired[column], same[column], rtol=1e-12, atol=0)
        np.testing.assert_allclose(fired["mean_write"], same["mean_write"], rtol=1e-4, atol=1e-9)
        assert table1["frac_pos"].null_count() == table1.height  # no run, no coefficients
        row = fired.filter((pl.col("layer") == LAYER) & (pl.col("neuron") == NEURON)).row(
            0, named=True
        )
    if arch == "llama":
        assert row["frac_pos"] == 0 and row["mean_pos"] == 0 and row["mean_neg"] < -2.8
        assert row["mean_write"] == pytest.approx(-row["mean_neg"] * 0.5, rel=1e-3)
    else:
        assert row["frac_pos"] == 1 and row["mean_neg"] == 0
        assert row["mean_write"] == pytest.approx(-row["mean_pos"] * 0.5, rel=1e-3)


def test_activation_drop_writes(planted):
    arch, wh, d = planted
    with actwh.open(wh) as w:
        runs = {"base_run": "base", "tuned_run": "tuned", "direction": "d", "n": 400}
        drop = w.query("activation_drop", **runs, rank="cosine")
        by_write = w.query("activation_drop", **runs)
        total = w.query("tracked_write", base_run="base", tuned_run="tuned", direction="d")
        acts = w.sql(
            """select layer, neuron, avg(act) as m from neuron_acts a
               join tokens t using (run, prompt, pos)
               where run = 'base' and t.is_generated group by all"""
        )
        vectors, keys = w.vectors("value_vectors", model="planted")
    keys = list(keys.select("layer", "neuron").iter_rows())
    along = dict(zip(keys, vectors @ d, strict=True))
    by_hand = {(l, n): m * along[(l, n)] for l, n, m in acts.iter_rows()}
    for row in drop.iter_rows(named=True):
        key = (row["layer"], row["neuron"])
        assert row["base_write"] == pytest.approx(by_hand[key], rel=1e-4, abs=1e-8)
        assert row["tuned_write"] == pytest.approx(row["base_write"], rel=1e-5, abs=1e-8)
    planted_row = drop.filter((pl.col("layer") == LAYER) & (pl.col("neuron") == NEURON)).row(
        0, named=True
    )
    if arch == "llama":  # writes toward d: ranked first, positive write
        assert drop.row(0, named=True)["neuron"] == NEURON
        assert planted_row["write_cosine"] == pytest.approx(1.0, abs=1e-5)
        assert planted_row["base_write"] == pytest.approx(0.5 * 2.857, rel=1e-3)
    else:  # writes against d: last by cosine, negative write
        assert drop.row(-1, named=True)["neuron"] == NEURON
        assert planted_row["write_cosine"] == planted_row["cosine"]
        assert planted_row["base_write"] == pytest.approx(-0.5 * 2.996, rel=1e-3)
    assert drop["write_cosine"].to_list() == sorted(drop["write_cosine"], reverse=True)
    # by default, by the write itself: the planted neuron first (llama) or last (gpt2) again
    assert by_write["base_write"].to_list() == sorted(by_write["base_write"], reverse=True)
    assert by_write.row(0 if arch == "llama" else -1, named=True)["neuron"] == NEURON
    whole = total.filter(pl.col("layer").is_null()).row(0, named=True)
    assert whole["base_write"] == pytest.approx(sum(by_hand.values()), rel=1e-4)
    assert whole["neurons"] == len(by_hand)


def test_unalign_chooses_the_writer(planted):
    arch, wh, _ = planted
    unalign = ["variant", wh, "un", "--base", "planted", "--unalign", "d", "-k", 1]
    unalign += ["--scale", 10]
    if arch == "llama":
        assert "pass run=... (--run RUN)" in cli_error(*unalign)
        out = cli(*unalign, "--run", "base").stdout
    else:
        out = cli(*unalign).stdout
    with actwh.open(wh) as w:
        keys = json.loads(w.sql("select config from models where name = 'un'").item())["edit"]
    chosen = [tuple(k) for k in keys["keys"]]
    if arch == "llama":
        assert chosen == [(LAYER, NEURON)] and f"{LAYER}:{NEURON}" in out
    else:
        assert (LAYER, NEURON) not in chosen
    # the control: as many keys, in the same layers, at random, never the chosen ones
    cli("variant", wh, "un-control", "--control-of", "un", "--seed", 3)
    with actwh.open(wh) as w:
        row = w.sql("select role, parent, config from models where name = 'un-control'").row(
            0, named=True
        )
    control = json.loads(row["config"])["edit"]
    assert row["role"] == "control" and row["parent"] == "planted"
    assert len(control["keys"]) == 1 and control["scale"] == 10
    assert control["keys"][0][0] == chosen[0][0] and tuple(control["keys"][0]) != chosen[0]
    for not_unaligned in ("un-control", "planted"):
        assert "not an un-aligned variant" in cli_error(
            "variant", wh, "cc", "--control-of", not_unaligned
        )
    if arch != "llama":  # chosen by the paper's rule, with no run: nothing to match a write in
        assert "needs the run the un-aligned variant chose its keys in" in cli_error(
            "variant", wh, "cm", "--control-of", "un", "--match", "write"
        )
        return
    # matched on the added write: (s − 1)·mean|m|·‖v‖ over the keys of a layer, by hand
    out = cli("variant", wh, "un-matched", "--control-of", "un", "--match", "write", "--seed", 3)
    with actwh.open(wh) as w:
        matched = json.loads(w.sql("select config from models where name = 'un-matched'").item())
        mean_abs = dict(
            w.sql(
                """select layer || ':' || neuron, avg(abs(act)) from neuron_acts a
                   join tokens t using (run, prompt, pos)
                   where run = 'base' and t.is_generated group by all"""
            ).iter_rows()
        )
        vectors, vkeys = w.vectors("value_vectors", model="planted")
    norm = {
        f"{l}:{n}": float(np.linalg.norm(v))
        for (l, n), v in zip(vkeys.select("layer", "neuron").iter_rows(), vectors, strict=True)
    }
    edit = matched["edit"]
    assert edit["match"] == "write" and edit["keys"] == control["keys"]  # same seed, same keys
    layer = str(chosen[0][0])

    def added(keys, scale):
        return (scale - 1) * sum(mean_abs[f"{l}:{n}"] * norm[f"{l}:{n}"] for l, n in keys)

    target = added(chosen, 10)
    assert edit["added_write"][layer] == pytest.approx(target, rel=1e-3)
    assert added(edit["keys"], edit["layer_scales"][layer]) == pytest.approx(target, rel=1e-3)
    assert f"in layer {layer}" in out.stdout
    # the registered model's key is the planted one times that factor
    l, n = edit["keys"][0]
    weights = {name: load_model(str(wh.parent / "planted"), device="cpu") for name in ("planted",)}[
        "planted"
    ].adapter.W_in(l)[:, n]
    with actwh.open(wh) as w:
        scaled = w.load_model("un-matched").adapter.W_in(l)[:, n]
    torch.testing.assert_close(scaled, weights * edit["layer_scales"][layer], rtol=1e-5, atol=1e-6)


def test_neuron_stats_are_every_neurons_sums(planted, tmp_path):
    """neuron_stats, summed over commits, equal the coefficients captured in full."""
    arch, wh, _ = planted
    cli(
        "ingest",
        wh,
        "--model",
        "planted",
        "--name",
        "full",
        "--teacher-force",
        "base",
        "--capture",
        "mlp_post",
        "--store-dtype",
        "float32",
        "--commit-mb",
        0,
        "--batch-size",
        1,
        "--no-progress",
    )
    with actwh.open(wh) as w:
        stats = w.sql(
            """select layer, neuron, generated, sum(n) as n, sum(n_pos) as n_pos, sum(sum) as s,
                      sum(sum_pos) as s_pos, sum(sum_sq) as s_sq
               from neuron_stats where run = 'full' group by all order by all"""
        )
        assert (
            w.sql(
                "select count(distinct commit_id) from commit_files f join commits c "
                "on c.id = f.commit_id where c.run = 'full'"
            ).item()
            > 1
        )
        for layer in range(3):
            x, keys = w.vectors("mlp_acts", run="full", layer=layer)
            generated = w.sql(
                "select prompt, pos, is_generated from tokens where run = 'full' order by all"
            )
            assert keys.select("prompt", "pos").equals(generated.select("prompt", "pos"))
            mask = generated["is_generated"].to_numpy()
            for flag in (False, True):
                m = x[mask == flag].astype(np.float64)
                rows = stats.filter((pl.col("layer") == layer) & (pl.col("generated") == flag))
                assert (rows["n"].to_numpy() == len(m)).all()
                np.testing.assert_array_equal(rows["n_pos"].to_numpy(), (m > 0).sum(0))
                np.testing.assert_allclose(rows["s"].to_numpy(), m.sum(0), rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(
                    rows["s_pos"].to_numpy(), m.clip(0).sum(0), rtol=1e-5, atol=1e-6
                )
                np.testing.assert_allclose(
                    rows["s_sq"].to_numpy(), (m * m).sum(0), rtol=1e-5, atol=1e-6
                )


def test_named_queries_resolve_directions_by_lineage(tmp_path, gpt2_dir, prompts_file):
    """A direction of an unrelated model with the same name is never used (it used to be: the
    first one found)."""
    other = build_gpt2(tmp_path / "other-gpt2", seed=5)
    wh = tmp_path / "wh"
    for model, seed in ((other, 1), (gpt2_dir, 2)):  # the unrelated model's comes first
        cli("index-vectors", wh, "--model", model, "--no-progress")
        cli("directions", "add", wh, "probe", "--model", model.name, "--random", "--seed", seed)
    common = ["--capture", "resid_mid", "--no-progress"]
    cli("ingest", wh, "--model", "tiny-gpt2", "--prompts", prompts_file, "--name", "a", *common)
    tuned = build_gpt2(tmp_path / "tuned", seed=1)
    cli("ingest", wh, "--model", tuned, "--name", "b", "--teacher-force", "a", *common)
    cli("directions", "add", wh, "dx", "--delta", "a", "b")
    with actwh.open(wh) as w:
        mine = w.direction("probe", model="tiny-gpt2")
        offset = w.query("residual_offset", direction="probe")
        for row in offset.iter_rows(named=True):
            dx = w.direction(f"dx.{row['layer']}")
            expected = dx @ mine / (np.linalg.norm(dx) * np.linalg.norm(mine))
            assert row["cos_with_direction"] == pytest.approx(expected, abs=1e-5)


def test_logit_lens_target_reads_the_last_prompt_token(tmp_path, gpt2_dir, prompts_file):
    """With the lens stored at every position, Figure 1 still reads the last prompt token."""
    wh = tmp_path / "wh"
    lens = ["--logit-lens", 3, "--target-tokens", "#5", "--no-progress"]
    cli(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        prompts_file,
        "--name",
        "all",
        "--lens-at",
        "all",
        *lens,
    )
    cli("ingest", wh, "--model", gpt2_dir, "--prompts", prompts_file, "--name", "last", *lens)
    with actwh.open(wh) as w:
        assert w.sql("select count(distinct pos) from token_probs where run = 'all'").item() > 4
        got = w.query("logit_lens_target", token=w.sql("select min(token) from token_probs").item())
    by_run = {
        run: got.filter(pl.col("run") == run).sort("layer", "site")["mean_prob"].to_numpy()
        for run in ("all", "last")
    }
    np.testing.assert_allclose(by_run["all"], by_run["last"], rtol=1e-5)
    assert (got["n"] == 4).all()
