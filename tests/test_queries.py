"""Named analyses, the Python API, and the report — on a whole study of a tiny model.

The study is the demo's own pipeline (``run_study``) with a tiny GPT-2, so these tests also
cover the main job's code path. Every named query's numbers are checked against a computation
by hand (numpy / polars) from the stored rows.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from browser import CHROMIUM, NO_CHROMIUM, chart_edges, dump_dom
from click.testing import CliRunner
from tiny_models import build_gpt2

import actwh
from actwh.cli import main
from actwh.errors import ActwhError, NotFound
from actwh.report import write as write_report
from actwh.study.demo import StudySettings, run_study
from actwh.train.options import DPOOptions


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    model = build_gpt2(root / "tiny-gpt2")
    lines = []
    findings = run_study(root / "out", tiny_settings(model), echo=lines.append)
    return root / "out", findings, lines


def tiny_settings(model, **more) -> StudySettings:
    """The demo's settings, sized for a tiny model."""
    return StudySettings(
        model=str(model),
        generate=6,
        track=8,
        target_tokens="#5,#9",
        n_transformed=6,
        dpo=DPOOptions(learning_rate=1e-3, max_steps=6, eval_every=2, batch_size=4),
        unalign_top_k=3,
        unalign_sweep=(3,),
        progress=False,
        **more,
    )


@pytest.fixture
def wh(study):
    with actwh.open(study[0] / "wh") as warehouse:
        yield warehouse


def cos(a, b):
    return (a @ b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b))


def test_demo_pipeline_prints_findings(study):
    out, findings, lines = study
    text = "\n".join(lines)
    assert "[10/10]" in text and "Findings" in text and "report:" in text
    # each step after the model's says how long it should take (study/timing.py)
    timed = [line for line in lines if line[:3] in ("[2/", "[7/", "[9/")]
    assert len(timed) == 3 and all(re.search(r"\(\d+s; about \d+ (s|min)\)$", t) for t in timed)
    sweep = [("unaligned.x3", "unaligned-control.x3"), ("unaligned", "unaligned-control")]
    assert findings["unaligning"][:2] == sweep
    assert set(findings["evaluations"]) == {"tiny-gpt2", "dpo", *itertools.chain(*sweep)} | set(
        itertools.chain(*findings["unaligning"][2:])
    )
    assert "×3    keys by cosine: " in text and "×10   keys by cosine: " in text
    assert (out / "report.html").is_file() and (out / "report.figure2.png").is_file()
    written = (out / "FINDINGS.md").read_text()  # what it printed, verbatim
    assert written.startswith("# Findings: actwh demo --model ")
    assert "\n".join(lines[lines.index("\nFindings") :]).strip("\n") in written
    # a rerun reuses every finished step: nothing new is committed
    with actwh.open(out / "wh") as w:
        before = w.sql("select count(*) from commits").item()
    run_study(out, tiny_settings(out.parent / "tiny-gpt2"), echo=lambda _: None)
    with actwh.open(out / "wh") as w:
        assert w.sql("select count(*) from commits").item() == before


def test_every_named_query_is_non_empty_and_typed(wh):
    params = {
        "top_toxic_vectors": {"model": "tiny-gpt2"},
        "activation_drop": {"base_run": "base", "tuned_run": "dpo"},
        "tracked_write": {"base_run": "base", "tuned_run": "dpo"},
        "residual_offset": {},
        "value_vector_shift": {"model": "dpo", "layer": 2},
        "residual_offset_intervals": {"replicates": 20},
        "value_vector_shift_intervals": {"model": "dpo", "layer": 2, "replicates": 20},
        "logit_lens_target": {"token": wh.sql("select min(token) from token_probs").item()},
        "weight_similarity": {"model": "dpo"},
        "toxicity_table": {},
        "transform_gap": {"base_run": "base", "tuned_run": "dpo", "layer": 2},
        "turn_gap": {"base_run": "base", "tuned_run": "dpo", "layer": 2},
        "prompt_shift": {"base_run": "base", "tuned_run": "dpo", "layer": 2},
        "neuron_contexts": {"base_run": "base", "tuned_run": "dpo", **tracked(wh)},
        "neuron_histogram": {"base_run": "base", "tuned_run": "dpo", **tracked(wh)},
        "drop_baseline": {"base_run": "base", "tuned_run": "dpo"},
        "selectivity": {"run": "base", "labels": "category:provocative", "permutations": 20},
        "selectivity_null": {"run": "base", "labels": "category:provocative", "permutations": 20},
        "dx_decomposition": {},
        "toxic_tokens": {"run": "eval.tiny-gpt2.test", "threshold": 0.0, "first": False},
    }
    assert set(params) == set(wh.queries()["name"])
    for name, given in params.items():
        frame = wh.query(name, **given)
        assert frame.height > 0, name
        for column, dtype in frame.schema.items():
            assert dtype != pl.Null, (name, column)


def test_top_toxic_vectors(wh):
    got = wh.query("top_toxic_vectors", model="tiny-gpt2", k=10)
    vectors, keys = wh.vectors("value_vectors", model="tiny-gpt2")
    c = cos(vectors, wh.direction("toxic_probe"))
    order = np.argsort(-c)[:10]
    assert (
        got.select("layer", "neuron").rows()
        == keys[order.tolist()].select("layer", "neuron").rows()
    )
    np.testing.assert_allclose(got["cosine"].to_numpy(), c[order], rtol=1e-5)
    # the same answer as the FAISS search
    assert (
        wh.search("toxic_probe", k=10).select("layer", "neuron").rows()
        == got.select("layer", "neuron").rows()
    )


def plain_prompts(wh) -> list[int]:
    """By hand: the base run's prompts that are neither an encoded variant nor a chat."""
    return wh.sql(
        "select prompt from prompts where prompt_set = 'analysis' "
        "and transform is null and messages is null order by prompt"
    )["prompt"].to_list()


def generated_tokens(wh, prompts: list[int] | None = None) -> pl.DataFrame:
    """``prompt, pos`` of the base run's generated tokens (of ``prompts``; default: plain ones)."""
    prompts = plain_prompts(wh) if prompts is None else prompts
    return (
        wh.scan("tokens")
        .filter(pl.col("run") == "base", pl.col("is_generated"), pl.col("prompt").is_in(prompts))
        .select("prompt", "pos")
        .collect()
    )


def mean_writes(wh, run: str, along_tuned: bool = False, prompts=None) -> dict:
    """By hand: per tracked neuron, mean m over the base run's generated tokens (of ``prompts``;
    default: the plain ones), and mean m·⟨v, d̂⟩ (v + δv, the tuned model's value vector, with
    ``along_tuned``)."""
    acts = wh.scan("neuron_acts").filter(pl.col("run") == run).collect()
    generated = generated_tokens(wh, prompts)
    means = (
        acts.join(generated, on=["prompt", "pos"])
        .group_by("layer", "neuron")
        .agg(pl.col("act").mean())
    )
    d = wh.direction("toxic_probe")
    d = d / np.linalg.norm(d)
    vectors, keys = wh.vectors("value_vectors", model="tiny-gpt2")
    if along_tuned:
        delta, delta_keys = wh.vectors("value_vector_diffs", model="dpo")
        assert keys.select("layer", "neuron").equals(delta_keys.select("layer", "neuron"))
        vectors = vectors + delta
    index = {k: i for i, k in enumerate(keys.select("layer", "neuron").iter_rows())}
    return {(l, n): (m, m * float(vectors[index[(l, n)]] @ d)) for l, n, m in means.iter_rows()}


