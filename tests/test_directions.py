"""Directions, projections, value-vector search, logit lens, paired runs, weight diffs."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from cli_helpers import cli, cli_error
from tiny_models import build_gpt2

import actwh
from actwh.errors import ActwhError
from actwh.models.loading import load_model
from actwh.warehouse.directions import svd_direction


def all_value_vectors(model_dir) -> np.ndarray:
    """``[n_layers * d_mlp, d_model]`` straight from the weights (the brute-force reference)."""
    adapter = load_model(str(model_dir), device="cpu").adapter
    return np.concatenate(
        [adapter.W_out(l).detach().numpy() for l in range(adapter.n_layers)]
    ), adapter.d_mlp


def brute_force(
    vectors: np.ndarray, query: np.ndarray, k: int, gated: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` by cosine — by |cosine| for a gated MLP, whose neurons write ±v."""
    cos = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    order = np.argsort(-(np.abs(cos) if gated else cos), kind="stable")[:k]
    return order, cos[order]


@pytest.fixture
def wh_path(tmp_path, model_dir):
    wh = tmp_path / "wh"
    cli("index-vectors", wh, "--model", model_dir, "--no-progress")
    return wh


def test_own_value_vector_comes_first(wh_path, model_dir):
    name = model_dir.name
    cli("directions", "add", wh_path, "v", "--model", name, "--value-vector", "1:7")
    out = cli("search", wh_path, "--direction", "v", "-k", 5, "--json").stdout
    hits = [json.loads(line) for line in out.splitlines()]
    assert (hits[0]["layer"], hits[0]["neuron"]) == (1, 7)
    assert hits[0]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 5 and len(hits[0]["top_tokens"]) == 10


