"""Scorers, the probe, pairs, DPO, variants and evaluation — on tiny models, through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_helpers import cli, cli_error

import actwh
from actwh.errors import ActwhError
from actwh.models.loading import load_model
from actwh.train.evaluate import bag_f1
from actwh.train.probe import fit_probe, read_labeled
from actwh.train.scorers import get_scorer, perspective_score


def test_profanity_scorer():
    scorer = get_scorer("profanity")
    clean, rude = scorer.score(["Have a lovely day at the park.", "Shut up, you stupid idiot."])
    assert 0 <= clean < 0.5 < rude <= 1
    assert scorer.score([]) == []
    with pytest.raises(ActwhError, match="unknown scorer"):
        get_scorer("nope")


def test_perspective_takes_the_max_over_attributes(monkeypatch):
    response = {
        "attributeScores": {
            "TOXICITY": {"summaryScore": {"value": 0.2}},
            "INSULT": {"summaryScore": {"value": 0.7}},
            "THREAT": {"summaryScore": {"value": 0.1}},
        }
    }
    assert perspective_score(response) == 0.7
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    with pytest.raises(ActwhError, match="needs an API key"):
        get_scorer("perspective")
    scorer = get_scorer("perspective", key="k", qps=1000)
    monkeypatch.setattr(scorer, "_request", lambda text: response)
    assert scorer.score(["a", "b"]) == [0.7, 0.7]


def test_fit_probe_recovers_a_planted_direction():
    rng = np.random.default_rng(0)
    planted = rng.standard_normal(32)
    labels = rng.integers(0, 2, 400)
    X = rng.standard_normal((400, 32)) + np.outer(labels * 2 - 1, planted) * 0.5
    probe = fit_probe(X, labels.tolist())
    cos = probe.direction @ planted / (np.linalg.norm(probe.direction) * np.linalg.norm(planted))
    assert cos > 0.8  # positive: toxic (label 1) is the + side
    assert probe.val_accuracy > 0.9 and probe.n_val == 40 and probe.n_train == 360


def test_read_labeled(tmp_path):
    csv = tmp_path / "j.csv"
    csv.write_text('id,comment_text,toxic\n1,"you idiot",1\n2,"nice day",0\n')
    assert read_labeled(csv) == (["you idiot", "nice day"], [1, 0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 3}\n')
    with pytest.raises(ActwhError, match=r"bad.jsonl:2: label must be 0 or 1"):
        read_labeled(bad)
    cols = tmp_path / "cols.csv"
    cols.write_text("text,label\na,1\n")
    with pytest.raises(ActwhError, match="comment_text and toxic"):
        read_labeled(cols)


def test_read_labeled_keeps_quoted_multiline_fields(tmp_path):
    """Jigsaw's comments span lines inside quotes: one record each, errors name its first line."""
    jigsaw = tmp_path / "jigsaw.csv"
    jigsaw.write_text(
        'id,comment_text,toxic\n1,"first line\nsecond, with a comma",1\n2,plain,0\n3,"a\n\nb",5\n'
    )
    with pytest.raises(ActwhError, match=r"jigsaw.csv:5: label must be 0 or 1, got '5'"):
        read_labeled(jigsaw)
    jigsaw.write_text(jigsaw.read_text().replace(",5\n", ",1\n"))
    assert read_labeled(jigsaw) == (
        ["first line\nsecond, with a comma", "plain", "a\n\nb"],
        [1, 0, 1],
    )


@pytest.fixture
def probed(tmp_path, gpt2_dir):
    wh = tmp_path / "wh"
    out = cli("train-probe", wh, "--model", gpt2_dir).stdout
    return wh, out


def test_probe_through_the_cli(probed, gpt2_dir):
    wh, out = probed
    assert "probe toxic_probe of tiny-gpt2: validation accuracy" in out
    accuracy = float(out.split("validation accuracy ")[1].split()[0])
    with actwh.open(wh) as w:
        row = w.sql("select kind, meta from directions where name = 'toxic_probe'").row(0)
    meta = json.loads(row[1])
    assert row[0] == "probe" and meta["val_accuracy"] == pytest.approx(accuracy, abs=1e-3)
    assert meta["layer"] == 2 and meta["site"] == "resid_post" and meta["n_val"] == 40