def test_activation_drop(wh):
    got = wh.query("activation_drop", base_run="base", tuned_run="dpo", n=3, rank="cosine")
    base, tuned = mean_writes(wh, "base"), mean_writes(wh, "dpo", along_tuned=True)
    n_generated = generated_tokens(wh).height
    assert (
        0
        < n_generated
        < wh.sql("select count(*) from tokens where run = 'base' and is_generated").item()
    )
    for row in got.iter_rows(named=True):
        key = (row["layer"], row["neuron"])
        assert row["base_mean"] == pytest.approx(base[key][0], rel=1e-5, abs=1e-7)
        assert row["tuned_mean"] == pytest.approx(tuned[key][0], rel=1e-5, abs=1e-7)
        assert row["base_write"] == pytest.approx(base[key][1], rel=1e-4, abs=1e-7)
        assert row["tuned_write"] == pytest.approx(tuned[key][1], rel=1e-4, abs=1e-7)
        assert row["n_tokens"] == n_generated
    # GPT-2 (GELU): rank cosine is the paper's, by the cosine of the value vector
    assert got["write_cosine"].to_list() == got["cosine"].to_list()
    assert got["cosine"].to_list() == sorted(got["cosine"].to_list(), reverse=True)
    # by default, by the base run's mean write: the largest writers toward the direction
    by_write = wh.query("activation_drop", base_run="base", tuned_run="dpo", n=3)
    np.testing.assert_allclose(
        by_write["base_write"], sorted(w for _, w in base.values())[::-1][:3], rtol=1e-4
    )
    # every arm is its own: the base64 variants alone, or every prompt pooled
    for arm, prompts in (
        ("base64", "select prompt from prompts where transform = 'base64'"),
        ("all", "select prompt from prompts where prompt_set = 'analysis'"),
    ):
        chosen = wh.sql(prompts)["prompt"].to_list()
        by_hand = mean_writes(wh, "base", prompts=chosen)
        for row in wh.query("activation_drop", base_run="base", tuned_run="dpo", arm=arm).iter_rows(
            named=True
        ):
            assert row["base_write"] == pytest.approx(
                by_hand[(row["layer"], row["neuron"])][1], rel=1e-4, abs=1e-7
            )


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"arm": "rot31"},
            "'rot31': no such arm of run base (did you mean 'rot13'?); known: all, base64, chat",
        ),
        (
            {"base_run": "bsae"},
            "'bsae': no such run for base_run (did you mean 'base'?); known: base",
        ),
        ({"rank": "size"}, "activation_drop: rank 'size': expected write or cosine"),
    ],
)
def test_a_mistyped_arm_run_or_rank_is_an_error_that_names_it(wh, params, message):
    given = {"base_run": "base", "tuned_run": "dpo", **params}
    for query in ("activation_drop", "drop_baseline", "tracked_write"):
        if query == "tracked_write" and "rank" in params:
            continue
        expected = message.replace("activation_drop", query)
        with pytest.raises(ActwhError, match="^" + re.escape(expected)):  # the message, as it is
            wh.query(query, **given)
    # SQL of one's own that reads an arm gets the macro's error, as it is
    with pytest.raises(ActwhError, match=re.escape("run base has no prompts in arm 'rot31'")):
        wh.sql("select * from arm_prompts('base', 'rot31')")


def bootstrap_draws(wh, n: int, replicates: int) -> np.ndarray:
    """``[replicates, n]``: the prompts (by rank) each replicate draws — the macro's draws."""
    draws = (
        wh.sql(
            "select b, j, bootstrap_index(b, j, $n) as i from range($r) t(b), range($n) d(j) "
            "order by b, j",
            {"n": n, "r": replicates},
        )["i"]
        .to_numpy()
        .reshape(replicates, n)
    )
    assert draws.min() >= 0 and draws.max() < n and len(np.unique(draws)) > n // 2
    return draws


def test_activation_drop_intervals_are_a_paired_bootstrap_over_prompts(wh):
    """Each neuron's change, and its write's, resampled by hand over the base run's prompts."""
    replicates = 200
    got = wh.query("activation_drop", base_run="base", tuned_run="dpo", n=3, replicates=replicates)
    generated = generated_tokens(wh)
    prompts = np.unique(generated["prompt"].to_numpy())
    draws = bootstrap_draws(wh, len(prompts), replicates)
    d = wh.direction("toxic_probe")
    d = d / np.linalg.norm(d)
    vectors, keys = wh.vectors("value_vectors", model="tiny-gpt2")
    delta, _ = wh.vectors("value_vector_diffs", model="dpo")
    for row in got.iter_rows(named=True):
        acts = {
            run: wh.scan("neuron_acts")
            .filter(run=run, layer=row["layer"], neuron=row["neuron"])
            .collect()
            .join(generated, on=["prompt", "pos"])
            .group_by("prompt")
            .agg(pl.col("act").sum(), pl.len().alias("n"))
            .sort("prompt")
            for run in ("base", "dpo")
        }
        assert acts["base"]["prompt"].to_list() == prompts.tolist()
        n = acts["base"]["n"].to_numpy()[draws].sum(axis=1)
        base = acts["base"]["act"].to_numpy()[draws].sum(axis=1) / n
        tuned = acts["dpo"]["act"].to_numpy()[draws].sum(axis=1) / n
        at = ((keys["layer"] == row["layer"]) & (keys["neuron"] == row["neuron"])).arg_true()[0]
        base_dot, tuned_dot = vectors[at] @ d, (vectors[at] + delta[at]) @ d
        expected = {
            "change": tuned - base,
            "write_change": tuned * tuned_dot - base * base_dot,
        }
        for column, values in expected.items():
            np.testing.assert_allclose(
                [row[f"{column}_lo"], row[f"{column}_hi"]],
                np.quantile(values, [0.025, 0.975]),
                rtol=1e-4,
                atol=1e-6,
            )
            assert row[f"{column}_lo"] - 1e-6 <= row[column] <= row[f"{column}_hi"] + 1e-6
        assert row["change"] == pytest.approx(row["tuned_mean"] - row["base_mean"], abs=1e-9)


def test_tracked_write(wh):
    got = wh.query("tracked_write", base_run="base", tuned_run="dpo")
    total = got.filter(pl.col("layer").is_null()).row(0, named=True)
    base, tuned = mean_writes(wh, "base"), mean_writes(wh, "dpo", along_tuned=True)
    assert total["neurons"] == len(base) == got["neurons"].sum() / 2
    assert total["base_write"] == pytest.approx(sum(w for _, w in base.values()), rel=1e-4)
    assert total["tuned_write"] == pytest.approx(sum(w for _, w in tuned.values()), rel=1e-4)
    assert total["writing_toward"] == sum(w > 0 for _, w in base.values())
    layers = got.filter(pl.col("layer").is_not_null())
    assert layers["layer"].to_list() == sorted({l for l, _ in base})


def test_residual_offset(wh):
    got = wh.query("residual_offset")
    probe = wh.direction("toxic_probe")
    for row in got.iter_rows(named=True):
        dx = wh.direction(f"dx.{row['layer']}")
        # δx is the mean over the plain prompts' tokens only
        by_hand = resampled_offsets(wh, row["layer"], np.arange(len(plain_prompts(wh)))[None])[0]
        np.testing.assert_allclose(dx, by_hand, rtol=1e-4, atol=1e-6)
        assert row["arm"] == "plain"
        assert row["dx_norm"] == pytest.approx(np.linalg.norm(dx), rel=1e-5)
        assert row["cos_with_direction"] == pytest.approx(cos(dx, probe), abs=1e-5)
        # the mean projection shift measured at ingest equals δx · unit(probe)
        assert row["shift_along_direction"] == pytest.approx(
            dx @ probe / np.linalg.norm(probe), rel=2e-2, abs=1e-4
        )


def resampled_offsets(wh, layer: int, draws: np.ndarray) -> np.ndarray:
    """δx of each replicate, by hand: the mean over the token rows of the prompts it drew."""
    frames = [
        wh.sql(
            "select prompt, vec from residuals where run = $r and layer = $l "
            "and site = 'resid_mid' and prompt in (select unnest($p)) order by prompt, pos",
            {"r": run, "l": layer, "p": plain_prompts(wh)},
        )
        for run in ("base", "dpo")
    ]
    diff = np.vstack(frames[1]["vec"].to_list()) - np.vstack(frames[0]["vec"].to_list())
    prompts = frames[0]["prompt"].to_numpy()
    rows = [np.flatnonzero(prompts == p) for p in np.unique(prompts)]
    return np.array([diff[np.concatenate([rows[i] for i in drawn])].mean(0) for drawn in draws])


def test_dx_decomposition_adds_up_to_the_stored_offset(wh):
    """Each block's output change by hand from the stored means (plain prompts): attention k is
    δresid_mid_k − δresid_post_{k−1}, MLP k is δresid_post_k − δresid_mid_k; they sum to δx."""
    frame = wh.query("dx_decomposition")
    got, totals = frame.filter(pl.col("block").is_not_null()), frame.row(-1, named=True)
    layer = got["dx_layer"][0]
    assert frame["block"].to_list() == [*range(layer + 1), None]
    dx = wh.direction(f"dx.{layer}")
    plain = plain_prompts(wh)

    def delta(site, k):
        means = [
            np.vstack(
                wh.sql(
                    "select vec from residuals where run = $r and site = $s and layer = $l "
                    "and prompt in (select unnest($p))",
                    {"r": run, "s": site, "l": k, "p": plain},
                )["vec"].to_list()
            )
            .astype(np.float64)
            .mean(0)
            for run in ("base", "dpo")
        ]
        return means[1] - means[0]

    parts = [delta("resid_mid", 0)]
    for k in range(layer):
        parts.append(delta("resid_post", k) - delta("resid_mid", k))  # MLP k
        parts.append(delta("resid_mid", k + 1) - delta("resid_post", k))  # attention k + 1
    total = np.sum(parts, axis=0)
    assert np.linalg.norm(total - dx) / np.linalg.norm(dx) < 1e-3  # the acceptance bound
    assert got["sum_error"][0] < 1e-3
    shares = got["attn_share"].sum() + got["mlp_share"].sum()
    assert shares == pytest.approx(1.0, abs=1e-3)
    for k in range(layer):
        row = got.row(k, named=True)
        mlp = delta("resid_post", k) - delta("resid_mid", k)
        assert row["mlp_share"] == pytest.approx(mlp @ dx / (dx @ dx), abs=1e-5)
        assert row["mlp_norm"] == pytest.approx(np.linalg.norm(mlp), rel=1e-4, abs=1e-7)
    assert got["mlp_share"][layer] is None  # MLP ℓ comes after resid_mid ℓ
    # the totals row, with intervals around them from resampled prompts
    assert totals["attn_share"] == pytest.approx(got["attn_share"].sum(), abs=1e-9)
    assert totals["mlp_share"] == pytest.approx(got["mlp_share"].sum(), abs=1e-9)
    for column in ("attn_share", "mlp_share"):
        assert totals[column + "_lo"] <= totals[column] <= totals[column + "_hi"]
        assert (got[column + "_lo"] < got[column + "_hi"]).all()
    # each MLP's change = its coefficients' (Σ δm̄·v) + its value vectors' (Σ m̄'·δv) + its
    # bias's: the bias change of GPT-2's c_proj, read off the two models
    base, tuned = (wh.load_model(m, device="cpu").adapter for m in ("tiny-gpt2", "dpo"))
    for k in range(layer):
        row = got.row(k, named=True)
        bias = (tuned.mlp_out_proj(k).bias - base.mlp_out_proj(k).bias).detach().numpy()
        split = row["mlp_dm_share"] + row["mlp_dv_share"] + bias @ dx / (dx @ dx)
        assert split == pytest.approx(row["mlp_share"], abs=2e-3), k
    with pytest.raises(ActwhError, match=re.escape("no δx direction dx.99 (layers: 0-2)")):
        wh.query("dx_decomposition", layer=99)