def test_search_equals_brute_force(wh_path, model_dir):
    name = model_dir.name
    cli("directions", "add", wh_path, "rnd", "--model", name, "--random", "--seed", 3)
    vectors, d_mlp = all_value_vectors(model_dir)
    gated = name == "tiny-llama"
    with actwh.open(wh_path) as wh:
        query = wh.direction("rnd")
        hits = wh.search("rnd", k=15)
        order, cos = brute_force(vectors, query, 15, gated)
        assert list(zip(hits["layer"], hits["neuron"], strict=True)) == [
            (i // d_mlp, i % d_mlp) for i in order
        ]
        np.testing.assert_allclose(hits["cosine"].to_numpy(), cos, atol=1e-5)
        # restricted to layers 0 and 2
        allowed = np.r_[0:d_mlp, 2 * d_mlp : 3 * d_mlp]
        sub_order, sub_cos = brute_force(vectors[allowed], query, 7, gated)
        hits = wh.search(query, k=7, model=name, layers=[0, 2])
        expected = [(allowed[i] // d_mlp, allowed[i] % d_mlp) for i in sub_order]
        assert list(zip(hits["layer"], hits["neuron"], strict=True)) == expected
        np.testing.assert_allclose(hits["cosine"].to_numpy(), sub_cos, atol=1e-5)
        # a batch of queries answers each like a single query
        batch = wh.search(np.stack([query, -query]), k=3, model=name)
        assert batch["query"].to_list() == [0, 0, 0, 1, 1, 1]
        norms = wh.sql(
            "select layer, neuron, norm from value_vectors where model = $m", {"m": name}
        )
        stored = {(r[0], r[1]): r[2] for r in norms.iter_rows()}
        for layer, neuron, norm in hits.select("layer", "neuron", "norm").iter_rows():
            assert stored[(layer, neuron)] == pytest.approx(norm)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes(tmp_path, gpt2_dir, kind):
    wh = tmp_path / "wh"
    cli("index-vectors", wh, "--model", gpt2_dir, "--index", kind, "--no-progress")
    cli("directions", "add", wh, "v", "--model", gpt2_dir.name, "--value-vector", "2:11")
    with actwh.open(wh) as w:
        hits = w.search("v", k=5)
        assert w.sql("select kind from vector_indexes")["kind"][0] == kind
    assert (hits["layer"][0], hits["neuron"][0]) == (2, 11)
    assert hits["cosine"][0] == pytest.approx(1.0, abs=1e-5)


def test_direction_errors(wh_path, model_dir, tmp_path):
    name = model_dir.name
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones(7, dtype=np.float32))
    assert "has size 7, but model" in cli_error(
        "directions", "add", wh_path, "w", "--model", name, "--vector", wrong
    )
    matrix = tmp_path / "matrix.npy"
    np.save(matrix, np.ones((32, 2), dtype=np.float32))
    assert "not one vector" in cli_error(
        "directions", "add", wh_path, "m", "--model", name, "--vector", matrix
    )
    assert "no direction 'nope'" in cli_error("search", wh_path, "--direction", "nope")
    assert "exactly one of" in cli_error("directions", "add", wh_path, "x", "--model", name)
    good = tmp_path / "good.pt"
    torch.save(torch.ones(32), good)
    cli("directions", "add", wh_path, "ones", "--model", name, "--vector", good)
    assert "already has a direction" in cli_error(
        "directions", "add", wh_path, "ones", "--model", name, "--vector", good
    )
    cli("directions", "add", wh_path, "ones", "--model", name, "--vector", good, "--replace")
    with actwh.open(wh_path) as wh:
        np.testing.assert_array_equal(wh.direction("ones"), np.ones(32, dtype=np.float32))
        types = dict(wh.sql("describe directions").select("column_name", "column_type").iter_rows())
        assert types["vec"] == "FLOAT[32]"


def test_svd_direction_is_oriented_toward_its_source():
    rng = np.random.default_rng(0)
    planted = rng.standard_normal(64)
    planted /= np.linalg.norm(planted)
    vectors = planted * rng.uniform(2, 3, (40, 1)) + 0.3 * rng.standard_normal((40, 64))
    for sign in (1, -1):
        direction, singular = svd_direction(vectors * sign, planted * sign)
        assert direction @ (planted * sign) > 0.9
        assert singular > 0
    # its sign follows the source, whatever the stacked vectors' sign
    a, _ = svd_direction(vectors, planted)
    b, _ = svd_direction(-vectors, planted)
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ActwhError, match="out of range"):
        svd_direction(vectors[:3], planted, component=5)


def test_svd_direction_through_the_cli(wh_path, model_dir):
    name = model_dir.name
    cli("directions", "add", wh_path, "src", "--model", name, "--random", "--seed", 1)
    cli("directions", "add", wh_path, "svd", "--svd-of", "src", "-k", 20, "--per-layer", 10)
    vectors, d_mlp = all_value_vectors(model_dir)
    with actwh.open(wh_path) as wh:
        source, svd = wh.direction("src"), wh.direction("svd")
        meta = json.loads(wh.sql("select meta from directions where name = 'svd'")["meta"][0])
    assert svd @ source > 0 and np.linalg.norm(svd) == pytest.approx(1.0, abs=1e-5)
    picked = np.array([int(l) * d_mlp + int(n) for l, n in (v.split(":") for v in meta["vectors"])])
    cos = vectors @ source / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(source))
    score = np.abs(cos) if name == "tiny-llama" else cos  # a gated neuron writes ±v
    per_layer_best = np.concatenate(
        [l * d_mlp + np.argsort(-score[l * d_mlp : (l + 1) * d_mlp])[:10] for l in range(3)]
    )
    expected = per_layer_best[np.argsort(-score[per_layer_best])][:20]
    assert set(picked) == set(expected)
    unit = vectors[picked] / np.linalg.norm(vectors[picked], axis=1, keepdims=True)
    u = np.linalg.svd(unit.T)[0][:, 0]
    assert abs(u @ svd) == pytest.approx(1.0, abs=1e-4)


@pytest.fixture
def paired(tmp_path, gpt2_dir, prompts_file):
    """A base run with directions and tracked neurons, and a tuned model teacher-forced on it."""
    wh = tmp_path / "wh"
    tuned_dir = build_gpt2(tmp_path / "tuned-gpt2", seed=1)
    cli("index-vectors", wh, "--model", gpt2_dir, "--no-progress")
    cli("directions", "add", wh, "rnd", "--model", gpt2_dir.name, "--random")
    cli("directions", "add", wh, "v", "--model", gpt2_dir.name, "--value-vector", "0:3")
    common = [
        "--capture",
        "resid_mid,mlp_post",
        "--project",
        "resid_pre,resid_mid,resid_post",
        "--logit-lens",
        4,
        "--target-tokens",
        "#5,#9",
        "--no-progress",
    ]
    cli(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        prompts_file,
        "--name",
        "base",
        "--generate",
        5,
        "--track-neurons",
        "rnd:6",
        *common,
    )
    cli("ingest", wh, "--model", tuned_dir, "--name", "tuned", "--teacher-force", "base", *common)
    return wh, load_model(str(gpt2_dir), device="cpu"), load_model(str(tuned_dir), device="cpu")