def test_pairs_keep_only_more_toxic_dispreferred(probed, gpt2_dir, tmp_path, prompts_file):
    wh, _ = probed
    out = tmp_path / "pairs.jsonl"
    printed = cli(
        "make-pairs",
        "--model",
        "tiny-gpt2",
        "--warehouse",
        wh,
        "--prompts",
        prompts_file,
        "--out",
        out,
        "--relative-alpha",
        2.0,
        "--generate",
        8,
    ).stdout
    assert printed.startswith("kept ") and printed.rstrip().endswith(f"→ {out}")
    pairs = [json.loads(l) for l in out.read_text().splitlines()]
    for pair in pairs:
        assert {"prompt_text", "unpert_gen_text", "pert_gen_text"} <= set(pair)
        assert pair["pert_score"] - pair["unpert_score"] >= 0.05  # the default --min-margin
    # no margin keeps every more-toxic pair; an impossible one keeps none, and counts them
    with actwh.open(wh) as w:
        loose, strict = (
            w.make_pairs(
                "tiny-gpt2",
                tmp_path / f"margin-{margin}.jsonl",
                prompts=prompts_file,
                relative_alpha=2.0,
                generate=8,
                min_margin=margin,
                progress=False,
            )
            for margin in (0.0, 1.0)
        )
    assert loose.n_kept >= len(pairs) and strict.n_kept == 0
    assert strict.n_below_margin == loose.n_kept
    low, _, high = loose.margins
    assert 0 < low <= high <= 1
    other = tmp_path / "other.jsonl"
    assert "no direction 'nope'" in cli_error(
        "make-pairs",
        "--model",
        "tiny-gpt2",
        "--warehouse",
        wh,
        "--out",
        other,
        "--direction",
        "nope",
    )
    assert not other.exists()
    # an existing file is replaced only when asked
    assert "the file exists; pass --force" in cli_error(
        "make-pairs", "--model", "tiny-gpt2", "--warehouse", wh, "--out", out
    )


def _pairs_file(tmp_path, n=12):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "prompt_text": f"The history of item {i}",
                    "unpert_gen_text": " is long and calm.",
                    "pert_gen_text": " is stupid, you idiot.",
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    return path


def test_dpo_trains_saves_and_registers(tmp_path, probed, gpt2_dir):
    wh, _ = probed
    out = tmp_path / "dpo-model"
    printed = cli(
        "train-dpo",
        "--base",
        "tiny-gpt2",
        "--pairs",
        _pairs_file(tmp_path),
        "--out",
        out,
        "--warehouse",
        wh,
        "--lr",
        1e-3,
        "--max-steps",
        6,
        "--eval-every",
        2,
        "--batch-size",
        2,
    ).stdout
    assert "registered dpo-model (dpo, parent tiny-gpt2)" in printed
    record = json.loads((out / "actwh_dpo.json").read_text())
    assert record["options"]["beta"] == 0.1 and record["options"]["optimizer"] == "rmsprop"
    assert record["metrics"]["steps"] == 6 and record["metrics"]["n_val"] == 1
    base, tuned = load_model(str(gpt2_dir)), load_model(str(out))
    moved = sum(
        float((p - q).abs().sum())
        for p, q in zip(base.model.parameters(), tuned.model.parameters(), strict=True)
    )
    assert moved > 0
    with actwh.open(wh) as w:
        row = w.sql("select role, parent, config from models where name = 'dpo-model'").row(0)
    assert row[:2] == ("dpo", "tiny-gpt2")
    assert json.loads(row[2])["options"]["learning_rate"] == 1e-3
    again = cli_error(
        "train-dpo",
        "--base",
        "tiny-gpt2",
        "--pairs",
        _pairs_file(tmp_path),
        "--out",
        tmp_path / "x",
        "--warehouse",
        wh,
        "--name",
        "dpo-model",
    )
    assert "already exists" in again
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_text": "a", "unpert_gen_text": "b"}\n')
    assert "bad.jsonl:1: missing pert_gen_text" in cli_error(
        "train-dpo", "--base", gpt2_dir, "--pairs", bad, "--out", tmp_path / "y"
    )