def test_toxic_tokens_are_the_first_tokens_of_toxic_continuations(wh):
    run = "eval.tiny-gpt2.test"
    scores = wh.sql(
        "select prompt, score from scores where run = $r and scorer = 'profanity'", {"r": run}
    )
    threshold = float(np.median(scores["score"]))  # about half the continuations count as toxic
    got = wh.query("toxic_tokens", run=run, threshold=threshold, n=1000)
    first = wh.sql(
        "select t.prompt, t.token_id, t.token from tokens t join generations g using (run, prompt) "
        "where t.run = $r and t.pos = g.n_prompt_tokens",
        {"r": run},
    ).join(scores, on="prompt")
    first = first.filter(pl.col("token").str.contains(r"^\s.*[[:alnum:]]"))
    by_hand = (
        first.group_by("token_id")
        .agg(
            (pl.col("score") >= threshold).sum().alias("in_toxic"),
            (pl.col("score") < threshold).sum().alias("in_clean"),
        )
        .filter(pl.col("in_toxic") > 0)
        .sort(["in_toxic", "in_clean", "token_id"], descending=[True, False, False])
    )
    assert got["token_id"].to_list() == by_hand["token_id"].to_list()
    assert got["in_toxic"].to_list() == by_hand["in_toxic"].to_list()
    with pytest.raises(ActwhError, match="^run base has no wordlist scores"):
        wh.query("toxic_tokens", run="base", scorer="wordlist")


def test_residual_offset_intervals_resample_prompts(wh):
    replicates = 100
    got = wh.query("residual_offset_intervals", replicates=replicates)
    offset = wh.query("residual_offset")
    layers = got.filter(pl.col("layer").is_not_null())
    assert layers["layer"].to_list() == offset["layer"].to_list()
    np.testing.assert_allclose(
        layers["cos_with_direction"], offset["cos_with_direction"], atol=1e-5
    )
    n_prompts = len(plain_prompts(wh))  # δx is the plain arm's
    assert set(got["n_prompts"]) == {n_prompts}
    probe = wh.direction("toxic_probe")
    replicate_cos = []
    for layer in layers["layer"]:
        dx = resampled_offsets(wh, layer, bootstrap_draws(wh, n_prompts, replicates))
        replicate_cos.append(cos(dx, probe))
        row = layers.filter(pl.col("layer") == layer).row(0, named=True)
        np.testing.assert_allclose(
            [row["cos_with_direction_lo"], row["cos_with_direction_hi"]],
            np.quantile(replicate_cos[-1], [0.025, 0.975]),
            atol=1e-5,
        )
        assert (
            row["cos_with_direction_lo"] - 1e-6
            <= row["cos_with_direction"]
            <= row["cos_with_direction_hi"] + 1e-6
        )
    mean = got.filter(pl.col("layer").is_null()).row(0, named=True)
    assert mean["cos_with_direction"] == pytest.approx(layers["cos_with_direction"].mean())
    np.testing.assert_allclose(
        [mean["cos_with_direction_lo"], mean["cos_with_direction_hi"]],
        np.quantile(np.mean(replicate_cos, axis=0), [0.025, 0.975]),
        atol=1e-5,
    )


def test_value_vector_shift_intervals_resample_prompts(wh):
    replicates = 100
    got = wh.query("value_vector_shift_intervals", model="dpo", layer=2, replicates=replicates)
    shift = (
        wh.query("value_vector_shift", model="dpo", layer=2)
        .group_by("value_layer")
        .agg(pl.col("layer_mean", "oriented_mean", "aggregate_cos").first())
        .sort("value_layer")
    )
    # layer 2 itself is the null row: its MLP comes after δx of layer 2
    assert got["value_layer"].to_list() == [0, 1, 2]
    assert got["causal"].to_list() == [True, True, False]
    causal = got.filter("causal")
    assert causal["value_layer"].to_list() == shift["value_layer"].to_list() == [0, 1]
    for column in ("layer_mean", "oriented_mean", "aggregate_cos"):
        np.testing.assert_allclose(causal[column], shift[column], atol=1e-5)
    n_prompts = len(plain_prompts(wh))
    dx = resampled_offsets(wh, 2, bootstrap_draws(wh, n_prompts, replicates))
    delta, keys = wh.vectors("value_vector_diffs", model="dpo")
    m = wh.sql(
        "select sum(sum) / sum(n) as m from neuron_stats where run = 'base' and layer = 0 "
        "and arm = 'plain' group by neuron order by neuron"  # δx's arm
    )["m"].to_numpy()
    mine = delta[(keys["layer"] == 0).to_numpy()]
    unit = mine / np.linalg.norm(mine, axis=1, keepdims=True)
    replicate_values = {
        "layer_mean": [cos(unit, x).mean() for x in dx],
        "oriented_mean": [(np.sign(m) * cos(unit, x)).mean() for x in dx],
        "aggregate_cos": [cos(m @ mine, x) for x in dx],
    }
    row = got.row(0, named=True)
    for column, values in replicate_values.items():
        np.testing.assert_allclose(
            [row[f"{column}_lo"], row[f"{column}_hi"]],
            np.quantile(values, [0.025, 0.975]),
            atol=1e-5,
        )
    # the part of δx along itself that Σ m̄·δv of layer 0 makes; a random direction's |cos|
    dx_mean = wh.direction("dx.2").astype(np.float64)
    assert row["aggregate_share"] == pytest.approx(
        (m @ mine) @ dx_mean / (dx_mean @ dx_mean), rel=1e-3, abs=1e-6
    )
    d_model = len(dx_mean)
    assert 1 / np.sqrt(d_model) < row["random_cos_p95"] < 3 / np.sqrt(d_model)


def test_value_vector_shift(wh):
    got = wh.query("value_vector_shift", model="dpo", layer=2, bins=20)
    delta, keys = wh.vectors("value_vector_diffs", model="dpo")
    dx = wh.direction("dx.2")
    stats = wh.sql(
        "select layer, neuron, sum(sum) / sum(n) as m from neuron_stats where run = 'base' "
        "and arm = 'plain' group by all order by all"  # δx's arm
    )
    for layer in (0, 1):
        mine = delta[(keys["layer"] == layer).to_numpy()]
        m = stats.filter(pl.col("layer") == layer)["m"].to_numpy()
        c = cos(mine, dx)
        rows = got.filter(pl.col("value_layer") == layer)
        for column, values in (("n", c), ("oriented_n", np.sign(m) * c)):
            counts, _ = np.histogram(values, bins=20, range=(-1, 1))
            bins = np.rint((rows["cosine"].to_numpy() + 1) * 10 - 0.5).astype(int)
            np.testing.assert_array_equal(counts[bins], rows[column].to_numpy())
            assert rows[column].sum() == len(c)
        assert rows["proportion"].sum() == pytest.approx(1.0)
        assert rows["oriented_proportion"].sum() == pytest.approx(1.0)
        assert rows["layer_mean"][0] == pytest.approx(c.mean(), abs=1e-5)
        assert rows["oriented_mean"][0] == pytest.approx((np.sign(m) * c).mean(), abs=1e-5)
        assert rows["aggregate_cos"][0] == pytest.approx(cos(m @ mine, dx), abs=1e-4)
    assert set(got["value_layer"]) == {0, 1}


