"""``actwh report``: the paper's figures and tables, computed from a warehouse, as one HTML page.

The page is self-contained: Vega, Vega-Lite and vega-embed are inlined (vl-convert's bundle), so
it renders offline. Every chart is also written as a PNG next to it. What the report shows is
chosen from the warehouse: the first teacher-forced pair of runs (tuned over base tokens), the
toxic probe, the first target token of the logit lens, the layer of the top toxic value vector.
A section whose inputs are missing says what it needs instead of failing the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import altair as alt
import polars as pl
from tqdm.auto import tqdm

import actwh.report.charts as charts
import actwh.report.templates as templates
from actwh.errors import ActwhError, NotFound, arg, unknown
from actwh.queries.pca import pca_shift
from actwh.report.pages import (
    N_NEURONS,
    base_model,
    default_prompts,
    neuron_page,
    prompt_view,
    top_vectors,
    value_vector,
)
from actwh.warehouse.layout import PROBE, output_file, replace_file

if TYPE_CHECKING:
    from actwh.api.warehouse import Warehouse


T = TypeVar("T")


@dataclass
class Plan:
    base_run: str | None
    tuned_run: str | None
    tuned_model: str | None
    direction: str
    token: str | None
    layer: int | None
    neuron: tuple[int, int] | None
    prefix: str | None
    scorer: str
    neurons: list[tuple[int, int]] = field(default_factory=list)  # a page each
    prompts: list[int] = field(default_factory=list)  # a token view each
    # where a prompt links to (the server's prompt pages); None: to its view in the page, if any
    prompt_href: Callable[[int], str] | None = None


@dataclass
class Section:
    key: str
    title: str
    note: str
    chart: alt.TopLevelMixin | None = None
    table: pl.DataFrame | None = None
    html: str = ""  # more of the section, already HTML (escaped where it holds data)
    data: dict | None = None  # what the section computed, for the caller (the findings)

    @property
    def table_html(self) -> str:
        """The section's table as HTML, every cell escaped ("" without one)."""
        return html_table(self.table) if self.table is not None else ""


def chart_specs(sections: Sequence[Section]) -> dict[str, dict]:
    """The Vega-Lite spec of each section's chart, by the id of its element (``chart-KEY``)."""
    return {f"chart-{s.key}": s.chart.to_dict() for s in sections if s.chart is not None}


@dataclass
class Written:
    """What :func:`write_report` wrote: the page, a PNG per chart, and what it showed."""

    page: Path
    charts: list[Path]
    plan: Plan
    sections: list[Section]

    def data(self, key: str) -> dict:
        """What section ``key`` computed (``Section.data``); NotFound, with the section's
        reason, when it could not be computed."""
        section = next(s for s in self.sections if s.key == key)
        if section.data is None:
            raise NotFound(section.note)
        return section.data


def make_plan(
    wh: Warehouse,
    *,
    base_run: str | None = None,
    tuned_run: str | None = None,
    direction: str | None = None,
    token: str | None = None,
    layer: int | None = None,
    scorer: str = "profanity",
    neurons: Sequence[tuple[int, int]] = (),
    prompts: Sequence[int] = (),
) -> Plan:
    """What the report shows. Every value given is checked against the warehouse (a typo is an
    error naming it, never a page that says "Not available"); the rest is chosen from it."""
    check_asked(wh, base_run, tuned_run, direction, token)
    direction = direction or PROBE
    base_run, tuned_run, tuned_model = choose_pair(wh, base_run, tuned_run)
    if token is None and base_run is not None:
        tokens = wh.sql("select min(token) as t from token_probs where run = $r", {"r": base_run})
        token = tokens["t"][0]
    # The tracked neurons whose mean write points most along the direction: the first is the
    # plan's neuron, all get a page.
    tracked: list[tuple[int, int]] = []
    if base_run and tuned_run:
        try:
            drop = wh.query(
                "activation_drop",
                base_run=base_run,
                tuned_run=tuned_run,
                direction=direction,
                n=N_NEURONS,
            )
            tracked = list(zip(drop["layer"].to_list(), drop["neuron"].to_list(), strict=True))
        except NotFound:  # no tracked neurons in both runs: the pages come from the index
            pass
    neuron = tracked[0] if tracked else None
    if layer is None and neuron is not None:
        layer = neuron[0]
    prefix = None
    deltas = wh.sql(
        "select name, meta from directions where kind = 'delta' order by name"
    ).iter_rows(named=True)
    for row in deltas:
        meta = json.loads(row["meta"])
        if (meta.get("base_run"), meta.get("tuned_run")) == (base_run, tuned_run):
            prefix = row["name"].rsplit(".", 1)[0]
            break
    if layer is None and prefix is not None:
        n = wh.sql(
            "select count(*) from directions where name like $p", {"p": prefix + ".%"}
        ).item()
        layer = (2 * n) // 3
    plan = Plan(base_run, tuned_run, tuned_model, direction, token, layer, neuron, prefix, scorer)
    chosen = (tracked or top_vectors(wh, base_run, direction)) + [tuple(n) for n in neurons]
    plan.neurons = list(dict.fromkeys((int(l), int(i)) for l, i in chosen))
    plan.prompts = list(dict.fromkeys([*default_prompts(wh, plan), *map(int, prompts)]))
    _check_pages(wh, plan, neurons, prompts)
    return plan


