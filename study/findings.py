"""The demo's findings: the study's numbers from the named analyses, each claim printed beside its
control (a baseline, a null, a matched comparison) and its interval."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import polars as pl

from actwh.errors import ActwhError
from actwh.report.build import need, needed, pair_of
from actwh.study.names import LAYER_RUN, seed_names


def collect_findings(wh, plan) -> dict:
    """The study's numbers, from the named analyses, for the report's plan (``report.build.
    make_plan``): its base and tuned runs, the tuned model, the direction, δx's name prefix and
    layer (Figure 5), and the scorer that chose the pairs. The study's runs are ``base`` and
    ``dpo``; any pair of runs a warehouse holds reads the same."""
    runs = {"base_run": plan.base_run, "tuned_run": plan.tuned_run}
    along = {"direction": plan.direction}
    tuned, prefix, layer = plan.tuned_model, plan.prefix, plan.layer
    drop = wh.query("activation_drop", **runs, **along, n=5)
    base_model = wh.sql("select model from runs where name = $r", {"r": plan.base_run}).item()
    evaluations: dict = {}
    table = wh.query("toxicity_table")
    for r in table.iter_rows(named=True):
        row = evaluations.setdefault(r["model"], {"toxicity": {}})
        row["edit"] = {k: r[k] for k in ("edit_scale", "keys_by", "one_sided", "control_of")}
        for metric in ("perplexity", "f1"):
            row[metric] = {k.replace(metric, "value"): v for k, v in r.items() if metric in k}
        row["toxicity"][r["scorer"]] = {
            k.replace("toxicity", "value"): v for k, v in r.items() if k.startswith("toxicity")
        }
    paper_rank = wh.query("activation_drop", **runs, **along, n=5, rank="cosine", replicates=1)
    total = wh.query("tracked_write", **runs, **along).filter(pl.col("layer").is_null())
    total = total.row(0, named=True)
    offset = wh.query("residual_offset", prefix=prefix, **along)
    offset_cos = wh.query("residual_offset_intervals", prefix=prefix, **along)
    last_layer = offset_cos.filter(pl.col("layer").is_not_null()).row(-1, named=True)
    seed0 = {"model": tuned, **total, "dx_cos": last_layer}
    shift = wh.query("value_vector_shift_intervals", model=tuned, layer=layer, prefix=prefix)
    vectors = wh.sql(
        "select min(cosine) as min_cos, avg(cosine) as mean_cos, avg(delta_norm) as mean_shift "
        "from value_vector_diffs where model = $m",
        {"m": tuned},
    ).row(0, named=True)
    gaps = {"layer": layer, "site": wh.sql("select mlp_input($r)", {"r": plan.base_run}).item()}
    for query in ("transform_gap", "turn_gap"):
        frame = wh.query(query, **runs, **along, layer=layer, site=gaps["site"])
        gaps[query] = frame.to_dicts()
    # un-aligned variants by their keys and scale, each followed by its control(s)
    edits = table.filter(pl.col("edit_scale").is_not_null() & pl.col("control_of").is_null())
    edits = edits.sort(pl.col("keys_by") != "cosine", "one_sided", "edit_scale")
    controls = table.filter(pl.col("control_of").is_not_null())
    unaligning = [
        (m, c)
        for m in edits["model"].unique(maintain_order=True)
        for c in controls.filter(pl.col("control_of") == m)["model"].unique(maintain_order=True)
    ]
    order = [base_model, tuned, *itertools.chain.from_iterable(unaligning)]
    order += [m for m in evaluations if m not in order]  # any other model evaluated there
    return {
        "base_run": plan.base_run,
        "tuned_run": plan.tuned_run,
        "tuned_model": tuned,
        "direction": plan.direction,
        "evaluations": {m: evaluations[m] for m in order if m in evaluations},
        "unaligning": unaligning,
        "seeds": wh.sql(
            "select model, scorer, toxicity, perplexity, f1 from evaluations "
            "where prompt_set = 'test' and (model = $m or model like $m || '.seed%') "
            "order by scorer, model = $m desc, model",
            {"m": tuned},
        ).to_dicts(),
        "seed_mechanism": [seed0, *_seed_mechanism(wh, plan)],
        "pairs_scorer": plan.scorer,
        "activation_drop": drop.to_dicts(),
        "paper_rank": paper_rank.select("layer", "neuron", "base_mean").to_dicts(),
        "drop_baseline": wh.query("drop_baseline", **runs, **along, n=5).to_dicts(),
        "selectivity": _selectivity(wh, plan),
        "tracked_write": total,
        "dx_norm": dict(zip(offset["layer"].to_list(), offset["dx_norm"].to_list(), strict=True)),
        "dx_cos": offset_cos.to_dicts(),
        "figure5": {"layer": layer, "per_layer": shift.to_dicts()},
        "decomposition": _decomposition(wh, prefix),
        "figure1": _figure1(wh, plan),
        "value_vectors": vectors,
        "gaps": gaps,
    }


def _figure1(wh, plan) -> list[dict]:
    """Per target token of the base run's logit lens: the highest mean probability over layers
    at the last prompt position in the base and tuned runs, and how often the base run
    generates it."""
    found = []
    pair = (plan.base_run, plan.tuned_run)
    targets = wh.sql(
        "select distinct token from token_probs where run = $r order by 1", {"r": pair[0]}
    )
    for token in targets["token"]:
        lens = wh.query("logit_lens_target", token=token).filter(pl.col("run").is_in(pair))
        peaks = {
            run: lens.filter(pl.col("run") == run).sort("mean_prob").row(-1, named=True)
            for run in pair
            if lens.filter(pl.col("run") == run).height
        }
        said = wh.sql(
            "select count(*) from tokens where run = $r and is_generated and token = $t",
            {"r": pair[0], "t": token},
        ).item()
        found.append({"token": token, "peaks": peaks, "generated": said})
    return found


def _decomposition(wh, prefix: str) -> list[dict]:
    """dx_decomposition of the last δx layer, or nothing if the runs lack resid_post."""
    try:
        return wh.query("dx_decomposition", prefix=prefix).to_dicts()
    except ActwhError:
        return []


SELECTIVITY_LABELS = ("score:{scorer}", "category:provocative")


def _selectivity(wh, plan) -> list[dict]:
    """selectivity_null and the three most selective neurons, for the tracked neurons (base run)
    and every neuron of the last layer (the study's LAYER_RUN, where it ran), by continuation
    score and prompt category."""
    found = []
    runs = set(wh.sql("select name from runs where status = 'complete'")["name"])
    for run in (plan.base_run, LAYER_RUN):
        for labels in SELECTIVITY_LABELS:
            if run not in runs:
                continue
            given = {"run": run, "labels": labels.format(scorer=plan.scorer)}
            try:
                null = wh.query("selectivity_null", **given, direction=plan.direction)
                top = wh.query("selectivity", **given, direction=plan.direction).head(3)
            except ActwhError as e:  # e.g. too few continuations scored toxic
                found.append({**given, "not_computed": str(e)})
                continue
            found.append({**given, **null.row(0, named=True), "top": top.to_dicts()})
    return found


def _seed_mechanism(wh, plan) -> list[dict]:
    """Per seed after the study's own (``--seeds``) whose DPO model was teacher-forced on the base
    run and has δx: the net write of the tracked neurons (base → that model) and cos(δx, the
    direction) at the last layer."""
    runs = set(wh.sql("select name from runs where status = 'complete'")["name"])
    deltas = set(wh.sql("select name from directions where kind = 'delta'")["name"])
    found = []
    for seed in itertools.count(1):
        names = seed_names(seed)
        if names["model"] not in runs:
            break
        if not any(d.startswith(names["dx"] + ".") for d in deltas):
            continue
        along = {"direction": plan.direction}
        total = wh.query("tracked_write", base_run=plan.base_run, tuned_run=names["model"], **along)
        offset = wh.query("residual_offset_intervals", prefix=names["dx"], **along)
        found.append(
            {
                "model": names["model"],
                **total.filter(pl.col("layer").is_null()).row(0, named=True),
                "dx_cos": offset.filter(pl.col("layer").is_not_null()).row(-1, named=True),
            }
        )
    return found


def _print_seeds(rows: list[dict], echo: Callable) -> None:
    """The DPO model of every seed: each scorer's toxicity, perplexity, F1; mean and spread."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    if len(models) < 2:
        return

    def spread(values: list[float]) -> str:
        listed = " / ".join(f"{v:.3f}" for v in values)
        return f"{listed} (mean {np.mean(values):.3f}, sd {np.std(values, ddof=1):.3f})"

    echo(f"  DPO over {len(models)} seeds of pairs → DPO ({', '.join(models)}):")
    for scorer in dict.fromkeys(r["scorer"] for r in rows):
        values = [r["toxicity"] for r in rows if r["scorer"] == scorer]
        echo(f"    toxicity by {scorer:<10} {spread(values)}")
    first = [r for r in rows if r["scorer"] == rows[0]["scorer"]]
    echo(f"    perplexity             {spread([r['perplexity'] for r in first])}")
    echo(f"    f1                     {spread([r['f1'] for r in first])}")


def _print_seed_mechanism(f: dict, echo: Callable) -> None:
    """Each seed's DPO model teacher-forced on the base run: net write and cos(δx, probe)."""
    rows, d = f["seed_mechanism"], f["direction"]
    if len(rows) < 2:
        return
    writes = " / ".join(f"{r['tuned_write']:+.2f}" for r in rows)
    echo(
        f"    net write of the {rows[0]['neurons']} tracked neurons along {d}, base "
        f"{rows[0]['base_write']:+.2f} → {writes}"
    )
    layer = rows[0]["dx_cos"]["layer"]
    cosines = " / ".join(_ci(r["dx_cos"], "cos_with_direction") for r in rows)
    echo(f"    cos(δx, {d}) at layer {layer}: {cosines}")


def unaligning_verdict(edit: dict, control: dict, scorer: str) -> str:
    """An un-aligned variant read against its control: one whose perplexity interval lies above
    its control's is broken, not un-aligned; one whose toxicity change (by the scorer that chose
    the pairs) does not clear its control's is not un-aligned either. Only a change beyond the
    control's, at no more breakage, is un-aligning. ``edit``, ``control``: findings rows."""
    ppl, ppl_control = edit["perplexity"], control["perplexity"]
    if ppl["value_lo"] is not None and ppl_control["value_hi"] is not None:
        broken = ppl["value_lo"] > ppl_control["value_hi"]
    else:
        broken = ppl["value"] > ppl_control["value"]
    tox, tox_control = edit["toxicity"].get(scorer), control["toxicity"].get(scorer)
    if broken:
        return (
            f"flagged: its perplexity ({ppl['value']:.1f}) is beyond its control's "
            f"({ppl_control['value']:.1f}): its toxicity change comes with breakage and is not "
            "un-aligning"
        )
    if tox is None or tox_control is None or tox["value_change"] is None:
        return "un-aligning: no toxicity change to compare with its control's"
    if tox["value_change_lo"] > tox_control["value_change_hi"]:
        return (
            f"un-aligning: toxicity change {_ci(tox, 'value_change')} beyond its control's "
            f"{_ci(tox_control, 'value_change')}, at a perplexity within the control's "
            f"({ppl['value']:.1f}, the control's {ppl_control['value']:.1f})"
        )
    return (
        f"not un-aligning: the toxicity change {_ci(tox, 'value_change')} does not clear its "
        f"control's {_ci(tox_control, 'value_change')} (perplexity {ppl['value']:.1f}, the "
        f"control's {ppl_control['value']:.1f})"
    )


def _print_unaligning(f: dict, echo: Callable) -> None:
    """Each un-aligned variant's verdict against its control, by scale and keys."""
    ev, scorer = f["evaluations"], f["pairs_scorer"]
    if not f["unaligning"]:
        return
    echo(
        f"  un-aligning, by {scorer}: each variant against its control (as many random keys in "
        "the same layers, adding as much write per layer):"
    )
    for edit, control in f["unaligning"]:
        how = ev[edit]["edit"]
        keys = (how["keys_by"] or "cosine") + (", one-sided" if how["one_sided"] else "")
        echo(
            f"    ×{how['edit_scale']:<4g} keys by {keys}: "
            f"{unaligning_verdict(ev[edit], ev[control], scorer)}"
        )


def _print_baseline(f: dict, echo: Callable) -> None:
    """drop_baseline: is the drop specific to the selected neurons and to toxic prompts?"""
    rows = f["drop_baseline"]
    if not rows:
        return
    echo(
        "  control: the same change for neurons not selected and for neutral prompts — Σ write "
        f"along {f['direction']} and Σ|m̄|, {_pair(f)} (relative change [95% bootstrap interval "
        "over prompts]), plain prompts:"
    )
    for r in rows:
        who = f"{r['neurons']} ({r['n_neurons']})"
        echo(
            f"    {who:<26} {r['prompts']:<12} write {r['base_write']:+8.2f} → "
            f"{r['tuned_write']:+8.2f} ({_share(r, 'write_relative_change')})   "
            f"|m̄| {_share(r, 'abs_relative_change')}"
        )


def _print_selectivity(f: dict, echo: Callable) -> None:
    """selectivity_null: selective neurons against shuffled labels, and the top three."""
    rows = f["selectivity"]
    if not rows:
        return
    echo(
        f"  selectivity: mean write along {f['direction']} on toxic minus clean prompts (plain), "
        "per neuron; selective when |Welch t| > 3, against the same count under label shuffles:"
    )
    for r in rows:
        if "not_computed" in r:
            echo(f"    {r['run']}, labels {r['labels']}: not computed: {r['not_computed']}")
            continue
        where = "tracked neurons" if r["run"] == f["base_run"] else f"neurons of {r['run']}"
        echo(
            f"    {r['neurons']} {where}, labels {r['labels']} ({r['n_toxic']} toxic, "
            f"{r['n_clean']} clean): {r['selective']} selective ({r['toward']} toward, "
            f"{r['away']} away) against {r['null_mean']:.1f} under {r['permutations']} shuffles "
            f"(95th percentile {r['null_p95']:.0f}, p {r['null_p']:.3f}); split-half r "
            f"{_optional(r['split_half_r'])}"
        )
        top = "; ".join(
            f"L{t['layer']} #{t['neuron']} t {t['t']:+.1f} (p_perm {t['p_perm']:.3f})"
            for t in r["top"]
        )
        echo(f"      most toward: {top}")


def _print_decomposition(rows: list[dict], echo: Callable) -> None:
    """dx_decomposition: which blocks' output changes make δx of the last layer, and of the MLPs'
    share, how much their coefficients and their value vectors changed."""
    if not rows:
        echo("  δx decomposition: not computed (the runs did not store resid_post)")
        return
    *blocks, total = rows
    top = sorted(
        [(r["attn_share"], f"attn {r['block']}") for r in blocks]
        + [(r["mlp_share"], f"mlp {r['block']}") for r in blocks if r["mlp_share"] is not None],
        reverse=True,
    )[:4]
    largest = ", ".join(f"{name} {share:+.1%}" for share, name in top)
    echo(
        f"  δx of layer {total['dx_layer']} (‖δx‖ {total['dx_norm']:.1f}) decomposed exactly into "
        "the blocks' output changes, as shares along δx [95% bootstrap interval over its "
        f"{total['n_prompts']} prompts]: attention {_share(total, 'attn_share')} (with the "
        f"embedding's), MLPs {_share(total, 'mlp_share')}; largest: {largest} (sum error "
        f"{total['sum_error']:.1e})"
    )
    if total["mlp_dm_share"] is None:
        echo(
            "    the MLPs' part not split (a norm follows the MLP, no value-vector diffs, or runs "
            "ingested before neuron_stats kept arms)"
        )
        return
    rest = total["mlp_share"] - total["mlp_dm_share"] - total["mlp_dv_share"]
    echo(
        f"    the MLPs' part: their coefficients' change Σ δm̄_i·v_i {total['mlp_dm_share']:+.1%}, "
        f"their value vectors' Σ m̄'_i·δv_i {total['mlp_dv_share']:+.1%}, the rest (biases, "
        f"float16) {rest:+.1%}"
    )


def _share(row: dict, column: str) -> str:
    """``+68.2% [+61.0%, +74.9%]``."""
    lo, hi = row[column + "_lo"], row[column + "_hi"]
    span = "" if lo is None else f" [{lo:+.1%}, {hi:+.1%}]"
    return f"{row[column]:+.1%}{span}"


def _print_figure1(f: dict, echo: Callable) -> None:
    """Figure 1: the lens's target tokens, how likely they get, and whether the model says them."""
    rows = f["figure1"]
    if not rows:
        return
    echo(
        "  Figure 1, logit lens at the last prompt position: the highest mean probability of each "
        f"target token over layers, {_pair(f)} (and how often the base run generates it):"
    )
    for r in rows:
        peaks = r["peaks"]
        text = " → ".join(
            f"{peaks[run]['mean_prob']:.2e} (layer {peaks[run]['layer']} {peaks[run]['site']})"
            for run in (f["base_run"], f["tuned_run"])
            if run in peaks
        )
        echo(f"    {r['token']!r:<12} {text}; generated {r['generated']} times")


def _optional(value, spec: str = "+.2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _print_gaps(f: dict, echo: Callable) -> None:
    """The DPO offset along the probe by prompt encoding and by chat message."""
    gaps = f["gaps"]
    where = f"at {gaps['site']} {gaps['layer']}"
    encoded = "; ".join(
        f"{r['transform']} ({r['prompts']}) {r['base_dot']:+.2f} → {r['tuned_dot']:+.2f} "
        f"({r['gap']:+.2f}"
        + (
            ""
            if r["source_gap"] is None
            else f"; their plain sources {r['source_gap']:+.2f}, "
            f"{r['gap'] / r['source_gap']:.0%} of it"
        )
        + ")"
        for r in gaps["transform_gap"]
    )
    echo(f"  mean projection on {f['direction']} {where}, generated tokens, {_pair(f)} (gap):")
    echo(f"    by prompt encoding: {encoded or 'no runs'}")
    turns = "; ".join(
        f"{r['part']} {r['base_dot']:+.2f} → {r['tuned_dot']:+.2f} ({r['gap']:+.2f})"
        for r in gaps["turn_gap"]
    )
    chats = gaps["turn_gap"][0]["prompts"] if gaps["turn_gap"] else 0
    echo(f"    in {chats} multi-turn chats, by message (all their tokens): {turns or 'none'}")


def _interval(t: dict) -> str:
    """``0.025 [0.019, 0.032]   change from its parent -0.076 [-0.123, -0.038]``."""
    text = _ci(t, "value", sign="")
    if t["value_change"] is not None:
        text += f"   change from its parent {_ci(t, 'value_change')}"
    return text


def _ci(row: dict, value: str, sign: str = "+") -> str:
    """``-0.282 [-0.294, -0.269]``: ``row[value]`` and its interval (``VALUE_lo``, ``VALUE_hi``),
    if it has one."""
    lo, hi = row[value + "_lo"], row[value + "_hi"]
    span = "" if lo is None else f" [{lo:{sign}.3f}, {hi:{sign}.3f}]"
    return f"{row[value]:{sign}.3f}{span}"


def _pair(f: dict, between: str = " → ", reverse: bool = False) -> str:
    """``base → DPO`` (the study's runs), else the runs' names: ``b → t``."""
    study = (f["base_run"], f["tuned_run"]) == ("base", "dpo")
    pair = ["base", "DPO"] if study else [f["base_run"], f["tuned_run"]]
    return between.join(reversed(pair) if reverse else pair)


def print_findings(f: dict, echo: Callable) -> None:
    """The findings, a line per ``echo`` call: what the demo prints and the report shows."""
    _print_evaluations(f, echo)
    _print_unaligning(f, echo)
    total, d = f["tracked_write"], f["direction"]
    echo(
        f"  neurons writing toward {d}: the top 5 of {total['neurons']} tracked, by their "
        "mean write m̄·⟨v, d̂⟩ in the base run;"
    )
    echo(
        "  mean coefficient m and mean write m·⟨v, d̂⟩ over generated tokens of the plain prompts, "
        f"{_pair(f)} (change [95% bootstrap interval over prompts]):"
    )
    for row in f["activation_drop"]:
        echo(
            f"    L{row['layer']:>2} #{row['neuron']:<5} cos(v, d) {row['cosine']:+.3f}  "
            f"m {row['base_mean']:+.3f} → {row['tuned_mean']:+.3f} "
            f"({_ci(row, 'change')})  write {row['base_write']:+.3f} → "
            f"{row['tuned_write']:+.3f} ({_ci(row, 'write_change')})"
        )
    if not f["activation_drop"]:
        echo("    (no tracked neurons in both runs)")
    paper = ", ".join(
        f"L{r['layer']} #{r['neuron']} (m̄ {r['base_mean']:+.3f})" for r in f["paper_rank"]
    )
    echo(f"    (the paper's rule, by cosine alone, picks: {paper})")
    _print_baseline(f, echo)
    _print_selectivity(f, echo)
    echo(
        f"  net write of all {total['neurons']} tracked neurons along {d}: "
        f"{total['base_write']:+.2f} → {total['tuned_write']:+.2f} "
        f"({total['writing_toward']} of them write toward it in the base run)"
    )
    norms = "  ".join(f"{layer}:{norm:.3g}" for layer, norm in f["dx_norm"].items())
    echo(f"  ‖δx‖ per layer (resid_mid, {_pair(f, ' − ', reverse=True)}): {norms}")
    *layers, mean = f["dx_cos"]
    echo(
        f"  cos(δx, {d}) [95% bootstrap interval over prompts]: "
        f"{_ci(layers[-1], 'cos_with_direction')} at layer {layers[-1]['layer']}, "
        f"mean over layers {_ci(mean, 'cos_with_direction')}"
    )
    _print_figure5(f["figure5"], echo)
    _print_decomposition(f["decomposition"], echo)
    _print_figure1(f, echo)
    v = f["value_vectors"]
    echo(
        f"  value vectors {_pair(f, ' vs ')}: min cosine {v['min_cos']:.6f}, mean "
        f"{v['mean_cos']:.6f}, "
        f"mean ‖δv‖ {v['mean_shift']:.3g}"
    )
    _print_gaps(f, echo)


def _print_evaluations(f: dict, echo: Callable) -> None:
    """Toxicity by each scorer (the pairs' scorer first), the seeds, perplexity and F1."""
    ev = f["evaluations"]
    if not ev:
        echo("  toxicity, perplexity, F1: no evaluations (actwh evaluate WH --model M)")
        return
    scorers = sorted(
        {s for m in ev.values() for s in m["toxicity"]}, key=lambda s: s != f["pairs_scorer"]
    )
    for scorer in scorers:
        role = "chose the pairs" if scorer == f["pairs_scorer"] else "independent"
        echo(f"  toxicity by {scorer} ({role}), mean [95% bootstrap interval over prompts]:")
        for m in ev:
            if scorer in ev[m]["toxicity"]:
                echo(f"    {m:<34} {_interval(ev[m]['toxicity'][scorer])}")
    _print_seeds(f["seeds"], echo)
    _print_seed_mechanism(f, echo)
    for metric, over in (("perplexity", "paragraphs of the text"), ("f1", "samples")):
        echo(f"  {metric} [95% bootstrap interval over {over}]:")
        for m in ev:
            echo(f"    {m:<34} {_interval(ev[m][metric])}")


def _print_figure5(fig5: dict, echo: Callable) -> None:
    """Figure 5: δv of the earlier layers against δx, with its controls."""
    rows = fig5["per_layer"]
    causal = [r for r in rows if r["causal"]]
    if causal:
        low = min(causal, key=lambda r: r["layer_mean"])
        high = max(causal, key=lambda r: r["layer_mean"])
        best = max(causal, key=lambda r: r["oriented_mean"] or -2)
        echo(
            f"  Figure 5, δv of layers < {fig5['layer']} against δx of layer {fig5['layer']} "
            "[95% bootstrap interval over δx's prompts]:"
        )
        echo(
            f"    mean cos(δv, δx) from {_ci(low, 'layer_mean')} (layer {low['value_layer']}) "
            f"to {_ci(high, 'layer_mean')} (layer {high['value_layer']}); oriented by sign(m̄) "
            f"up to {_ci(best, 'oriented_mean')} (layer {best['value_layer']})"
        )
        aggregate = [r for r in causal if r["aggregate_cos"] is not None]
        top = max(aggregate, key=lambda r: r["aggregate_cos"])
        per_layer = "  ".join(f"{r['value_layer']}:{r['aggregate_cos']:+.2f}" for r in aggregate)
        echo(
            f"    cos(Σ_i m̄_i·δv_i, δx) highest {_ci(top, 'aggregate_cos')} at layer "
            f"{top['value_layer']}; per layer: {per_layer}"
        )
        own = [r for r in rows if not r["causal"]]
        null = (
            f"layer {own[0]['value_layer']} itself, after δx (cannot cause it): "
            f"{_ci(own[0], 'aggregate_cos')}; "
            if own
            else ""
        )
        share = sum(r["aggregate_share"] for r in aggregate)
        echo(
            f"    its controls: {null}a random direction: |cos| < "
            f"{rows[0]['random_cos_p95']:.3f} (95%); share of δx along itself that Σ over layers "
            f"< {fig5['layer']} of Σ_i m̄_i·δv_i makes: {share:+.1%}"
        )


def report_section(wh, plan):
    """The report's findings section (``actwh report``, the demo's report): what
    :func:`print_findings` prints, with its numbers as the section's data."""
    import html

    base, _ = pair_of(plan)
    tuned = needed(plan.tuned_model, "no tuned model")
    needed(plan.prefix, f"no δx of the pair (actwh directions add WH dx --delta {base} TUNED_RUN)")
    needed(plan.layer, "no layer to read δx at (no tracked neurons, no offset)")
    need(
        wh.sql("select count(*) from value_vector_diffs where model = $m", {"m": tuned}).item() > 0,
        f"no weight differences of {tuned} (actwh diff WH --base BASE_MODEL --tuned {tuned})",
    )
    findings = collect_findings(wh, plan)
    lines: list[str] = []
    print_findings(findings, lines.append)
    note = (
        "What actwh demo prints at its end: each claim beside its control (a baseline, a null, "
        "a matched comparison) and its 95% interval — evaluations of every model and seed, "
        "un-aligning against its controls, the neurons and their controls, selectivity against "
        "shuffled labels, δx, and the offset by prompt encoding and by chat message."
    )
    caveat = wh.sql("select value from warehouse_info where key = $k", {"k": CAVEAT_KEY})
    if caveat.height and caveat.item():
        note = f"{caveat.item()} {note}"
    text = html.escape("\n".join(line[2:] if line.startswith("  ") else line for line in lines))
    return note, None, None, f'<pre class="findings">{text}</pre>', findings


# warehouse_info's key for what the study's numbers are, when they are not findings (--quick).
CAVEAT_KEY = "study_caveat"

# The section the study adds to a report, first: (anchor, title, what builds it).
FINDINGS_SECTION = ("findings", "Findings — every claim beside its control", report_section)