def test_logit_lens_target(wh):
    token = wh.sql("select min(token) from token_probs").item()
    got = wh.query("logit_lens_target", token=token)
    probs = wh.scan("token_probs").filter(pl.col("token") == token).collect()
    last = wh.sql("select run, prompt, n_prompt_tokens - 1 as pos from generations")
    expected = (
        probs.join(last, on=["run", "prompt", "pos"])
        .group_by("run", "layer", "site")
        .agg(pl.col("prob").mean())
    )
    joined = got.join(expected, on=["run", "layer", "site"])
    assert joined.height == got.height == expected.height
    np.testing.assert_allclose(joined["mean_prob"].to_numpy(), joined["prob"].to_numpy(), rtol=1e-5)


def test_weight_similarity(wh):
    got = wh.query("weight_similarity", model="dpo")
    diffs = wh.sql("select parameter, cosine, numel from weight_diffs where model = 'dpo'")
    mlp = diffs.filter(pl.col("parameter").str.contains("mlp"))
    row = got.filter(pl.col("part") == "mlp").row(0, named=True)
    assert row["tensors"] == mlp.height and row["parameters"] == mlp["numel"].sum()
    assert row["min_cosine"] == pytest.approx(mlp["cosine"].min())
    assert got["tensors"].sum() == diffs.height


def test_toxicity_table(wh):
    got = wh.query("toxicity_table")
    stored = wh.sql("select model, scorer, toxicity, perplexity, f1 from evaluations")
    columns = ("model", "scorer", "toxicity", "perplexity", "f1")
    assert sorted(got.select(columns).rows()) == sorted(stored.rows())
    assert got["role"].to_list()[0] == "base"
    assert set(got["scorer"]) == {"profanity", "wordlist"}  # the demo evaluates with both


def test_toxicity_intervals_are_a_paired_bootstrap_over_prompts(wh):
    """The query's interval, computed by hand from the per-prompt scores and the same draws."""
    replicates = 200
    got = wh.query("toxicity_table", scorer="profanity", replicates=replicates)
    row = got.filter(pl.col("model") == "dpo").row(0, named=True)
    scores = {}
    for model in ("dpo", row["parent"]):
        frame = wh.sql(
            "select s.prompt, s.score from scores s join evaluations e on e.run = s.run "
            "and e.scorer = s.scorer where e.model = $m and e.scorer = 'profanity' "
            "and e.prompt_set = $p order by s.prompt",
            {"m": model, "p": row["prompt_set"]},
        )
        scores[model] = frame["score"].to_numpy().astype(np.float64)
    tuned, base = scores["dpo"], scores[row["parent"]]
    draws = bootstrap_draws(wh, len(tuned), replicates)
    means, changes = tuned[draws].mean(axis=1), (tuned - base)[draws].mean(axis=1)
    assert row["toxicity"] == pytest.approx(tuned.mean(), abs=1e-6)
    assert row["toxicity_change"] == pytest.approx((tuned - base).mean(), abs=1e-6)
    expected = np.quantile(means, [0.025, 0.975]), np.quantile(changes, [0.025, 0.975])
    np.testing.assert_allclose([row["toxicity_lo"], row["toxicity_hi"]], expected[0], atol=1e-6)
    np.testing.assert_allclose(
        [row["toxicity_change_lo"], row["toxicity_change_hi"]], expected[1], atol=1e-6
    )
    assert row["toxicity_lo"] - 1e-6 <= row["toxicity"] <= row["toxicity_hi"] + 1e-6
    base_row = got.filter(pl.col("role") == "base").row(0, named=True)
    assert base_row["toxicity_change"] is None  # no parent to compare with
    # the un-aligning sweep: each variant's edit, and which variant a control is the control of
    edits = {
        r["model"]: (r["edit_scale"], r["keys_by"], r["control_of"])
        for r in got.filter(pl.col("edit_scale").is_not_null()).iter_rows(named=True)
    }
    assert edits == {
        "unaligned": (10.0, "cosine", None),
        "unaligned-control": (10.0, None, "unaligned"),
        "unaligned.x3": (3.0, "cosine", None),
        "unaligned-control.x3": (3.0, None, "unaligned.x3"),
    }
    assert base_row["edit_scale"] is None and not got["one_sided"].any()


def test_perplexity_and_f1_items_add_up_to_the_evaluation(wh):
    """The items the intervals resample are exactly what the numbers average."""
    frame = wh.sql(
        "select e.model, any_value(e.perplexity) as perplexity, any_value(e.f1) as f1, "
        "exp(sum(i.value) filter (where i.metric = 'nll') "
        "    / sum(i.weight) filter (where i.metric = 'nll')) as from_items, "
        "avg(i.value) filter (where i.metric = 'f1') as f1_items, "
        "count(*) filter (where i.metric = 'nll') as paragraphs "
        "from evaluations e join eval_items i on i.run = e.run "
        "where e.scorer = 'profanity' group by e.model"
    )
    assert frame.height == 6 and frame["paragraphs"].min() > 1  # base, dpo, 2 × (edit, control)
    np.testing.assert_allclose(frame["from_items"], frame["perplexity"], rtol=1e-6)
    np.testing.assert_allclose(frame["f1_items"], frame["f1"], rtol=1e-6)
    table = wh.query("toxicity_table", scorer="profanity", replicates=100)
    for row in table.iter_rows(named=True):
        assert row["perplexity_lo"] <= row["perplexity"] * (1 + 1e-9)
        assert row["perplexity"] <= row["perplexity_hi"] * (1 + 1e-9)
        assert row["f1_lo"] - 1e-9 <= row["f1"] <= row["f1_hi"] + 1e-9


def test_transform_gap(wh):
    got = wh.query("transform_gap", base_run="base", tuned_run="dpo", layer=2)
    assert got["transform"].to_list() == ["plain", "base64", "chat", "leet", "rot13"]
    prompts = wh.sql(
        "select prompt, coalesce(transform, case when messages is null then 'plain' "
        "else 'chat' end) as transform from prompts where prompt_set = 'analysis'"
    )
    proj = (
        wh.scan("projections")
        .filter(
            pl.col("layer") == 2,
            pl.col("site") == "resid_post",
            pl.col("direction") == "toxic_probe",
        )
        .collect()
    )
    tokens = wh.scan("tokens").select("run", "prompt", "pos", "is_generated").collect()
    per_prompt = (
        proj.join(tokens, on=["run", "prompt", "pos"])
        .filter(pl.col("is_generated"))
        .group_by("run", "prompt")
        .agg(pl.col("dot").mean())
        .join(prompts, on="prompt")
    )
    for row in got.iter_rows(named=True):
        mine = per_prompt.filter(pl.col("transform") == row["transform"])
        base = mine.filter(pl.col("run") == "base")["dot"].mean()
        tuned = mine.filter(pl.col("run") == "dpo")["dot"].mean()
        assert row["base_dot"] == pytest.approx(base, rel=1e-5)
        assert row["gap"] == pytest.approx(tuned - base, rel=1e-4, abs=1e-6)


def test_turn_gap(wh):
    got = wh.query("turn_gap", base_run="base", tuned_run="dpo", layer=2, site="resid_mid")
    assert got["part"].to_list() == ["message 0", "message 1", "message 2", "reply header", "reply"]
    messages = got.filter(pl.col("part").str.starts_with("message"))
    assert set(messages["prompts"]) == {6}  # the six shipped chats, three messages each
    rows = wh.sql(
        "select p.run, p.dot, t.turn, t.is_generated from projections p "
        "join tokens t on t.run = 'base' and t.prompt = p.prompt and t.pos = p.pos "
        "where p.layer = 2 and p.site = 'resid_mid' and p.direction = 'toxic_probe' "
        "and t.turn = 1 and not t.is_generated"
    )
    base = rows.filter(pl.col("run") == "base")["dot"].mean()
    tuned = rows.filter(pl.col("run") == "dpo")["dot"].mean()
    second = got.row(1, named=True)
    assert second["base_dot"] == pytest.approx(base, rel=1e-5)
    assert second["gap"] == pytest.approx(tuned - base, rel=1e-4, abs=1e-6)


def test_pca(wh):
    layer = 2
    neuron = wh.sql("select neuron from neuron_acts where layer = 2 limit 1").item()
    frame = wh.pca("base", "dpo", layer, neuron=(2, neuron))
    base = frame.filter(pl.col("run") == "base").sort("prompt")
    tuned = frame.filter(pl.col("run") == "dpo").sort("prompt")
    assert base["prompt"].to_list() == tuned["prompt"].to_list() and base.height == 50
    assert frame["activation"].null_count() == 0
    # Along the shift axis, mean(tuned − base) = ‖δ̄‖², δ̄ the mean z-scored difference.
    last = wh.sql(
        "select prompt, n_prompt_tokens - 1 as pos from generations where run = 'base' "
        "and n_prompt_tokens > 1 order by prompt limit 50"
    )
    X = {}
    for run in ("base", "dpo"):
        vectors, keys = wh.vectors("residuals", run=run, layer=layer, site="resid_mid")
        rows = keys.with_row_index().join(last, on=["prompt", "pos"]).sort("prompt")["index"]
        X[run] = vectors[rows.to_numpy()]
    sigma = np.vstack([X["base"], X["dpo"]]).std(axis=0)
    delta = ((X["dpo"] - X["base"]) / sigma).mean(axis=0)
    gap = (tuned["shift"] - base["shift"]).mean()
    assert gap == pytest.approx(delta @ delta, rel=1e-3)