def choose_pair(
    wh: Warehouse, base_run: str | None = None, tuned_run: str | None = None
) -> tuple[str | None, str | None, str | None]:
    """The pair of runs a page compares, and the tuned run's model: ``tuned_run`` and its source,
    else the first teacher-forced run of another model over ``base_run`` (or over any run).
    Names are not checked here (see :func:`make_plan`)."""
    pairs = wh.sql(  # another model replaying a run (not the same model capturing more of it)
        "select r.name, r.source_run, r.model from runs r join runs s on s.name = r.source_run "
        "where r.mode = 'teacher_forced' and r.status = 'complete' and r.model <> s.model "
        "order by r.created_at"
    )
    if tuned_run is None and pairs.height:
        row = (
            pairs.row(0, named=True)
            if base_run is None
            else next((r for r in pairs.iter_rows(named=True) if r["source_run"] == base_run), None)
        )
        if row:
            tuned_run, base_run = row["name"], row["source_run"]
    tuned_model = None
    if tuned_run is not None:
        found = wh.sql("select model, source_run from runs where name = $r", {"r": tuned_run})
        tuned_model = found["model"][0]
        base_run = base_run or found["source_run"][0]
    return base_run, tuned_run, tuned_model


def check_asked(wh: Warehouse, base_run, tuned_run, direction, token) -> None:
    """The runs, direction and target token the caller named must be in the warehouse."""
    runs = wh.sql("select name from runs")["name"].to_list()
    for argument, run in (("base_run", base_run), ("tuned_run", tuned_run)):
        if run is not None and run not in runs:
            raise unknown("run", run, runs, argument=argument)
    if direction is not None:
        known = wh.sql("select distinct name from directions")["name"].to_list()
        if direction not in known:
            raise unknown("direction", direction, known, argument="direction")
    if token is not None:
        known = wh.sql("select distinct token from token_probs")["token"].to_list()
        if token not in known:
            hint = "ingest with --logit-lens K --target-tokens TOKENS to store one"
            raise unknown("logit-lens target token", token, known, argument="token", hint=hint)


def _check_pages(wh: Warehouse, plan: Plan, neurons, prompts) -> None:
    """The neurons and prompts the caller asked pages for must exist."""
    model = (
        wh.sql(
            "select m.n_layers, m.d_mlp from runs r join models m on m.name = r.model "
            "where r.name = $r",
            {"r": plan.base_run},
        )
        if plan.base_run
        else None
    )
    sizes = model.row(0) if model is not None and model.height else None
    for layer, neuron in neurons:
        if sizes is None:
            raise ActwhError(f"{arg('neurons')} {layer}:{neuron}: needs a base run")
        if not (0 <= layer < sizes[0] and 0 <= neuron < sizes[1]):
            raise ActwhError(
                f"{arg('neurons')} {layer}:{neuron}: out of range (the model of "
                f"{plan.base_run} has {sizes[0]} layers of {sizes[1]} neurons)"
            )
    if prompts and not _paired(plan):
        raise ActwhError(
            f"{arg('prompts')}: a token view needs a teacher-forced pair of runs "
            "(actwh ingest ... --teacher-force BASE_RUN)"
        )
    if prompts:
        known = wh.sql("select distinct prompt from tokens where run = $r", {"r": plan.base_run})[
            "prompt"
        ].to_list()
        for prompt in prompts:
            if prompt not in known:
                raise NotFound(
                    f"{arg('prompts')} {prompt}: no such prompt in run {plan.base_run} (it holds "
                    f"{len(known)} prompts, {min(known, default=0)}-{max(known, default=0)})"
                )


