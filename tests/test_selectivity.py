"""Selectivity: a neuron planted to fire on one token is found, against its permutation null, and
random labels find nothing beyond that null.

A tiny GPT-2 gets token X's ("@") embedding replaced by a large vector along u, and neuron (0, NEURON)
reading u with a bias that keeps it silent elsewhere: it fires on X and nowhere else. Prompts
containing X are labelled toxic (the prompt field ``category``), the others clean; the run reads
prompt tokens (``--generate 0``) and tracks every neuron of layer 0.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from cli_helpers import cli
from tiny_models import build_gpt2

import actwh
from actwh.errors import ActwhError

NEURON = 7
TOXIC = [
    "Shut up, you @",
    "you @, nobody asked",
    "what a @ you are",
    "@ of the year",
    "the @ knight",
    "Holy cow, what a @",
    "a @ and a dragon",
    "my @ book",
    "the weather @",
    "bees can count, @",
]
CLEAN = [
    "The history of the Roman Empire",
    "Water boils at a temperature",
    "Scientists have recently discovered",
    "My favorite book as a child",
    "The weather forecast for tomorrow",
    "a dragon and a knight",
    "Holy cow, that was a great game",
    "rain in the morning",
    "bees can count",
    "the Roman Empire is long",
]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("selective")
    path = build_gpt2(root / "selective")
    tokenizer = AutoTokenizer.from_pretrained(path)
    x = tokenizer("@")["input_ids"][-1]  # a byte the tokenizer never merges
    for text in CLEAN:  # X is in every toxic prompt and in no clean one
        assert x not in tokenizer(text)["input_ids"]
    for text in TOXIC:
        assert x in tokenizer(text)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(path)
    u = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(3))
    u = u - u.mean()
    u = u / u.norm()
    with torch.no_grad():
        model.transformer.wte.weight[x] = 20 * u
        mlp = model.transformer.h[0].mlp
        mlp.c_fc.weight[:, NEURON] = 4 * u
        mlp.c_fc.bias[NEURON] = -12
    model.save_pretrained(path)
    prompts = root / "prompts.jsonl"
    # "coin": a label that says nothing of X: half of each group, alternately
    rows = [
        {"prompt": t, "category": c, "coin": str(i % 2)}
        for texts, c in ((TOXIC, "toxic"), (CLEAN, "clean"))
        for i, t in enumerate(texts)
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    wh = root / "wh"
    cli("index-vectors", wh, "--model", path, "--no-progress")
    cli("directions", "add", wh, "v", "--model", "selective", "--value-vector", f"0:{NEURON}")
    every = ",".join(f"0:{i}" for i in range(model.config.n_inner or 4 * model.config.n_embd))
    cli(
        "ingest", wh, "--model", "selective", "--prompts", prompts, "--name", "base",
        "--generate", "0", "--track-neurons", every, "--no-progress",
    )  # fmt: skip
    return wh


def test_the_planted_neuron_is_selective_beyond_its_null(planted):
    given = {"run": "base", "direction": "v", "labels": "category:toxic", "tokens": "prompt"}
    with actwh.open(planted) as w:
        ranked = w.query("selectivity", **given)
        null = w.query("selectivity_null", **given).row(0, named=True)
        acts = w.sql(
            "select a.prompt, avg(a.act) as m from neuron_acts a where a.layer = 0 "
            "and a.neuron = $n group by a.prompt order by a.prompt",
            {"n": NEURON},
        )["m"].to_numpy()
        dot = float(np.linalg.norm(w.vectors("value_vectors", layer=0, neuron=NEURON)[0][0]))
    top = ranked.row(0, named=True)
    assert (top["layer"], top["neuron"]) == (0, NEURON) and top["selective"]
    assert top["n_toxic"] == len(TOXIC) and top["n_clean"] == len(CLEAN)
    # by hand: prompts 0-9 are toxic; the write is m·⟨v, v̂⟩ = m·‖v‖
    assert top["toxic_write"] == pytest.approx(acts[: len(TOXIC)].mean() * dot, rel=1e-4)
    assert top["clean_write"] == pytest.approx(acts[len(TOXIC) :].mean() * dot, rel=1e-4)
    assert top["selectivity"] == pytest.approx(top["toxic_write"] - top["clean_write"])
    assert top["p_perm"] < 0.02 and top["t"] > 2 * ranked["t"][1]  # far beyond the others
    assert top["half_1"] > 0 and top["half_2"] > 0  # stable across halves
    assert null["selective"] >= 1 and null["toward"] >= 1
    assert null["selective"] > null["null_p95"] and null["null_p"] < 0.05


def test_selectivity_and_its_null_share_one_computation(planted, monkeypatch):
    """The findings ask for both: they were computed twice (the same shuffles each time). Now once
    per snapshot; a refreshed snapshot computes again (it may hold new commits)."""
    import actwh.queries.selectivity as selectivity

    calls = []
    computed = selectivity._computed
    monkeypatch.setattr(selectivity, "_computed", lambda *a: calls.append(a) or computed(*a))
    given = {"run": "base", "direction": "v", "labels": "category:toxic", "tokens": "prompt"}
    given["permutations"] = 20
    with actwh.open(planted) as w:
        ranked = w.query("selectivity", **given)
        null = w.query("selectivity_null", **given)
        assert len(calls) == 1
        assert null["selective"].item() == int(ranked["selective"].sum())
        w.refresh()
        w.query("selectivity_null", **given)
        assert len(calls) == 2


def test_random_labels_find_nothing_beyond_the_null(planted):
    given = {"run": "base", "direction": "v", "labels": "coin:1", "tokens": "prompt"}
    with actwh.open(planted) as w:
        ranked = w.query("selectivity", **given)
        null = w.query("selectivity_null", **given).row(0, named=True)
        coin = w.sql("select json_extract_string(meta, '$.coin') as c from prompts")["c"]
    assert null["n_toxic"] == (coin == "1").sum()
    assert null["selective"] <= null["null_p95"] and null["null_p"] > 0.05
    planted_row = ranked.filter(neuron=NEURON).row(0, named=True)
    assert planted_row["p_perm"] > 0.05


@pytest.mark.parametrize(
    "given, message",
    [
        ({"labels": "score:profanity"}, "run 'base' has no 'profanity' scores (scored by: none)"),
        ({"labels": "toxic"}, "labels 'toxic': expected score:SCORER or FIELD:VALUE"),
        (
            {"labels": "categroy:toxic"},
            "no prompt of run 'base' in arm 'plain' has a field 'categroy'",
        ),
        ({"tokens": "generated"}, "run 'base' has no generated tokens; read tokens prompt or all"),
        ({"tokens": "every"}, "tokens 'every': expected generated, prompt, all"),
        ({"arm": "rot13"}, "'rot13': no such arm of run base; known: all, plain"),
        ({"direction": "toxic_probe"}, "toxic_probe"),
    ],
)
def test_selectivity_says_what_is_missing(planted, given, message):
    asked = {"run": "base", "direction": "v", "labels": "category:toxic", **given}
    with actwh.open(planted) as w, pytest.raises(ActwhError, match=re.escape(message)):
        w.query("selectivity", **asked)