def test_queries_cli_and_errors(study):
    wh_path = study[0] / "wh"
    listing = CliRunner().invoke(main, ["queries", str(wh_path)])
    assert listing.exit_code == 0
    for name in (
        'top_toxic_vectors(model, direction="toxic_probe", k=20, run=null)',
        "activation_drop(base_run, tuned_run",
    ):
        assert name in listing.stdout
    unknown = CliRunner().invoke(main, ["query", str(wh_path), "nope"])
    assert (
        unknown.exit_code == 2
        and "named queries: activation_drop, drop_baseline, dx_decomposition" in unknown.stderr
    )
    bad_param = CliRunner().invoke(main, ["query", str(wh_path), "toxicity_table", "-p", "k=3"])
    assert (
        bad_param.exit_code == 2
        and "has no parameter 'k'; its parameters: scorer=null, replicates=1000" in bad_param.stderr
    )
    missing = CliRunner().invoke(main, ["query", str(wh_path), "weight_similarity"])
    assert missing.exit_code == 2 and "needs model" in missing.stderr
    ok = CliRunner().invoke(
        main, ["query", str(wh_path), "weight_similarity", "-p", "model=dpo", "--csv"]
    )
    assert ok.exit_code == 0 and ok.stdout.startswith("part,tensors,parameters,min_cosine")


def test_a_python_analysis_declares_what_its_function_takes():
    from actwh.queries.loader import named_query, parse_python

    header = "-- name: example\n-- answers: x\n-- param model: the model\n"
    assert parse_python(header, lambda sql, model: sql).params[0].name == "model"
    with pytest.raises(ValueError, match="takes \\['layer'\\]"):
        parse_python(header, lambda sql, layer: sql)
    assert named_query("residual_offset_intervals").run is not None


def test_parameters_are_bound_not_formatted(wh):
    hostile = "dpo' OR 1=1; DROP VIEW weight_diffs; --"
    with pytest.raises(NotFound, match="no such model"):  # a name, checked: never SQL
        wh.query("weight_similarity", model=hostile)
    assert wh.sql("select count(*) from weight_diffs where model = $m", {"m": hostile}).item() == 0
    assert wh.query("weight_similarity", model="dpo").height > 0


def test_null_is_not_a_silent_no_filter(study, wh):
    """``-p model=null`` used to bind NULL and match nothing (or everything), silently."""
    out = CliRunner().invoke(
        main, ["query", str(study[0] / "wh"), "weight_similarity", "-p", "model=null"]
    )
    assert out.exit_code == 2 and "parameter model cannot be null" in out.stderr
    with pytest.raises(ActwhError, match="parameter k cannot be null"):
        wh.query("top_toxic_vectors", model="tiny-gpt2", k=None)
    assert wh.query("top_toxic_vectors", model="tiny-gpt2", run=None).height == 20  # its default


def test_query_starts_without_torch(study):
    code = (
        "import sys; from actwh.cli import main\n"
        f"main(['query', {str(study[0] / 'wh')!r}, 'toxicity_table', '--csv'], standalone_mode=False)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("model,role,parent")


def test_every_link_in_the_report_lands(study):
    """The study's report links only to what it renders: every href="#x" has an id="x"."""
    import re

    html = (study[0] / "report.html").read_text()
    targets = set(re.findall(r"""href=["']#([^"']+)["']""", html))
    ids = set(re.findall(r"""id=["']([^"']+)["']""", html))
    assert targets and not targets - ids, sorted(targets - ids)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_report_renders_in_headless_chromium(study, tmp_path):
    page = study[0] / "report.html"
    html = page.read_text()
    assert "<script src=" not in html and "cdn" not in html.lower()  # nothing fetched
    specs = json.loads(html.split("const specs = ", 1)[1].split(";\n", 1)[0])
    dom = dump_dom(page, tmp_path / "profile")
    assert f'<p id="status">rendered {len(specs)} charts; errors: 0</p>' in dom
    for key in specs:
        chart = dom.split(f'id="{key}"', 1)[1].split("</section>", 1)[0]
        assert "<svg" in chart, key


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_no_chart_is_wider_than_its_section(study, tmp_path):
    edges = chart_edges(study[0] / "report.html", tmp_path / "profile")
    assert "chart-figure2" in edges
    for key, (right, box) in edges.items():
        assert 0 < right <= box, (key, right, box)


def test_the_report_shows_the_findings_the_demo_printed(study):
    """Every line the demo printed between "Findings" and the report's path is in the report's
    findings section, escaped."""
    import html

    out, _, lines = study
    page = (out / "report.html").read_text()
    section = page.split('<section id="findings">', 1)[1].split("</section>", 1)[0]
    shown = html.unescape(section.split('<pre class="findings">', 1)[1].split("</pre>", 1)[0])
    start = lines.index("\nFindings") + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("  report: "))
    assert end - start > 20
    assert shown.splitlines() == [line.removeprefix("  ") for line in lines[start:end]]


def tracked(wh) -> dict:
    """The first neuron the base run tracked."""
    row = wh.sql("select layer, neuron from neuron_acts where run = 'base' order by all limit 1")
    return row.row(0, named=True)


def test_a_neuron_page_agrees_with_neuron_acts(wh):
    layer, neuron = tracked(wh).values()
    acts = wh.sql(
        "select run, prompt, pos, act from neuron_acts where layer = $l and neuron = $n "
        "and run in ('base', 'dpo')",
        {"l": layer, "n": neuron},
    )
    base = acts.filter(pl.col("run") == "base")
    tuned = dict(
        zip(
            zip(*acts.filter(pl.col("run") == "dpo").select("prompt", "pos"), strict=True),
            acts.filter(pl.col("run") == "dpo")["act"],
            strict=True,
        )
    )
    for sign in (1, -1):
        got = wh.query(
            "neuron_contexts",
            base_run="base",
            tuned_run="dpo",
            layer=layer,
            neuron=neuron,
            sign=sign,
            k=5,
            window=3,
        )
        ranked = base.filter(pl.col("pos") >= 1).sort(
            [pl.col("act") * sign, "prompt", "pos"], descending=[True, False, False]
        )
        assert got.select("prompt", "pos").rows() == ranked.select("prompt", "pos").head(5).rows()
        np.testing.assert_allclose(got["base_act"], ranked["act"].head(5))
        np.testing.assert_allclose(
            got["tuned_act"], [tuned[(p, q)] for p, q in got.select("prompt", "pos").rows()]
        )
    first = got.row(0, named=True)
    text = wh.sql(
        "select string_agg(token, '' order by pos) from tokens where run = 'base' "
        "and prompt = $p and pos between $a and $b",
        {"p": first["prompt"], "a": first["pos"] - 3, "b": first["pos"] + 3},
    ).item()
    assert first["before"] + first["token"] + first["after"] == text
    histogram = wh.query(
        "neuron_histogram", base_run="base", tuned_run="dpo", layer=layer, neuron=neuron, bins=7
    )
    edges = np.linspace(acts["act"].min(), acts["act"].max(), 8)
    for run in ("base", "dpo"):
        counts, _ = np.histogram(acts.filter(pl.col("run") == run)["act"].to_numpy(), edges)
        got = histogram.filter(pl.col("run") == run)
        assert dict(zip(got["bin"], got["tokens"], strict=True)) == {
            i: c for i, c in enumerate(counts.tolist()) if c
        }
        assert got["share"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--base-run", "bsae"], "--base-run 'bsae': no such run (did you mean 'base'?); known: "),
        (["--tuned-run", "nope"], "--tuned-run 'nope': no such run"),
        (["--direction", "toxic_prob"], "(did you mean 'toxic_probe'?)"),
        (["--token", "garbage"], "--token 'garbage': no such logit-lens target token"),
        (["--neurons", "99:0"], "--neurons 99:0: out of range (the model of base has 3 layers"),
        (["--prompts", "1,999"], "--prompts 999: no such prompt in run base"),
    ],
)
def test_a_report_asked_for_what_is_not_there_names_it(study, tmp_path, args, message):
    """These used to exit 0 with pages that said "Not available" (or a traceback)."""
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", str(study[0] / "wh"), "-o", str(out), *args])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert result.stderr.count("\n") == 1 and not out.exists()


