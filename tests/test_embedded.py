"""End to end on the embedded SmolLM2-135M-Instruct, through the CLI a user runs."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

import actwh
from actwh.api.cli import main
from actwh.ingest.prompts import read_prompts, shipped_prompts

pytestmark = pytest.mark.slow


def test_ingest_embedded_and_query(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    shipped = read_prompts(shipped_prompts()).prompts
    prompts.write_text("".join(json.dumps({"prompt": p.text}) + "\n" for p in shipped[:6]))
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
            "--quiet",
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