def _section(wh: Warehouse, plan: Plan, key: str, title: str, build) -> Section:
    """Run ``build(wh, plan)`` → (note, chart, table[, html]); a missing input becomes the
    section's note."""
    try:
        note, chart, table, *more = build(wh, plan)
    except NotFound as error:  # only what is missing; any other error is a real one
        return Section(key, title, f"Not available: {error}")
    html, data = (*more, "", None)[:2]
    return Section(key, title, note, chart, table, html=html, data=data)


def need(condition: bool, what: str) -> None:
    if not condition:
        raise NotFound(what)


def needed(value: T | None, what: str) -> T:
    """``value``, which a section needs: NotFound (the section's note) when it is None."""
    if value is None:
        raise NotFound(what)
    return value


def pair_of(p: Plan) -> tuple[str, str]:
    """The base and tuned runs, which a section needs."""
    missing = "no teacher-forced pair of runs (actwh ingest ... --teacher-force BASE_RUN)"
    return needed(p.base_run, missing), needed(p.tuned_run, missing)


def _paired(p: Plan) -> bool:
    return p.base_run is not None and p.tuned_run is not None


def _toxicity(wh: Warehouse, p: Plan):
    table = wh.query("toxicity_table")
    need(table.height > 0, "no evaluations yet (actwh evaluate WH --model M)")
    note = (
        "Mean toxicity of greedy continuations by each scorer, with 95% bootstrap intervals over "
        "prompts (and for the change from the model's parent, paired on the same prompts); "
        "perplexity and F1 (paper Tables 2 and 4)."
    )
    columns = (
        "model",
        "scorer",
        "toxicity",
        "toxicity_lo",
        "toxicity_hi",
        "toxicity_change",
        "toxicity_change_lo",
        "toxicity_change_hi",
        "perplexity",
        "perplexity_lo",
        "perplexity_hi",
        "f1",
        "f1_lo",
        "f1_hi",
    )
    return note, charts.toxicity(table), table.select(columns)


def _unaligning(wh: Warehouse, p: Plan):
    table = wh.query("toxicity_table").filter(pl.col("edit_scale").is_not_null())
    need(table.height > 0, "no un-aligned variants evaluated (actwh variant --unalign)")
    note = (
        "Each un-aligned variant (its keys scaled by s) beside its control — as many random keys "
        "in the same layers, scaled to add as much write per layer (actwh variant --control-of "
        "--match write) — with 95% bootstrap intervals. A toxicity change that its control also "
        "shows, or that comes with a perplexity beyond the control's, is not un-aligning "
        "(paper §6, Table 4)."
    )
    columns = (
        "model",
        "control_of",
        "edit_scale",
        "keys_by",
        "one_sided",
        "scorer",
        "toxicity",
        "toxicity_lo",
        "toxicity_hi",
        "perplexity",
        "perplexity_lo",
        "perplexity_hi",
        "f1",
    )
    sweep = table.filter(pl.col("keys_by").fill_null("cosine") == "cosine")
    sweep = sweep.filter(~pl.col("one_sided")).sort("edit_scale")
    chart = charts.unaligning(sweep) if sweep["edit_scale"].n_unique() > 1 else None
    return note, chart, table.select(columns)