def test_projections_equal_stored_residuals(paired):
    wh_path, base, _ = paired
    with actwh.open(wh_path) as wh:
        counts = wh.sql("select run, site, direction, count(*) as n from projections group by all")
        n_tokens = wh.sql("select run, count(*) as n from tokens group by run")
        tokens = dict(n_tokens.iter_rows())
        for run, site, direction, n in counts.iter_rows():
            assert n == tokens[run] * base.adapter.n_layers, (run, site, direction)
        assert counts.height == 2 * 3 * 2  # runs × sites × directions
        joined = wh.sql(
            """select p.dot, p.cos, r.vec, d.vec as dir
               from projections p join residuals r using (run, layer, prompt, pos, site)
               join directions d on d.name = p.direction
               where p.run = 'tuned' and p.site = 'resid_mid'"""
        )
    vec = np.stack(joined["vec"].to_numpy())
    direction = np.stack(joined["dir"].to_numpy())
    dot = (vec * direction).sum(1)
    np.testing.assert_allclose(joined["dot"].to_numpy(), dot, rtol=2e-3, atol=2e-4)
    cos = dot / (np.linalg.norm(vec, axis=1) * np.linalg.norm(direction, axis=1))
    np.testing.assert_allclose(joined["cos"].to_numpy(), cos, rtol=2e-3, atol=2e-4)


def test_paired_runs_align_and_delta_x_is_the_mean_difference(paired):
    wh_path, base, _ = paired
    with actwh.open(wh_path) as wh:
        join = wh.sql(
            """select count(*) as n, count(*) filter (where b.token_id = t.token_id) as same,
                      count(*) filter (where b.is_generated = t.is_generated) as same_gen
               from tokens b join tokens t using (prompt, pos)
               where b.run = 'base' and t.run = 'tuned'"""
        ).row(0, named=True)
        assert join["n"] == join["same"] == join["same_gen"] > 0
        assert join["n"] == wh.sql("select count(*) from tokens where run = 'base'").item()
        mode = wh.sql("select mode, source_run from runs where name = 'tuned'").row(0)
        assert mode == ("teacher_forced", "base")
    cli("directions", "add", wh_path, "dx", "--delta", "base", "tuned", "--layers", "1-2")
    with actwh.open(wh_path) as wh:
        for layer in (1, 2):
            b, keys_b = wh.vectors("residuals", run="base", layer=layer, site="resid_mid")
            t, keys_t = wh.vectors("residuals", run="tuned", layer=layer, site="resid_mid")
            assert keys_b.drop("run").equals(keys_t.drop("run"))
            np.testing.assert_allclose(
                wh.direction(f"dx.{layer}"), (t - b).mean(0), rtol=1e-4, atol=1e-6
            )
        assert "dx.0" not in wh.sql("select name from directions")["name"].to_list()