def test_a_report_replaces_only_an_earlier_report(study, wh, tmp_path):
    mine = tmp_path / "notes.html"
    mine.write_text("my notes")
    with pytest.raises(ActwhError, match="the file exists; pass force"):
        write_report(wh, out=mine)
    assert mine.read_text() == "my notes"
    with pytest.raises(ActwhError, match="inside the warehouse"):
        write_report(wh, out=study[0] / "wh" / "report.html")
    first = write_report(wh, out=tmp_path / "r.html")
    again = write_report(wh, out=tmp_path / "r.html")  # an earlier report and its charts: replaced
    assert again.charts == first.charts and all(p.exists() for p in again.charts)
    stray = tmp_path / f"s.{first.charts[0].name.split('.', 1)[1]}"
    stray.write_bytes(b"someone's chart")
    with pytest.raises(ActwhError, match="exists beside it and no earlier report wrote it"):
        write_report(wh, out=tmp_path / "s.html")
    assert not (tmp_path / "s.html").exists() and stray.read_bytes() == b"someone's chart"
    assert write_report(wh, out=tmp_path / "s.html", force=True).page.exists()


def test_the_report_has_neuron_pages_and_token_views(study, wh, tmp_path):
    layer, neuron = tracked(wh).values()
    written = write_report(wh, out=tmp_path / "r.html", neurons=[(layer, neuron)], prompts=[0])
    page = written.page.read_text()
    plan = written.plan
    assert (layer, neuron) in plan.neurons and 0 in plan.prompts and len(plan.prompts) > 1
    for l, n in plan.neurons:
        assert f'<section id="neuron-L{l}-{n}">' in page and f'href="#neuron-L{l}-{n}"' in page
    assert '<section id="prompt-0">' in page and 'href="#prompt-0"' in page
    assert "Not available" not in page.split('<section id="neuron-L', 1)[1]
    # the token view shows the stored projection of each token on hover
    row = wh.sql(
        "select p.pos, t.token, p.dot from projections p join tokens t using (run, prompt, pos) "
        "where p.run = 'base' and p.prompt = 0 and p.layer = $l and p.site = 'resid_mid' "
        "and p.direction = 'toxic_probe' and p.pos = 1",
        {"l": plan.layer},
    ).row(0, named=True)
    title = f"{row['token']!r} pos 1: {row['dot']:+.3f}"
    assert html.escape(title, quote=True) in page
    # the most changed prompts come first
    shift = wh.query("prompt_shift", base_run="base", tuned_run="dpo", layer=plan.layer)
    assert plan.prompts[0] == shift["prompt"][0]
    assert written.page.stat().st_size < 10e6
    # a chat's view marks its messages; an encoded prompt names its transform
    chat = wh.sql("select prompt from tokens where run = 'base' and turn = 2 limit 1").item()
    encoded = wh.sql(
        "select prompt, transform from prompts where transform is not null limit 1"
    ).row(0, named=True)
    page = write_report(
        wh, out=tmp_path / "s.html", prompts=[chat, encoded["prompt"]]
    ).page.read_text()
    view = page.split(f'<section id="prompt-{chat}">', 1)[1].split("</section>", 1)[0]
    assert "a chat of 3 messages" in view and "message 2</span>" in view
    view = page.split(f'<section id="prompt-{encoded["prompt"]}">', 1)[1].split("</section>")[0]
    assert f"({encoded['transform']} of prompt" in view


def test_more_seeds_add_only_the_new_ones_and_report_the_spread(study):
    """Last: it adds a model. A rerun with --seeds 2 repeats pairs → DPO → evaluation once more
    (seed 1), reusing everything else, and the findings give each seed's numbers."""
    out = study[0]
    with actwh.open(out / "wh") as w:
        before = set(w.sql("select name from models")["name"])
    lines = []
    findings = run_study(out, tiny_settings(out.parent / "tiny-gpt2", seeds=2), echo=lines.append)
    with actwh.open(out / "wh") as w:
        added = set(w.sql("select name from models")["name"]) - before
        assert added == {"dpo.seed1"}
        assert w.sql("select role, parent from models where name = 'dpo.seed1'").row(0) == (
            "dpo",
            "tiny-gpt2",
        )
    assert (out / "pairs-seed1.jsonl").is_file()
    seeds = pl.DataFrame(findings["seeds"])
    assert sorted(seeds["model"].unique()) == ["dpo", "dpo.seed1"]
    assert set(seeds["scorer"]) == {"profanity", "wordlist"}
    text = "\n".join(lines)
    assert "DPO over 2 seeds of pairs → DPO (dpo, dpo.seed1)" in text
    # the seed's DPO model also ran teacher-forced on the base run: its own δx and neurons
    mechanism = findings["seed_mechanism"]
    assert [r["model"] for r in mechanism] == ["dpo", "dpo.seed1"]
    with actwh.open(out / "wh") as w:
        n_layers = w.sql("select n_layers from models where name = 'tiny-gpt2'").item()
        assert w.query("residual_offset", prefix="dx").height == n_layers  # not dx_seed1's
        seed_total = w.query("tracked_write", base_run="base", tuned_run="dpo.seed1")
        dx = w.direction(f"dx_seed1.{n_layers - 1}")
        probe = w.direction("toxic_probe")
    # the same sums in another query: DuckDB adds in parallel, so the last bits may differ
    assert mechanism[1]["tuned_write"] == pytest.approx(seed_total["tuned_write"][-1], rel=1e-12)
    assert mechanism[1]["base_write"] == pytest.approx(mechanism[0]["base_write"])
    assert mechanism[1]["dx_cos"]["cos_with_direction"] == pytest.approx(cos(dx, probe), abs=1e-5)
    assert f"cos(δx, toxic_probe) at layer {n_layers - 1}: " in text
    assert "toxicity by wordlist" in text and "(independent)" in text


def model_row(ppl: tuple, change: tuple) -> dict:
    """A findings row: perplexity (value, lo, hi) and a toxicity change (value, lo, hi)."""
    return {
        "perplexity": dict(zip(("value", "value_lo", "value_hi"), ppl, strict=True)),
        "toxicity": {
            "profanity": dict(
                zip(("value_change", "value_change_lo", "value_change_hi"), change, strict=True)
            )
        },
    }


@pytest.mark.parametrize(
    "edit, control, verdict",
    [  # perplexity beyond the control's: breakage; a change within the control's: not un-aligning
        (
            model_row((150, 100, 200), (0.1, 0.08, 0.12)),
            model_row((15, 10, 20), (0, -0.01, 0.01)),
            "flagged",
        ),
        (
            model_row((15, 10, 20), (0.04, 0.02, 0.06)),
            model_row((9e3, 5e3, 2e4), (0.03, 0.01, 0.05)),
            "not un-aligning",
        ),
        (
            model_row((15, 10, 20), (0.1, 0.08, 0.12)),
            model_row((15, 10, 20), (0, -0.01, 0.01)),
            "un-aligning: toxicity change +0.100 [+0.080, +0.120] beyond",
        ),
    ],
)
def test_un_aligning_is_read_against_its_control(edit, control, verdict):
    from actwh.study.findings import unaligning_verdict

    assert unaligning_verdict(edit, control, "profanity").startswith(verdict)


def test_a_demo_out_holding_another_models_study_is_refused(study, tmp_path):
    from tiny_models import build_llama

    other = build_llama(tmp_path / "other")
    with pytest.raises(ActwhError, match="holds the study of tiny-gpt2, not of other; give"):
        run_study(study[0], tiny_settings(other), echo=lambda _: None)