def _table1(wh: Warehouse, p: Plan):
    models = wh.sql("select model from vector_indexes order by model")
    need(models.height > 0, "no value vectors (actwh index-vectors WH --model M)")
    base_model = (
        wh.sql("select model from runs where name = $r", {"r": p.base_run})["model"][0]
        if p.base_run
        else models["model"][0]
    )
    table = wh.query(
        "top_toxic_vectors", model=base_model, direction=p.direction, k=15, run=p.base_run
    )
    need(table.height > 0, f"no direction {p.direction!r}")
    table = table.with_columns(pl.col("top_tokens").list.join(" | "))
    table = table.select([c for c in table.columns if table[c].null_count() < table.height])
    return (
        f"Value vectors of {base_model} nearest {p.direction} and the tokens they promote "
        "(Table 1).",
        None,
        table,
    )


def _figure1(wh: Warehouse, p: Plan):
    token = needed(
        p.token, "no target-token probabilities (ingest with --logit-lens K --target-tokens ...)"
    )
    frame = wh.query("logit_lens_target", token=token)
    need(frame.height > 0, f"no probabilities for {token!r}")
    peak = frame.group_by("run").agg(pl.col("mean_prob").max().alias("peak_prob")).sort("run")
    return (
        f"Probability of {p.token!r} read through the final norm and unembedding at every "
        "layer, at the last prompt token.",
        charts.logit_lens(frame, token, p.base_run, p.tuned_run),
        peak,
    )


def _figure2(wh: Warehouse, p: Plan):
    base_run, tuned_run = pair_of(p)
    frame = wh.query(
        "activation_drop",
        base_run=p.base_run,
        tuned_run=p.tuned_run,
        direction=p.direction,
        n=5,
    )
    need(
        frame.height > 0,
        "no tracked neurons in both runs (ingest with --track-neurons toxic_probe:64)",
    )
    total = wh.query(
        "tracked_write", base_run=p.base_run, tuned_run=p.tuned_run, direction=p.direction
    ).filter(pl.col("layer").is_null())
    need(  # a tuned run that replayed the base run without tracking its neurons
        total["tuned_write"][0] is not None,
        f"run {tuned_run} tracked no neurons (ingest it with --track-neurons, as {base_run})",
    )
    note = (
        f"The tracked neurons whose mean write m̄·v points most along {p.direction} (the "
        "paper's cosine ranking for GPT-2; oriented by the sign of m̄ for gated MLPs): mean "
        f"coefficient m and mean write m·⟨v, d̂⟩ over generated tokens, {p.base_run} vs "
        f"{p.tuned_run} on the same tokens. All {total['neurons'][0]} tracked neurons write "
        f"{total['base_write'][0]:+.3g} → {total['tuned_write'][0]:+.3g} along it."
    )
    return note, charts.activation_drop(frame, base_run, tuned_run), frame


def _offset(wh: Warehouse, p: Plan):
    need(p.prefix is not None, "no δx directions (actwh directions add WH dx --delta BASE TUNED)")
    frame = wh.query("residual_offset", prefix=p.prefix, direction=p.direction)
    intervals = wh.query("residual_offset_intervals", prefix=p.prefix, direction=p.direction)
    table = frame.select("layer", "dx_norm", "cos_with_direction", "shift_along_direction").join(
        intervals.select("layer", "cos_with_direction_lo", "cos_with_direction_hi"),
        on="layer",
        how="left",
    )
    return (
        f"δx = mean {p.tuned_run} − {p.base_run} per layer, at the residual site the MLP reads; "
        f"its cosine with {p.direction}, with a 95% bootstrap interval over prompts.",
        charts.residual_offset(frame, p.direction),
        table,
    )


def _figure4(wh: Warehouse, p: Plan):
    base_run, tuned_run = pair_of(p)
    layer = needed(p.layer, "no teacher-forced pair with residuals captured")
    frame = pca_shift(wh.sql, base_run, tuned_run, layer, neuron=p.neuron)
    if p.neuron is not None:  # coloured by the write toward the direction: m, oriented
        frame = frame.with_columns(pl.col("activation") * _orientation(wh, p))
    summary = (
        frame.group_by("run")
        .agg(
            pl.col("shift").mean().alias("mean_shift"),
            pl.col("activation").mean().alias("mean_activation"),
        )
        .sort("run")
    )
    return (
        f"The MLP's input (resid_mid; resid_pre for GPT-NeoX) of layer {p.layer} at the last "
        "prompt token of the first 50 prompts, z-scored, projected on the mean shift and the "
        "first principal component; coloured by the tracked neuron's coefficient, signed so that "
        "positive writes toward the direction (−m for a neuron whose value vector points away).",
        charts.pca(frame, layer, p.neuron, p.direction),
        summary,
    )