def test_tracked_neurons_are_the_top_value_vectors(paired):
    wh_path, base, _ = paired
    with actwh.open(wh_path) as wh:
        query = wh.direction("rnd")
        tracked = wh.sql("select distinct layer, neuron from neuron_acts order by all")
        acts = wh.sql(
            """select n.act, list_extract(m.vec::FLOAT[], n.neuron + 1) as expected
               from neuron_acts n join mlp_acts m using (run, layer, prompt, pos)"""
        )
    vectors, d_mlp = all_value_vectors(base.model.name_or_path)
    order, _ = brute_force(vectors, query, 6)
    assert sorted(zip(tracked["layer"], tracked["neuron"], strict=True)) == sorted(
        (i // d_mlp, i % d_mlp) for i in order
    )
    np.testing.assert_allclose(
        acts["act"].to_numpy(), acts["expected"].to_numpy(), rtol=2e-3, atol=1e-4
    )


def test_logit_lens_of_the_last_layer_is_the_models_prediction(paired):
    wh_path, base, tuned = paired
    last = base.adapter.n_layers - 1
    with actwh.open(wh_path) as wh:
        for run, loaded in (("base", base), ("tuned", tuned)):
            seqs = wh.sql(
                """select t.prompt, list(t.token_id order by t.pos) as ids, any_value(g.n_prompt_tokens) as n
                   from tokens t join generations g using (run, prompt) where run = $r group by t.prompt""",
                {"r": run},
            )
            for prompt, ids, n in seqs.iter_rows():
                with torch.no_grad():
                    probs = torch.softmax(loaded.model(torch.tensor([ids[:n]])).logits[0, -1], -1)
                lens = wh.sql(
                    "select pos, token_id, prob from logit_lens where run = $r and prompt = $p "
                    "and layer = $l and site = 'resid_post' order by rank",
                    {"r": run, "p": prompt, "l": last},
                )
                assert set(lens["pos"]) == {n - 1}
                top = probs.topk(4)
                assert lens["token_id"].to_list() == top.indices.tolist()
                np.testing.assert_allclose(lens["prob"].to_numpy(), top.values.numpy(), rtol=1e-4)
                target = wh.sql(
                    "select token_id, prob from token_probs where run = $r and prompt = $p "
                    "and layer = $l and site = 'resid_post' order by token_id",
                    {"r": run, "p": prompt, "l": last},
                )
                np.testing.assert_allclose(
                    target["prob"].to_numpy(), probs[[5, 9]].numpy(), rtol=1e-4
                )
        # lens rows: one position per prompt, every layer, each lensed site
        per = wh.sql(
            "select run, count(distinct (prompt, pos)) as n, count(distinct layer) as l from logit_lens group by run"
        )
        assert set(per["n"]) == {4} and set(per["l"]) == {3}


def test_teacher_force_refuses_another_tokenizer(tmp_path, gpt2_dir, llama_dir, prompts_file):
    wh = tmp_path / "wh"
    cli(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        prompts_file,
        "--name",
        "base",
        "--generate",
        2,
        "--no-progress",
    )
    message = cli_error(
        "ingest", wh, "--model", llama_dir, "--teacher-force", "base", "--no-progress"
    )
    assert "tokenizer differs" in message
    assert "no such run" in cli_error(
        "ingest", wh, "--model", gpt2_dir, "--teacher-force", "nope", "--no-progress"
    )


def test_weight_diffs(tmp_path, gpt2_dir):
    wh = tmp_path / "wh"
    tuned_dir = build_gpt2(tmp_path / "tuned-gpt2", seed=1)
    cli("diff", wh, "--base", gpt2_dir, "--tuned", gpt2_dir)
    cli("diff", wh, "--base", gpt2_dir, "--tuned", tuned_dir)
    base, tuned = (load_model(str(d), device="cpu") for d in (gpt2_dir, tuned_dir))
    with actwh.open(wh) as w:
        same = w.sql(
            "select min(cosine) as c, max(norm_diff) as d from weight_diffs where model = $m",
            {"m": gpt2_dir.name},
        )
        assert same.row(0) == (pytest.approx(1.0), 0.0)
        params = w.sql(
            "select parameter, cosine, norm_diff from weight_diffs where model = 'tuned-gpt2'"
        )
        W = "transformer.h.1.mlp.c_proj.weight"
        p, q = (dict(m.model.named_parameters())[W].detach().double() for m in (base, tuned))
        row = params.filter(params["parameter"] == W).row(0, named=True)
        assert row["norm_diff"] == pytest.approx(float((q - p).norm()), rel=1e-6)
        delta, _ = w.vectors("value_vector_diffs", model="tuned-gpt2", layer=1)
    np.testing.assert_allclose(delta, (q - p).numpy(), rtol=1e-5, atol=1e-6)
    other = cli_error(
        "diff", wh, "--base", gpt2_dir, "--tuned", build_gpt2(tmp_path / "deeper", n_layer=4)
    )
    assert "does not match" in other and "n_layers 4" in other


def test_prompt_variants_stay_linked(tmp_path, gpt2_dir, prompts_file):
    out = tmp_path / "variants.jsonl"
    cli("prompts", "transform", prompts_file, "-o", out, "--rot13", "--base64", "--leet")
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(lines) == 16
    assert lines[4] == {"prompt": "Gur uvfgbel bs", "transform": "rot13", "source_prompt": 0}
    assert (
        lines[9]["prompt"] == "WW91IGFyZSBzdWNoIGEgcGllY2Ugb2Y=" and lines[9]["source_prompt"] == 1
    )
    assert lines[12]["prompt"] == "7h3 h1570ry 0f"
    wh = tmp_path / "wh"
    cli("ingest", wh, "--model", gpt2_dir, "--prompts", out, "--generate", 2, "--no-progress")
    with actwh.open(wh) as w:
        linked = w.sql(
            """select v.transform, o.text as original, v.text as variant from prompts v
               join prompts o on o.prompt_set = v.prompt_set and o.prompt = v.source_prompt
               where v.transform is not null order by v.prompt"""
        )
    assert linked.height == 12 and linked["original"][0] == "The history of"


def test_chat_prompts_keep_turn_indices(tmp_path, gpt2_dir):
    model = tmp_path / "chat-gpt2"
    import shutil

    shutil.copytree(gpt2_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    prompts = tmp_path / "chat.jsonl"
    chat = [
        {"role": "user", "content": "Holy cow"},
        {"role": "assistant", "content": "Yes"},
        {"role": "user", "content": "You are such a piece of"},
    ]
    prompts.write_text(
        json.dumps({"messages": chat}) + "\n" + json.dumps({"prompt": "The history of"}) + "\n"
    )
    wh = tmp_path / "wh"
    cli("ingest", wh, "--model", model, "--prompts", prompts, "--generate", 3, "--no-progress")
    loaded = load_model(str(model), device="cpu")
    with actwh.open(wh) as w:
        rows = w.sql(
            "select pos, token, turn, is_generated from tokens where prompt = 0 order by pos"
        )
        plain = w.sql(
            "select count(*) filter (where turn is not null) from tokens where prompt = 1"
        ).item()
    assert plain == 0
    text = "".join(rows.filter(~rows["is_generated"])["token"])
    assert text == "user: Holy cow\nassistant: Yes\nuser: You are such a piece of\nassistant:"
    turns = rows["turn"].to_list()
    by_turn = {}
    for token, turn in zip(rows["token"], turns, strict=True):
        by_turn.setdefault(turn, []).append(token)
    assert "".join(by_turn[0]) == "user: Holy cow\n"
    assert "".join(by_turn[1]) == "assistant: Yes\n"
    assert "".join(by_turn[2]) == "user: You are such a piece of\n"
    assert turns == sorted(turns) and set(rows.filter(rows["is_generated"])["turn"]) == {3}
    assert loaded.tokenizer.decode(loaded.tokenizer("x")["input_ids"]) == "x"


def test_a_file_of_chats_alone_ingests(tmp_path, gpt2_dir):
    """Every test file used to mix in a plain prompt; a file of chats alone raised IndexError."""
    from actwh.ingest.prompts import shipped_chats

    wh = tmp_path / "wh"
    cli(
        "ingest",
        wh,
        "--model",
        gpt2_dir,
        "--prompts",
        shipped_chats(),
        "--generate",
        2,
        "--no-progress",
    )
    with actwh.open(wh) as w:
        counts = w.sql(
            "select count(distinct prompt) as prompts, count(*) filter (where turn is null) "
            "as without_turn from tokens"
        ).row(0)
    assert counts == (6, 0)


QWEN_LIKE = (
    "{%- if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}{%- for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_what_a_chat_template_inserts_is_its_own_turn(tmp_path, gpt2_dir):
    """A template that adds a default system prompt to a chat without one (as Qwen's does): its
    tokens used to count as the first message's, mixing boilerplate into per-message analyses."""
    import shutil

    model = tmp_path / "qwen-like"
    shutil.copytree(gpt2_dir, model)
    (model / "chat_template.jinja").write_text(QWEN_LIKE)
    chats = tmp_path / "chats.jsonl"
    talk = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
        [{"role": "user", "content": "Holy cow"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    ]
    chats.write_text("".join(json.dumps({"messages": m}) + "\n" for m in talk))
    parts = {}
    for where, source in (("wh", model), ("plain-wh", gpt2_dir)):
        cli("ingest", tmp_path / where, "--model", source, "--prompts", chats, "--generate", 1)
        with actwh.open(tmp_path / where) as w:
            parts[where] = w.sql(
                "select prompt, turn, string_agg(token, '' order by pos) as text from tokens "
                "where not is_generated group by prompt, turn order by prompt, turn"
            )
    qwen = {(p, t): text for p, t, text in parts["wh"].iter_rows()}
    default = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert qwen[(0, -1)] == default and qwen[(1, -1)] == default
    assert qwen[(0, 0)] == "<|im_start|>user\nHi<|im_end|>\n"
    assert qwen[(1, 0)] == "<|im_start|>user\nHoly cow<|im_end|>\n"
    assert qwen[(2, 0)] == "<|im_start|>system\nBe brief.<|im_end|>\n"  # its own: message 0
    assert (2, -1) not in qwen
    # a template that inserts nothing has no such turn (the tiny models' own)
    assert parts["plain-wh"].filter(pl.col("turn") < 0).height == 0