def test_selective_one_sided_keys_and_their_control(study, tmp_path):
    """Keys chosen by selectivity are the query's top t; a one-sided edit scales m_i only where
    sign(m_i) = sign⟨v_i, d⟩; its write-matched control is one-sided too, matched on the side it
    scales (mean max(±m, 0)·‖v‖ in the run, by hand)."""
    import shutil

    import torch

    root = tmp_path / "wh"
    shutil.copytree(study[0] / "wh", root)
    labels = "category:provocative"
    with actwh.open(root) as w:
        top = w.query("selectivity", run="base.last-layer", labels=labels).filter(pl.col("t") > 0)
        w.variant(
            "sel", base="dpo", unalign="toxic_probe", scale=3.0, k=2,
            run="base.last-layer", keys=f"selectivity:{labels}", one_sided=True, device="cpu",
        )  # fmt: skip
        w.variant("sel-control", control_of="sel", seed=1, match="write", device="cpu")
        edit, control = (
            json.loads(w.sql("select config from models where name = $m", {"m": m}).item())["edit"]
            for m in ("sel", "sel-control")
        )
        d = w.direction("toxic_probe")
        tuned, edited = (w.load_model(m, device="cpu") for m in ("dpo", "sel"))
        sides = w.sql(
            """select layer, neuron, sum(sum_pos) / sum(n) as pos, (sum(sum_pos) - sum(sum))
               / sum(n) as neg from neuron_stats where run = 'base.last-layer' and generated
               group by all"""
        )
    chosen = [tuple(k) for k in edit["keys"]]
    assert chosen == [tuple(r) for r in top.select("layer", "neuron").head(2).iter_rows()]
    assert edit["chosen_by"] == f"selectivity:{labels}" and len(edit["signs"]) == 2
    assert "signs" in control and control["match"] == "write"
    adapter = tuned.adapter
    for (l, n), sign in zip(chosen, edit["signs"], strict=True):
        v = adapter.write_vectors(l)[n].detach().float().numpy()
        assert sign == (1 if v @ d > 0 else -1)
    # the edit's effect on m: ×3 where sign·m > 0, untouched elsewhere
    layer = chosen[0][0]
    ids = torch.arange(3, 40)[None]
    seen = {}
    for name, loaded in (("tuned", tuned), ("edited", edited)):
        proj = loaded.adapter.mlp_out_proj(layer)
        handle = proj.register_forward_pre_hook(
            lambda module, args, name=name: seen.__setitem__(name, args[0].detach().clone())
        )
        with torch.no_grad():
            loaded.model(ids)
        handle.remove()
    kinds = set()
    for (_, n), sign in zip(chosen, edit["signs"], strict=True):
        before, after = seen["tuned"][0, :, n], seen["edited"][0, :, n]
        toward = before * sign > 0
        kinds |= set(toward.tolist())
        torch.testing.assert_close(after, torch.where(toward, 3 * before, before))
    assert kinds == {True, False}  # both sides occur: scaled and untouched
    # the control adds what the edit adds, on the side each key scales
    norms = {
        k: float(np.linalg.norm(adapter.write_vectors(k[0])[k[1]].detach().float().numpy()))
        for k in chosen + [tuple(k) for k in control["keys"]]
    }
    side = {(r["layer"], r["neuron"]): r for r in sides.iter_rows(named=True)}

    def added(keys, signs, scale):
        return (scale - 1) * sum(
            side[k]["pos" if s > 0 else "neg"] * norms[k] for k, s in zip(keys, signs, strict=True)
        )

    keys = [tuple(k) for k in control["keys"]]
    target = added(chosen, edit["signs"], 3)
    assert control["added_write"][str(layer)] == pytest.approx(target, rel=1e-3)
    scale = control["layer_scales"][str(layer)]
    assert added(keys, control["signs"], scale) == pytest.approx(target, rel=1e-3)


def test_neuron_stats_are_kept_per_arm(wh):
    """A tracked neuron's mean over one arm's tokens, from neuron_stats (arm_stats), is its mean
    in neuron_acts over the tokens of that arm's prompts; the arms add up to the whole run."""
    arms = wh.sql("select prompt, arm from prompt_arms('base')")
    layer, neuron = wh.sql("select layer, neuron from neuron_acts where run = 'base' limit 1").row(
        0
    )
    for arm in arms["arm"].unique():
        prompts = arms.filter(pl.col("arm") == arm)["prompt"].to_list()
        by_hand = wh.sql(
            """select avg(act) from neuron_acts where run = 'base' and layer = $l
               and neuron = $n and prompt in (select unnest($p))""",
            {"l": layer, "n": neuron, "p": prompts},
        ).item()
        stats = wh.sql(
            """select sum(sum) / sum(n) from arm_stats('base', $a)
               where layer = $l and neuron = $n""",
            {"a": arm, "l": layer, "n": neuron},
        ).item()
        assert stats == pytest.approx(by_hand, rel=1e-4, abs=1e-6), arm
    n_all, n_arms = wh.sql(
        """select (select sum(n) from arm_stats('base', 'all') where layer = 0),
                  (select sum(n) from neuron_stats where run = 'base' and layer = 0
                   and arm in (select arm from prompt_arms('base')))"""
    ).row(0)
    assert n_all == n_arms and n_all > 0


def test_drop_baseline_by_hand_with_intervals(wh):
    """The selected neurons' net write on neutral prompts, by hand; every tracked group's relative
    change inside its bootstrap interval; the untracked neurons read the arm's statistics (plain),
    by hand from neuron_stats, and have no interval (they are per arm, not per prompt)."""
    got = wh.query("drop_baseline", base_run="base", tuned_run="dpo", n=3, replicates=200)
    top = wh.query("activation_drop", base_run="base", tuned_run="dpo", n=3)
    selected = set(top.select("layer", "neuron").iter_rows())
    neutral = wh.sql(
        """select prompt from prompts where prompt_set = 'analysis' and transform is null
           and messages is null and json_extract_string(meta, '$.category') = 'neutral'"""
    )["prompt"].to_list()
    base = mean_writes(wh, "base", prompts=neutral)
    tuned = mean_writes(wh, "dpo", along_tuned=True, prompts=neutral)
    row = got.filter((pl.col("neurons") == "selected") & (pl.col("prompts") == "neutral"))
    row = row.row(0, named=True)
    assert row["base_write"] == pytest.approx(sum(base[k][1] for k in selected), rel=1e-4)
    assert row["tuned_write"] == pytest.approx(sum(tuned[k][1] for k in selected), rel=1e-4)
    tracked = got.filter(pl.col("neurons") != pl.col("neurons").last())
    for r in tracked.iter_rows(named=True):
        for column in ("write_relative_change", "abs_relative_change"):
            assert r[column + "_lo"] <= r[column] <= r[column + "_hi"], (r["neurons"], column)
    untracked = got.row(-1, named=True)
    assert untracked["neurons"].startswith("untracked") and untracked["prompts"] == "plain"
    assert untracked["write_relative_change_lo"] is None
    layers = sorted({l for l, _ in selected})
    by_hand = wh.sql(
        """select sum(s.sum) / sum(s.n) as m from neuron_stats s
           where s.run = 'base' and s.generated and s.arm = 'plain' and s.layer in
           (select unnest($l)) and (s.layer, s.neuron) not in
           (select (layer, neuron) from neuron_acts where run = 'base')
           group by s.layer, s.neuron""",
        {"l": layers},
    )["m"]
    assert untracked["n_neurons"] == by_hand.len()
    assert untracked["base_abs"] == pytest.approx(by_hand.abs().sum(), rel=1e-6)