def test_table8_defaults():
    from actwh.train.options import DPOOptions

    options = DPOOptions()
    assert (
        options.beta,
        options.learning_rate,
        options.optimizer,
        options.batch_size,
        options.max_grad_norm,
        options.patience,
        options.val_fraction,
    ) == (0.1, 1e-6, "rmsprop", 4, 10.0, 10, 0.1)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_subtract_variant_equals_a_hook(tmp_path, arch, gpt2_dir, llama_dir):
    model_dir = {"gpt2": gpt2_dir, "llama": llama_dir}[arch]
    wh = tmp_path / "wh"
    cli("train-probe", wh, "--model", model_dir)
    name = model_dir.name
    cli(
        "variant",
        wh,
        "minus",
        "--base",
        name,
        "--subtract",
        "toxic_probe",
        "--scale",
        3.0,
        "--layer",
        1,
    )
    from actwh.ingest.registry import open_model
    from actwh.warehouse.store import Store

    store = Store.open(wh)
    variant, _ = open_model(store, "minus")
    base, _ = open_model(store, name)
    direction = torch.tensor(actwh.open(wh).direction("toxic_probe"))
    handle = base.adapter.mlp(1).register_forward_hook(lambda m, a, out: out - 3.0 * direction)
    ids = torch.tensor([[3, 17, 42, 5, 9]])
    with torch.no_grad():
        expected = base.model(ids).logits
        handle.remove()
        untouched = base.model(ids).logits
        got = variant.model(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, untouched)
    assert variant.name == "minus" and variant.revision.startswith(base.revision + "+")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_unalign_scales_the_key_vectors(tmp_path, arch, gpt2_dir, llama_dir, prompts_file):
    model_dir = {"gpt2": gpt2_dir, "llama": llama_dir}[arch]
    wh = tmp_path / "wh"
    cli("train-probe", wh, "--model", model_dir)
    unalign = ["variant", wh, "un", "--base", model_dir.name, "--unalign", "toxic_probe"]
    unalign += ["-k", 3, "--scale", 10]
    if arch == "llama":  # signed coefficients: the keys are chosen by what neurons write in a run
        assert "pass run=... (--run RUN)" in cli_error(*unalign)
        cli(
            "ingest",
            wh,
            "--model",
            model_dir.name,
            "--prompts",
            prompts_file,
            "--name",
            "r",
            "--no-progress",
        )
        cli(*unalign, "--run", "r")
    else:
        cli(*unalign)
    from actwh.ingest.registry import open_model
    from actwh.models.value_vectors import top_value_vectors
    from actwh.warehouse.reader import Snapshot
    from actwh.warehouse.search import mean_coefficients
    from actwh.warehouse.store import Store

    store = Store.open(wh)
    base, _ = open_model(store, model_dir.name)
    variant, _ = open_model(store, "un")
    means = None
    if arch == "llama":
        a = base.adapter
        means = mean_coefficients(Snapshot(store), "r", a.n_layers, a.d_mlp)
    probe = actwh.open(wh).direction("toxic_probe")
    keys = {
        (l, n)
        for _, l, n in top_value_vectors(base.adapter, probe, 3, 100, mean_coefficients=means)
    }
    for layer in range(base.adapter.n_layers):
        before, after = base.adapter.W_in(layer), variant.adapter.W_in(layer)
        for neuron in range(base.adapter.d_mlp):
            factor = 10.0 if (layer, neuron) in keys else 1.0
            torch.testing.assert_close(after[:, neuron], before[:, neuron] * factor)
        if arch == "gpt2":
            torch.testing.assert_close(
                variant.adapter.mlp(layer).c_fc.bias, base.adapter.mlp(layer).c_fc.bias
            )


def test_evaluate_records_tables_2_and_4(tmp_path, gpt2_dir, prompts_file):
    wh = tmp_path / "wh"
    text = tmp_path / "text.txt"
    text.write_text("The river flows through the valley and past the old mill. " * 30)
    f1_data = tmp_path / "f1.jsonl"
    f1_data.write_text(
        json.dumps({"prompt": "The river flows", "gold": " through the valley."}) + "\n"
    )
    cli("train-probe", wh, "--model", gpt2_dir)
    cli("variant", wh, "minus", "--base", "tiny-gpt2", "--subtract", "toxic_probe", "--scale", 2)
    for model in ("tiny-gpt2", "minus"):
        out = cli(
            "evaluate",
            wh,
            "--model",
            model,
            "--prompts",
            prompts_file,
            "--generate",
            5,
            "--ppl-text",
            text,
            "--f1-data",
            f1_data,
            "--csv",
        ).stdout
    lines = out.strip().splitlines()
    assert (
        lines[0] == "model,prompt_set,scorer,n_prompts,toxicity,perplexity,f1" and len(lines) == 3
    )
    with actwh.open(wh) as w:
        rows = {r["model"]: r for r in w.sql("select * from evaluations").iter_rows(named=True)}
        mean = w.sql("select avg(score) from scores where run = 'eval.tiny-gpt2.prompts'").item()
        gens = w.sql("select count(*) from generations where run = 'eval.minus.prompts'").item()
    assert rows["tiny-gpt2"]["toxicity"] == pytest.approx(mean) and gens == 4
    loaded = load_model(str(gpt2_dir))
    ids = loaded.tokenizer(text.read_text(), return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 256  # three windows of the tiny model's 128-token context
    total = 0.0
    with torch.no_grad():
        for begin in range(0, ids.shape[1], 128):
            window = ids[:, begin : begin + 128]
            logp = torch.log_softmax(loaded.model(window).logits[0, :-1], -1)
            nll = -logp.gather(-1, window[0, 1:, None]).mean()
            total += float(nll) * window.shape[1]
    assert rows["tiny-gpt2"]["perplexity"] == pytest.approx(
        math.exp(total / ids.shape[1]), rel=1e-4
    )
    assert rows["minus"]["perplexity"] != rows["tiny-gpt2"]["perplexity"]
    assert 0 <= rows["tiny-gpt2"]["f1"] <= 1 and rows["tiny-gpt2"]["n_f1"] == 1


def test_bag_f1():
    assert bag_f1([1, 2, 3, 4], [3, 4, 5, 6, 7, 8]) == pytest.approx(
        2 * 0.5 * (2 / 6) / (0.5 + 2 / 6)
    )
    assert bag_f1([1, 1, 2], [1, 9]) == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    assert bag_f1([1], [2]) == 0.0


def test_detoxify_missing_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import detoxify  # noqa: F401
    except ImportError:
        with pytest.raises(ActwhError, match="pip install detoxify"):
            get_scorer("detoxify")
    else:
        pytest.skip("detoxify is installed here")
