"""``actwh demo``: the whole study of the paper, offline, on the embedded SmolLM2-135M-Instruct.

Every step is a library call a user could make (or an ``actwh`` command); each is skipped when
its result is already in the warehouse, so a rerun resumes where the last one stopped:

 1. the model (the embedded GGUF, converted once to safetensors)
 2. the toxicity probe on the shipped labeled corpus → direction ``toxic_probe``
 3. every value vector and the FAISS index; the top toxic value vectors (Table 1)
 4. prompts: the shipped set split in two — ``train`` for preference pairs, ``test`` for
    everything else — plus ROT13/Base64/leet variants of some test prompts
 5. preference pairs from the train prompts (greedy vs probe-steered)
 6. DPO, sized for a CPU (learning rate 1e-5, 2 epochs; the paper's Table 8 otherwise)
 7. a base run over the test prompts (resid_mid, projections, tracked neurons, logit lens) and
    the DPO model teacher-forced on the same tokens
 8. δx per layer, weight differences, the un-aligned variant of the DPO model (the keys of the 7
    neurons whose mean write in the DPO run points most along the probe, ×10) and its control
    (7 keys in the same layers chosen at random, ×10)
 9. evaluation of base, DPO, un-aligned and control: toxicity, perplexity, F1
10. the named analyses, a findings summary, and the report
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import polars as pl

from actwh.train.dpo import DPOOptions

STEPS = 10
CONTROL = "unaligned-control"


@dataclass
class StudySettings:
    model: str = "embedded"
    generate: int = 20
    batch_size: int = 8
    relative_alpha: float = 0.3
    dpo: DPOOptions = field(
        default_factory=lambda: DPOOptions(learning_rate=1e-5, epochs=2, eval_every=10, patience=5)
    )
    track: int = 64
    lens_k: int = 5
    target_tokens: str = " garbage, trash, stupid"
    transforms: tuple[str, ...] = ("rot13", "base64", "leet")
    n_transformed: int = 20
    unalign_top_k: int = 7
    unalign_scale: float = 10.0
    scorer: str = "profanity"
    progress: bool = True


def split_prompts(
    source: Path, out: Path, n_transformed: int, transforms
) -> tuple[Path, Path, Path]:
    """Even prompts → train (pairs), odd → test (evaluation); the analysis set is the test set
    plus encoded variants of its first ``n_transformed`` non-neutral prompts, linked to them."""
    from actwh.ingest.prompts import read_prompts, write_prompts
    from actwh.ingest.transforms import transformed

    shipped = read_prompts(source).prompts
    train, test = shipped[0::2], shipped[1::2]
    chosen = [i for i, p in enumerate(test) if p.meta.get("category") != "neutral"][:n_transformed]
    variants = [transformed(test[i], name, i) for name in transforms for i in chosen]
    paths = out / "prompts-train.jsonl", out / "prompts-test.jsonl", out / "prompts-analysis.jsonl"
    for prompts, path in zip((train, test, test + variants), paths, strict=True):
        write_prompts(prompts, path)
    return paths


def run_study(
    out: Path, settings: StudySettings | None = None, echo: Callable = click.echo
) -> dict:
    """Run (or resume) the study into ``out``; returns the findings."""
    from actwh.api.report import make_plan, write_report
    from actwh.api.warehouse import Warehouse
    from actwh.ingest.diff import store_weight_diffs
    from actwh.ingest.interventions import control_recipe, unalign_keys, unalign_recipe
    from actwh.ingest.options import IngestOptions
    from actwh.ingest.prompts import read_prompts, shipped_prompts
    from actwh.ingest.registry import (
        ensure_registered,
        open_model,
        register_model,
        register_variant,
    )
    from actwh.ingest.value_vectors import store_value_vectors
    from actwh.ingest.worker import ingest
    from actwh.train.dpo import train_dpo
    from actwh.train.evaluate import evaluate
    from actwh.train.pairs import make_pairs, read_pairs, write_pairs
    from actwh.train.probe import fit_probe, mean_features, read_labeled, shipped_corpus
    from actwh.train.scorers import get_scorer
    from actwh.warehouse.directions import add_direction, delta_directions, directions_for
    from actwh.warehouse.reader import Snapshot
    from actwh.warehouse.store import Store

    s = settings or StudySettings()
    out.mkdir(parents=True, exist_ok=True)
    wh_path = out / "wh"
    started = time.monotonic()
    clock = [started]

    def step(number: int, text: str) -> None:
        now = time.monotonic()
        echo(f"[{number}/{STEPS}] {text}  ({now - started:,.0f}s)")
        clock[0] = now

    step(1, f"model: {s.model}")
    store = Store.create(wh_path)
    base, _ = open_model(store, s.model)
    ensure_registered(store, base)
    catalog = store.catalog

    step(2, "toxicity probe on the shipped labeled corpus")
    probe = catalog.get("directions", model=base.name, name="toxic_probe")
    if probe is None:
        texts, labels = read_labeled(shipped_corpus())
        result = fit_probe(mean_features(base, texts, progress=s.progress), labels)
        meta = {
            "site": "resid_post",
            "layer": base.adapter.n_layers - 1,
            "val_accuracy": result.val_accuracy,
            "data": "shipped",
        }
        probe = add_direction(
            store, base.name, "toxic_probe", result.direction, kind="probe", meta=meta
        )
    accuracy = json.loads(probe["meta"])["val_accuracy"]
    echo(f"      validation accuracy {accuracy:.3f}")

    step(3, "value vectors, FAISS index, the top toxic value vectors (Table 1)")
    store_value_vectors(store, base, progress=s.progress)
    with Warehouse(wh_path) as wh:
        table1 = wh.query("top_toxic_vectors", model=base.name, k=8)
    echo("      (cos: of v with the probe; writes toward it when m > 0 (+) or m < 0 (-))")
    for row in table1.iter_rows(named=True):
        tokens = ", ".join(t.strip() or repr(t) for t in row["top_tokens"][:6])
        echo(
            f"      L{row['layer']:>2} #{row['neuron']:<5} cos {row['cosine']:+.3f} "
            f"({'+' if row['sign'] > 0 else '-'})  {tokens}"
        )

    step(4, "prompts: train (pairs) / test (analysis and evaluation) split, with variants")
    train, test, analysis = split_prompts(shipped_prompts(), out, s.n_transformed, s.transforms)

    step(5, "preference pairs (greedy vs toxic-steered) from the train prompts")
    pairs_file = out / "pairs.jsonl"
    if not pairs_file.exists():
        pairs, stats = make_pairs(
            base,
            [p.text for p in read_prompts(train).prompts],
            directions_for(store, base.name)["toxic_probe"],
            get_scorer(s.scorer),
            relative_alpha=s.relative_alpha,
            max_new_tokens=s.generate,
            batch_size=s.batch_size,
            progress=s.progress,
        )
        write_pairs(pairs, pairs_file)
        echo(
            f"      kept {stats.n_kept} of {stats.n_prompts}; mean {s.scorer} preferred "
            f"{stats.mean_preferred:.3f}, dispreferred {stats.mean_dispreferred:.3f}"
        )
    pairs = read_pairs(pairs_file)

    step(6, f"DPO on {len(pairs)} pairs (lr {s.dpo.learning_rate:g}, {s.dpo.epochs:g} epochs)")
    dpo_dir = out / "dpo-model"
    if catalog.get("models", name="dpo") is None:
        if not dpo_dir.exists():
            metrics = train_dpo(base, pairs, dpo_dir, s.dpo, progress=s.progress)
            echo(
                f"      {metrics['steps']} steps, best validation loss "
                f"{metrics.get('best_eval_loss', float('nan')):.4f}"
            )
        tuned, _ = open_model(None, str(dpo_dir.resolve()), name="dpo")
        record = json.loads((dpo_dir / "actwh_dpo.json").read_text())
        with catalog.begin() as conn:
            register_model(conn, catalog, tuned, role="dpo", parent=base.name, config=record)
    tuned, _ = open_model(store, "dpo")

    step(7, "base run over the test prompts, DPO teacher-forced on the same tokens")
    capture = dict(
        generate=s.generate,
        capture="resid_mid",
        track_neurons=f"toxic_probe:{s.track}",
        logit_lens=s.lens_k,
        target_tokens=s.target_tokens,
        batch_size=s.batch_size,
        progress=s.progress,
    )
    prompt_set = read_prompts(analysis, "analysis")
    for name, model, options in (
        ("base", base, IngestOptions(name="base", **capture)),
        (
            "dpo",
            tuned,
            IngestOptions(name="dpo", teacher_force="base", **{**capture, "generate": 0}),
        ),
    ):
        run = catalog.get("runs", name=name)
        if run is None or run["status"] != "complete":
            summary = ingest(str(wh_path), model, None if name == "dpo" else prompt_set, options)
            echo(
                f"      {name}: {summary.n_prompts} prompts, {summary.n_tokens:,} tokens, "
                f"{summary.tokens_per_second:,.0f} tok/s"
            )

    step(8, "δx per layer, weight differences, the un-aligned variant and its control")
    if not catalog.rows("directions", kind="delta"):
        snapshot = Snapshot(store)
        try:
            for layer, vector in delta_directions(snapshot, "base", "dpo").items():
                meta = {"base_run": "base", "tuned_run": "dpo", "site": "resid_mid", "layer": layer}
                add_direction(store, base.name, f"dx.{layer}", vector, kind="delta", meta=meta)
        finally:
            snapshot.close()
    with Warehouse(wh_path) as wh:
        has_diffs = wh.sql("select count(*) from weight_diffs where model = 'dpo'").item() > 0
    if not has_diffs:
        store_weight_diffs(store, base, tuned)
    if catalog.get("models", name="unaligned") is None:
        probe_vector = directions_for(store, "dpo")["toxic_probe"]
        keys = unalign_keys(store, tuned, probe_vector, s.unalign_top_k, run="dpo")
        edit = unalign_recipe("toxic_probe", keys, s.unalign_scale, run="dpo")
        register_variant(store, "unaligned", tuned, edit)
    if catalog.get("models", name=CONTROL) is None:
        edit = json.loads(catalog.get("models", name="unaligned")["config"])["edit"]
        control = control_recipe(edit, "unaligned", tuned.adapter.d_mlp, seed=0)
        register_variant(store, CONTROL, tuned, control, role="control")
    for name in ("unaligned", CONTROL):
        keys = json.loads(catalog.get("models", name=name)["config"])["edit"]["keys"]
        echo(f"      {name}: keys {', '.join(f'{l}:{n}' for l, n in keys)} × {s.unalign_scale:g}")

    step(9, "evaluation: toxicity, perplexity, F1 of base, DPO, un-aligned, control")
    test_set = read_prompts(test, "test")
    for name in (base.name, "dpo", "unaligned", CONTROL):
        done = catalog.get("evaluations", model=name, prompt_set="test", scorer=s.scorer)
        if done is None:
            loaded = {base.name: base, "dpo": tuned}.get(name) or open_model(store, name)[0]
            evaluate(
                store,
                loaded,
                test_set,
                scorer=s.scorer,
                generate=s.generate,
                batch_size=s.batch_size * 2,
                progress=s.progress,
            )

    step(10, "named analyses and the report")
    with Warehouse(wh_path) as wh:
        plan = make_plan(wh, scorer=s.scorer)
        page, pngs = write_report(wh, out / "report.html", plan)
        findings = collect_findings(wh, base.name, s.scorer, plan.layer)
    findings["report"] = str(page)
    findings["seconds"] = time.monotonic() - started
    print_findings(findings, echo, len(pngs))
    return findings


def collect_findings(wh, base_model: str, scorer: str, layer: int) -> dict:
    """The study's numbers, from the named analyses (``layer``: δx's layer for Figure 5)."""
    table = {r["model"]: r for r in wh.query("toxicity_table", scorer=scorer).iter_rows(named=True)}
    order = [base_model, "dpo", "unaligned", CONTROL]
    runs = {"base_run": "base", "tuned_run": "dpo"}
    drop = wh.query("activation_drop", **runs, n=5)
    total = wh.query("tracked_write", **runs).filter(pl.col("layer").is_null()).row(0, named=True)
    offset = wh.query("residual_offset", prefix="dx")
    shift = (
        wh.query("value_vector_shift", model="dpo", layer=layer, prefix="dx")
        .group_by("value_layer")
        .agg(pl.col("layer_mean", "oriented_mean", "aggregate_cos").first())
        .sort("value_layer")
    )
    vectors = wh.sql(
        "select min(cosine) as min_cos, avg(cosine) as mean_cos, avg(delta_norm) as mean_shift "
        "from value_vector_diffs where model = 'dpo'"
    ).row(0, named=True)
    return {
        "evaluations": {
            m: {k: table[m][k] for k in ("toxicity", "perplexity", "f1")}
            for m in order
            if m in table
        },
        "activation_drop": drop.to_dicts(),
        "tracked_write": total,
        "dx_norm": dict(zip(offset["layer"].to_list(), offset["dx_norm"].to_list(), strict=True)),
        "dx_cos": dict(
            zip(offset["layer"].to_list(), offset["cos_with_direction"].to_list(), strict=True)
        ),
        "figure5": {"layer": layer, "per_layer": shift.to_dicts()},
        "value_vectors": vectors,
    }


def print_findings(f: dict, echo: Callable, n_charts: int) -> None:
    ev = f["evaluations"]
    models = [m for m in ev if m != CONTROL]
    echo("\nFindings")
    for metric in ("toxicity", "perplexity", "f1"):
        chain = " → ".join(f"{m} {ev[m][metric]:.3f}" for m in models)
        control = f"   ({CONTROL} {ev[CONTROL][metric]:.3f})" if CONTROL in ev else ""
        echo(f"  {metric:<11} {chain}{control}")
    total = f["tracked_write"]
    echo(
        f"  neurons writing toward toxic_probe: the top 5 of {total['neurons']} tracked, by the "
        "cosine of their mean write m̄·v with it;"
    )
    echo("  mean coefficient m and mean write m·⟨v, d̂⟩ over generated tokens, base → DPO:")
    for row in f["activation_drop"]:
        echo(
            f"    L{row['layer']:>2} #{row['neuron']:<5} cos(v, d) {row['cosine']:+.3f}  "
            f"m {row['base_mean']:+.3f} → {row['tuned_mean']:+.3f}  "
            f"write {row['base_write']:+.3f} → {row['tuned_write']:+.3f}"
        )
    if not f["activation_drop"]:
        echo("    (no tracked neurons in both runs)")
    echo(
        f"  net write of all {total['neurons']} tracked neurons along toxic_probe: "
        f"{total['base_write']:+.2f} → {total['tuned_write']:+.2f} "
        f"({total['writing_toward']} of them write toward it in the base run)"
    )
    norms = "  ".join(f"{layer}:{norm:.3g}" for layer, norm in f["dx_norm"].items())
    echo(f"  ‖δx‖ per layer (resid_mid, DPO − base): {norms}")
    cosines = list(f["dx_cos"].values())
    last = max(f["dx_cos"])
    echo(
        f"  cos(δx, toxic_probe): {f['dx_cos'][last]:+.3f} at layer {last}, "
        f"mean over layers {sum(cosines) / len(cosines):+.3f}"
    )
    fig5 = f["figure5"]
    rows = fig5["per_layer"]
    if rows:
        raw = [r["layer_mean"] for r in rows]
        best = max(rows, key=lambda r: r["oriented_mean"] or -2)
        echo(
            f"  Figure 5, δv of layers < {fig5['layer']} against δx of layer {fig5['layer']}: "
            f"mean cos(δv, δx) {min(raw):+.3f} to {max(raw):+.3f}; oriented by sign(m̄) up to "
            f"{best['oriented_mean']:+.3f} (layer {best['value_layer']})"
        )
        aggregate = "  ".join(
            f"{r['value_layer']}:{r['aggregate_cos']:+.2f}"
            for r in rows
            if r["aggregate_cos"] is not None
        )
        echo(f"  cos(Σ_i m̄_i·δv_i, δx) per layer: {aggregate}")
    v = f["value_vectors"]
    echo(
        f"  value vectors base vs DPO: min cosine {v['min_cos']:.6f}, mean {v['mean_cos']:.6f}, "
        f"mean ‖δv‖ {v['mean_shift']:.3g}"
    )
    echo(f"  report: {f['report']} ({n_charts} charts as PNG beside it)")
    echo(f"  total time {f['seconds'] / 60:.1f} min")