def test_the_quick_demo_is_the_study_made_small(tmp_path):
    """`actwh demo --quick` runs the same steps on the first shipped prompts, with no sweep."""
    from actwh.ingest.prompts import read_prompts, shipped_prompts
    from actwh.study.demo import quick_settings, split_prompts

    quick = quick_settings("embedded", progress=False)
    assert quick.unalign_sweep == () and not quick.selective_keys and quick.dpo.max_steps == 4
    train, test, analysis = split_prompts(
        shipped_prompts(), tmp_path, 2, ("rot13",), limit=quick.n_prompts
    )
    sizes = [len(read_prompts(p).prompts) for p in (train, test, analysis)]
    assert sizes == [quick.n_prompts // 2, quick.n_prompts // 2, quick.n_prompts // 2 + 2]
    assert quick_settings("gemma3-270m").dpo.learning_rate == 1e-6


def test_the_sql_reads_only_declared_keys_of_the_stored_json():
    """The JSON the named queries read by key — a variant's edit, a δx direction's meta — has
    one declaration each (models.interventions.Edit, warehouse.directions.DeltaMeta): renaming a
    key there without the SQL (or the SQL without the record) fails here, not on old
    warehouses."""
    from pathlib import Path

    from actwh.models.interventions import Edit
    from actwh.warehouse.directions import DeltaMeta

    declared = {"config": set(Edit.__annotations__), "meta": set(DeltaMeta.__annotations__)}
    read = []
    for sql in (Path(actwh.__file__).parent / "queries").glob("*.sql"):
        for column, key in re.findall(
            r"json_extract\w*\((?:\w+\.)?(\w+), '\$\.([\w.]+)'\)", sql.read_text()
        ):
            if column == "config":  # a model's config: {"edit": {...}}
                assert key.startswith("edit."), (sql.name, key)
                key = key.removeprefix("edit.")
            elif sql.name == "drop_baseline.sql":
                continue  # a prompt's own fields (meta of the prompts table): the user's
            read.append((sql.name, column, key))
    assert len(read) >= 10
    for name, column, key in read:
        assert key in declared[column], f"{name} reads {column} key {key!r}, declared nowhere"


def test_no_output_is_written_through_a_symbolic_link(study, wh, tmp_path):
    """A link planted where a command writes — the report's page or any of its charts (a chart
    beside an earlier report used to be written through, onto a warehouse's catalog), a
    --parquet result, a transformed prompt file — is refused in one line, and what it points to
    is untouched."""
    from actwh.ingest.prompts import shipped_prompts

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    first = write_report(wh, out=tmp_path / "r.html")
    planted = [first.charts[1], tmp_path / "s.html", tmp_path / "q.parquet", tmp_path / "t.jsonl"]
    first.charts[1].unlink()
    for link in planted:
        link.symlink_to(victim)
    for page in ("r.html", "s.html"):  # a chart of the earlier report r; the page s
        with pytest.raises(ActwhError, match="is a symbolic link"):
            write_report(wh, out=tmp_path / page)
    commands = [
        ["sql", str(study[0] / "wh"), "select 1", "--parquet", str(planted[2])],
        ["prompts", "transform", str(shipped_prompts()), "--out", str(planted[3]), "--rot13"],
    ]
    for command in commands:
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and "is a symbolic link" in result.stderr, result.output
        assert result.stderr.count("\n") == 1
    assert victim.read_bytes() == b"precious" and all(p.is_symlink() for p in planted)


def test_inputs_that_gave_wrong_answers_are_refused_by_name(wh):
    """Each of these used to give an answer that looked right (exit 0): a NaN query vector (an
    empty frame), a value vector out of range ("not stored"), a mistyped scorer or δx prefix
    (an empty table, "no run NULL"), options a variant recipe does not use (silently
    ignored), a negative k to vector_tokens (295 tokens); and k=np.int64(3) was refused."""
    from actwh.errors import BadInput

    d_model = wh.direction("toxic_probe").shape[0]
    with pytest.raises(BadInput, match="zero or not finite"):
        wh.search(np.full(d_model, np.nan, dtype=np.float32), model="tiny-gpt2")
    assert wh.search("toxic_probe", k=np.int64(3)).height == 3
    with pytest.raises(NotFound, match=r"value vector 0:99999: out of range"):
        wh.add_direction("far", model="tiny-gpt2", value_vector=(0, 99999))
    with pytest.raises(NotFound, match=r"'dxx': no such δx direction prefix"):
        wh.query("residual_offset", prefix="dxx")
    with pytest.raises(NotFound, match=r"'profanty': no such scorer \(did you mean 'profanity'"):
        wh.query("toxicity_table", scorer="profanty")
    with pytest.raises(BadInput, match="one_sided does not apply to subtract"):
        wh.variant("v", base="dpo", subtract="toxic_probe", scale=1.0, one_sided=True)
    with pytest.raises(BadInput, match="scale does not apply to control_of"):
        wh.variant("v", control_of="unaligned", scale=2.0)
    with pytest.raises(ActwhError, match="k -5 must be >= 1"):
        wh.sql("select vector_tokens('tiny-gpt2', vec, 1, -5) from value_vectors limit 1")
    layer, neuron = tracked(wh).values()
    where = {"base_run": "base", "layer": layer, "neuron": neuron}
    with pytest.raises(BadInput, match="query neuron_histogram: bins -3: must be >= 1"):
        wh.query("neuron_histogram", **where, bins=-3)  # (gave bin -4 holding every token)
    with pytest.raises(BadInput, match="parameter bins expects a number, got 'x'"):
        wh.query("neuron_histogram", **where, bins="x")
    # two sites stacked as one matrix (the demo's run holds resid_mid and resid_post)
    with pytest.raises(BadInput, match=r"2 sites \(resid_mid, resid_post\).*site="):
        wh.vectors("residuals", run="base", layer=1)
    assert len(wh.vectors("residuals", run="base", layer=1, site="resid_mid")[0]) > 0


def test_a_quick_study_says_its_numbers_are_not_findings(study, tmp_path):
    """--quick's numbers looked like findings on stdout and in the report (the caveat was only
    in FINDINGS.md): the demo prints it under "Findings" and the report's section says it."""
    import shutil

    from actwh.report.build import make_plan
    from actwh.study.demo import Study, quick_settings
    from actwh.study.findings import CAVEAT_KEY, report_section

    quick = Study.__new__(Study)
    quick.s = quick_settings(str(tmp_path / "m"))
    assert "the first 48 shipped prompts" in quick.caveat() and "not findings" in quick.caveat()
    root = tmp_path / "wh"
    shutil.copytree(study[0] / "wh", root)
    with actwh.open(root) as w:
        w.store.catalog.set_info(CAVEAT_KEY, quick.caveat())
        w.refresh()
        note = report_section(w, make_plan(w))[0]
    assert note.startswith("A quick study (--quick): the first 48 shipped prompts")


def test_a_prompts_own_fields_are_a_table(wh):
    """`select category from prompts` fails: a prompt's other fields are its JSON meta, and the
    macro prompt_fields(set) gives them a row per prompt and field, equal to meta->>field."""
    fields = wh.sql("select * from prompt_fields(null) where field = 'category'")
    assert fields.height > 0 and set(fields.columns) == {"prompt_set", "prompt", "field", "value"}
    by_hand = wh.sql(
        "select prompt_set, prompt, meta->>'category' as value from prompts "
        "where meta->>'category' is not null order by all"
    )
    assert fields.select("prompt_set", "prompt", "value").sort(pl.all()).equals(by_hand)


def test_figure4_is_coloured_by_the_write_toward_the_direction(wh):
    """Figure 4 coloured a neuron by m, so one that writes toxicity when m < 0 (its value vector
    points away) read backwards: the colour is m signed by cos(v, d)."""
    from dataclasses import replace

    from actwh.report.build import _orientation, make_plan

    plan = make_plan(wh)
    d = wh.direction(plan.direction)
    model = wh.sql("select model from runs where name = $r", {"r": plan.base_run}).item()
    V, keys = wh.vectors("value_vectors", model=model, layer=1)
    cos = V @ d / (np.linalg.norm(V, axis=1) * np.linalg.norm(d))
    for neuron in (int(np.argmax(cos)), int(np.argmin(cos))):
        expected = 1.0 if cos[neuron] > 0 else -1.0
        assert _orientation(wh, replace(plan, neuron=(1, int(keys["neuron"][neuron])))) == expected


def test_two_models_of_your_own_fill_the_findings_and_figure1(study, tmp_path):
    """The README's "two models of your own": runs not named base/dpo gave findings "Not
    available", Figure 1 was empty without --target-tokens, and a model diffed before any run
    had no parent. Now the findings read the report's pair, the lens targets are chosen as the
    demo chooses them, and diff makes the tuned model the base's child (or refuses)."""
    import shutil

    from actwh.errors import BadInput
    from actwh.report.build import make_plan
    from actwh.study.findings import FINDINGS_SECTION, report_section

    root = tmp_path / "wh"
    shutil.copytree(study[0] / "wh", root)
    other = build_gpt2(tmp_path / "other", seed=7)  # a "tuned" model of the same shape
    capture = {
        "capture": ["resid_mid", "resid_post"],
        "track_neurons": "toxic_probe:8",
        "logit_lens": 3,
        "generate": 6,
        "progress": False,
    }
    with actwh.open(root) as w:
        base = w.load_model("tiny-gpt2")
        # diffed before any run of it: registered as the base's child (it had no parent)
        assert w.diff(base, w.load_model(other, name="other"))["tuned"] == "other"
        assert w.sql("select parent, role from models where name = 'other'").row(0) == (
            "tiny-gpt2",
            "tuned",
        )
        with pytest.raises(BadInput, match="'other' is registered as a child of 'tiny-gpt2'"):
            w.diff(w.load_model("dpo"), w.load_model("other"))
        mine = w.ingest(base, name="mine", **capture)
        theirs = w.ingest("other", name="theirs", teacher_force="mine", **capture)
        # no --target-tokens: chosen (here the probe's readout: the tiny model says nothing
        # toxic), and the teacher-forced run takes the same ones
        assert mine.notices and "the logit lens tracks" in str(mine.notices[0])
        targets = w.sql(
            "select name, config->>'$.target_tokens' as t from runs where name in "
            "('mine', 'theirs') order by name"
        )["t"].to_list()
        assert targets[0] == targets[1] and targets[0] != "[]"
        assert "those of run mine" in str(theirs.notices[0])
        w.add_direction("mx", delta=("mine", "theirs"), model="tiny-gpt2")
        plan = make_plan(w, base_run="mine")
        assert (plan.tuned_run, plan.tuned_model, plan.prefix) == ("theirs", "other", "mx")
        assert plan.token is not None  # Figure 1 has a target
        note, _, _, text, findings = report_section(w, plan)
    assert not note.startswith("Not available")
    assert findings["tuned_model"] == "other" and findings["figure1"]
    assert "mine → theirs" in text and "toxic_probe" in text
    assert FINDINGS_SECTION[2] is report_section


def test_vector_tokens_of_a_vector_in_hand_match_the_sql_function(wh):
    """``wh.vector_tokens`` (one product with the readout, both signs; what a neuron page shows)
    reads the same tokens as the SQL function with sign +1 and −1, and a direction's too."""
    vectors, keys = wh.vectors("value_vectors", model="tiny-gpt2", layer=1)
    for i in (0, 5):
        promoted, suppressed = wh.vector_tokens("tiny-gpt2", vectors[i], 4)
        for sign, expected in ((1, promoted), (-1, suppressed)):
            found = wh.sql(
                "select vector_tokens(model, vec, $s, 4) from value_vectors "
                "where model = 'tiny-gpt2' and layer = 1 and neuron = $n",
                {"s": sign, "n": keys["neuron"][i]},
            ).item()
            assert list(found) == expected
        assert promoted != suppressed
    probe = wh.direction("toxic_probe")
    assert wh.vector_tokens("tiny-gpt2", probe, 3)[0] == wh.vector_tokens("tiny-gpt2", -probe, 3)[1]