def _orientation(wh: Warehouse, p: Plan) -> float:
    """+1 where the plan's neuron writes toward the direction when m > 0, −1 where it does so
    when m < 0 (its value vector points away): the sign of cos(v, d)."""
    if p.neuron is None:
        return 1.0
    found = wh.sql(
        "select array_cosine_similarity(v.vec, d.vec) as cos from value_vectors v, "
        "direction_of(v.model, $d) d, runs r where r.name = $r and v.model = r.model "
        "and v.layer = $l and v.neuron = $n",
        {"d": p.direction, "r": p.base_run, "l": p.neuron[0], "n": p.neuron[1]},
    )
    return -1.0 if found.height and found.item() < 0 else 1.0


def _figure5(wh: Warehouse, p: Plan):
    missing = "needs δx directions and weight diffs (actwh diff WH --base B --tuned T)"
    need(p.tuned_model is not None and p.prefix is not None, missing)
    layer = needed(p.layer, missing)
    frame = wh.query(
        "value_vector_shift", model=p.tuned_model, layer=p.layer, prefix=p.prefix, bins=40
    )
    need(
        frame.height > 0,
        f"no value_vector_diffs of {p.tuned_model} in layers before {p.layer} (actwh diff)",
    )
    means = wh.query(
        "value_vector_shift_intervals", model=p.tuned_model, layer=p.layer, prefix=p.prefix
    )
    return (
        f"cos(δv, δx of layer {p.layer}) for every value vector of each earlier layer; "
        "oriented by the sign of the neuron's mean coefficient m̄ in the base run (what the "
        "change of its write m·δv does); and cos(Σ m̄·δv, δx) per layer. The table: each "
        "layer's means, with 95% bootstrap intervals over the prompts δx averages, and their "
        f"nulls: the row of layer {p.layer} itself (causal false: its MLP comes after δx, so it "
        "cannot cause it) and random_cos_p95 (|cos| of δx with random directions, 95th "
        "percentile); aggregate_share is the part of δx along itself that a layer's Σ m̄·δv makes.",
        charts.value_vector_shift(frame, layer),
        means,
    )


def _weights(wh: Warehouse, p: Plan):
    need(p.tuned_model is not None, "no tuned model")
    frame = wh.query("weight_similarity", model=p.tuned_model)
    need(frame.height > 0, f"no weight diffs for {p.tuned_model} (actwh diff)")
    return f"How far {p.tuned_model}'s weights moved from its base (§5.1).", None, frame


# The page, in order: (anchor, title, what builds it).
SECTIONS = (
    ("tables", "Tables 2 and 4 — toxicity, perplexity, F1", _toxicity),
    ("unaligning", "§6 — un-aligning, by scale, against its controls", _unaligning),
    ("table1", "Table 1 — top toxic value vectors", _table1),
    ("figure1", "Figure 1 — logit lens", _figure1),
    ("figure2", "Figure 2 — what the toxic neurons write, before and after", _figure2),
    ("offset", "δx per layer", _offset),
    ("figure4", "Figure 4 — the shift in the residual stream", _figure4),
    ("figure5", "Figure 5 — value-vector changes and δx", _figure5),
    ("weights", "§5.1 — weights barely change", _weights),
)


def build_sections(
    wh: Warehouse, plan: Plan, progress: bool = False, first: Sequence[tuple] = ()
) -> list[Section]:
    """The caller's sections (``first``: ``(key, title, build)``), the paper's, then a page per
    neuron and a view per prompt of the plan."""
    jobs = [*first, *SECTIONS]
    for layer, neuron in plan.neurons:
        jobs.append(
            (f"neuron-L{layer}-{neuron}", f"Neuron L{layer} #{neuron}", _neuron(layer, neuron))
        )
    for prompt in plan.prompts:
        jobs.append((f"prompt-{prompt}", f"Prompt {prompt}, token by token", _prompt(prompt)))
    return [
        _section(wh, plan, key, title, build)
        for key, title, build in tqdm(jobs, desc="report", unit="section", disable=not progress)
    ]


