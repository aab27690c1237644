"""The warehouse made by an earlier actwh, and what that version read from it: the fixture of
``test_warehouse.py::test_a_warehouse_of_344b4d1_reads_the_same``.

``python tests/old_warehouse.py OUT`` run against commit 344b4d1's checkout (as ``actwh``)
wrote ``tests/data/warehouse-344b4d1/`` (its ``warehouse/`` and ``read.json``); :func:`reads` is
what both versions read, so the test compares the new code's answers with the old code's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

QUERIES = {  # a named query and its parameters: each reads what the run's config recorded
    "neuron_contexts": {"base_run": "base", "tuned_run": "cut", "layer": 1, "neuron": 3, "k": 3},
    "tracked_write": {"base_run": "base", "tuned_run": "cut", "direction": "probe"},
    "toxicity_table": {},
}


def reads(wh) -> dict:
    """What a reader sees of the warehouse, as JSON: its summary, runs, tables, directions, every
    fact table's rows and a few named queries."""

    def rows(frame) -> list:
        return json.loads(frame.write_json()) if hasattr(frame, "write_json") else frame

    def rounded(value):
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, list):
            return [rounded(v) for v in value]
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return value

    out = {
        "summary": wh.summary(),
        "runs": rows(wh.info()["runs"].drop("n_bytes")),
        "tables": rows(wh.tables()),
        "directions": rows(wh.directions().drop("meta")),
        "queries": {name: rows(wh.query(name, **p)) for name, p in QUERIES.items()},
    }
    for table in wh.tables()["name"]:
        frame = wh.sql(f"select * from {table}")
        if "vec" in frame.columns and frame.height:
            frame = frame.with_columns(vec=np.stack(frame["vec"].to_numpy()).sum(1))
        out[f"rows.{table}"] = rows(frame.sort(frame.columns))
    out["summary"].pop("bytes", None)
    return rounded(out)


def make(out: Path) -> None:
    """Build the warehouse in ``out`` (a tiny GPT-2, a direction, three runs, two variants and
    their evaluations) and record what this version reads from it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import build_gpt2

    import actwh

    model = build_gpt2(out / "model")
    prompts = out / "prompts.jsonl"
    texts = ["The history of", "You are such a piece of", "Holy", "Water boils at a temperature"]
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    wh = actwh.open(out / "warehouse", create=True)
    wh.ingest(str(model), prompts, name="probe-run", generate=0, layers="1", capture="resid_mid")
    d_model = json.loads((model / "config.json").read_text())["n_embd"]
    vector = np.random.default_rng(0).standard_normal(d_model).astype(np.float32)
    model_name = wh.sql("select name from models")["name"][0]
    wh.add_direction("probe", model=model_name, vector=vector)
    wh.ingest(
        str(model),
        prompts,
        name="base",
        generate=3,
        capture="resid_mid,mlp_post",
        track_neurons="probe:4",
        logit_lens=3,
        target_tokens="#5",
    )
    wh.variant("cut", base=model_name, subtract="probe", scale=2.0)
    wh.ingest("cut", name="cut", teacher_force="base", track_neurons="probe:4", logit_lens=3)
    wh.variant("unaligned", base=model_name, unalign="probe", run="base", top_k=2, scale=3.0)
    for evaluated in (model_name, "cut", "unaligned"):
        wh.evaluate(evaluated, prompts=prompts, generate=3, n_f1=4, progress=False)
    (out / "read.json").write_text(json.dumps(reads(wh), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    make(Path(sys.argv[1]))
