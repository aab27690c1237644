"""End to end on the embedded SmolLM2-135M-Instruct, through the CLI a user runs."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import actwh
from actwh.cli import main
from actwh.ingest.prompts import read_prompts, shipped_prompts, write_prompts

pytestmark = pytest.mark.slow


def test_ingest_embedded_and_query(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    shipped = read_prompts(shipped_prompts()).prompts
    write_prompts(shipped[:6], prompts)
    wh = tmp_path / "wh"
    result = CliRunner().invoke(
        main,
        [
            "ingest",
            str(wh),
            "--model",
            "embedded",
            "--prompts",
            str(prompts),
            "--generate",
            "8",
            "--capture",
            "resid_mid,mlp_post",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    query = "select layer, count(*) as n from residuals group by layer order by layer"
    printed = CliRunner().invoke(main, ["sql", str(wh), query, "--csv"])
    lines = printed.stdout.strip().splitlines()[1:]
    assert [int(l.split(",")[0]) for l in lines] == list(range(30))
    assert len({l.split(",")[1] for l in lines}) == 1

    frame = actwh.open(wh).sql(query)
    assert isinstance(frame, pl.DataFrame) and frame.height == 30
    with actwh.open(wh) as w:
        model = w.sql("select * from models").row(0, named=True)
        assert (model["architecture"], model["n_layers"], model["d_model"], model["d_mlp"]) == (
            "llama",
            30,
            576,
            1536,
        )
        assert (
            w.sql("describe residuals").filter(pl.col("column_name") == "vec")["column_type"][0]
            == "FLOAT[576]"
        )
        continuation = w.sql("select continuation from generations where prompt = 1")[
            "continuation"
        ][0]
        assert len(continuation.split()) >= 3  # fluent English, not an empty string
        peak = w.sql(
            "select max(list_max(list_transform(vec::FLOAT[], lambda x: abs(x)))) as m "
            "from residuals"
        )["m"][0]
        assert 0 < peak < 65504


def test_vectors_search_and_pairing_on_embedded(tmp_path):
    wh = tmp_path / "wh"
    model = "smollm2-135m-instruct"

    def cli(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.stdout

    cli("index-vectors", wh, "--model", "embedded", "--no-progress")
    cli("directions", "add", wh, "v", "--model", model, "--value-vector", "19:770")
    cli("directions", "add", wh, "rnd", "--model", model, "--random", "--seed", 7)
    first = json.loads(cli("search", wh, "--direction", "v", "-k", 5, "--json").splitlines()[0])
    assert (first["layer"], first["neuron"]) == (19, 770) and abs(first["cosine"] - 1) < 1e-5
    with actwh.open(wh) as w:
        vectors, keys = w.vectors("value_vectors", model=model)
        query = w.direction("rnd")
        cos = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
        order = np.argsort(-np.abs(cos))[:20]  # SmolLM2's MLP is gated: its neurons write ±v
        hits = w.search("rnd", k=20)
        expected = keys[order.tolist()].select("layer", "neuron").rows()
        assert list(zip(hits["layer"], hits["neuron"], strict=True)) == expected
        np.testing.assert_allclose(hits["cosine"].to_numpy(), cos[order], atol=1e-5)

    prompts = tmp_path / "prompts.jsonl"
    shipped = read_prompts(shipped_prompts()).prompts
    write_prompts(shipped[:4], prompts)
    common = ("--capture", "resid_mid", "--layers", "18-20", "--no-progress")
    cli(
        "ingest",
        wh,
        "--model",
        "embedded",
        "--prompts",
        prompts,
        "--name",
        "a",
        "--generate",
        6,
        "--track-neurons",
        "v:8",
        "--logit-lens",
        5,
        *common,
    )
    cli("ingest", wh, "--model", "embedded", "--name", "b", "--teacher-force", "a", *common)
    cli("directions", "add", wh, "dx", "--delta", "a", "b")
    with actwh.open(wh) as w:
        # the same model replayed on its own tokens: identical rows, δx = 0
        assert np.abs(w.direction("dx.19")).max() < 1e-3
        joined = w.sql(
            """select p.dot, r.vec, d.vec as dir from projections p
               join residuals r using (run, layer, prompt, pos, site)
               join directions d on d.name = p.direction where p.direction = 'v'"""
        )
        dots = (np.stack(joined["vec"].to_numpy()) * np.stack(joined["dir"].to_numpy())).sum(1)
        np.testing.assert_allclose(joined["dot"].to_numpy(), dots, rtol=5e-3, atol=5e-2)
        tracked = w.sql(
            "select distinct layer, neuron from neuron_acts where layer = 19 and neuron = 770"
        )
        assert tracked.height == 1
        lens = w.sql("select count(distinct layer) as n from logit_lens where run = 'a'").item()
        assert lens == 3