def _neuron(layer: int, neuron: int):
    def build(wh: Warehouse, plan: Plan):
        vector = value_vector(wh, base_model(wh, plan.base_run), layer, neuron)
        note, chart, more = neuron_page(wh, plan, vector)
        return note, chart, None, more

    return build


def _prompt(prompt: int):
    def build(wh: Warehouse, plan: Plan):
        note, more = prompt_view(wh, plan, prompt)
        return note, None, None, more

    return build


def html_table(frame: pl.DataFrame, safe: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """A frame as an HTML table, every cell escaped (floats with :func:`_digits`) but those of
    the ``safe`` columns: HTML the caller made (links whose text it escaped)."""

    def cell(value, column: str) -> str:
        if column in safe:
            return str(value)
        if isinstance(value, float):
            return _digits(value)
        return html.escape(str(value)) if value is not None else ""

    columns = frame.columns
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{cell(v, c)}</td>" for v, c in zip(row, columns, strict=True))
        + "</tr>"
        for row in frame.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _digits(value: float) -> str:
    """Four significant digits, or as many as it takes not to round a value to a round 1, −1 or
    0 that it is not (a cosine of 0.999996 is not 1)."""
    text = f"{value:.4g}"
    if float(text) != value and float(text) in (1.0, -1.0, 0.0):
        text = f"{value:.7g}"
    return text


def script_json(value) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` block: ``<``, ``>`` and ``&`` are
    written as ``\\u003c`` ..., so no string in it (a token, a name) can close the block."""
    text = json.dumps(value)  # ensure_ascii: U+2028 and U+2029 are escaped already
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


GENERATOR = f'<meta name="generator" content="{templates.GENERATOR}">'


def is_report(path: Path) -> bool:
    """Whether ``path`` is a page ``actwh report`` wrote (it may be replaced)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return GENERATOR in f.read(4096)
    except OSError:
        return False


def report_files(out: str | Path, force: bool = False) -> Path:
    """Where the page goes: not inside a warehouse, and not over a file other than an earlier
    report unless ``force``."""
    return output_file(out, "out", force=force, ours=is_report)


def write_report(
    wh: Warehouse,
    out: str | Path,
    plan: Plan | None = None,
    force: bool = False,
    progress: bool = False,
    first: Sequence[tuple] = (),
) -> Written:
    """Write the HTML page and a PNG per chart (``NAME.KEY.png`` beside it). The page may
    replace an earlier report (see :func:`report_files`); a chart replaces a PNG only when it
    does."""
    import vl_convert

    plan = plan or make_plan(wh)
    sections = build_sections(wh, plan, progress, first)
    out = report_files(out, force)
    specs = chart_specs(sections)
    pngs = [out.with_name(f"{out.stem}.{s.key}.png") for s in sections if s.chart is not None]
    for png in pngs:  # each chart is an output too: no link, not inside a warehouse
        output_file(png, "out", force=True)
    clash = [png for png in pngs if png.exists()] if not (force or is_report(out)) else []
    if clash:
        raise ActwhError(
            f"{arg('out')} {out}: {clash[0].name} exists beside it and no earlier report wrote "
            f"it; pass {arg('force')} to replace it, or write the report elsewhere"
        )
    name = str(wh.path).rstrip("/").rsplit("/", 1)[-1]  # not its path: a shared page leaks it
    summary = (
        f"Warehouse {name}: base run {plan.base_run}, tuned run {plan.tuned_run}, "
        f"direction {plan.direction}, layer {plan.layer}, "
        + (f"target token {plan.token!r}." if plan.token is not None else "no target token.")
    )
    page = templates.render(
        "report.html",
        name=name,
        bundle=vl_convert.javascript_bundle(),  # type: ignore[call-arg]  # (snippet is optional)
        summary=summary,
        sections=sections,
        specs=script_json(specs),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    charts_out = zip(pngs, specs.values(), strict=True)
    for png, spec in tqdm(list(charts_out), desc="charts", unit="png", disable=not progress):
        replace_file(png, vl_convert.vegalite_to_png(json.dumps(spec), scale=2))
    replace_file(out, page)
    return Written(out, pngs, plan, sections)
