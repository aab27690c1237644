"""What each page of ``actwh serve`` shows, as the values of its template.

Every page reads only what it shows: the home page the catalog, a neuron page one value vector and
that neuron's rows (``neuron_contexts`` and ``neuron_histogram`` prune to its layer's files), a
prompt page one prompt's tokens and projections. The neuron page and the prompt view are the
report's own (``report/pages.py``), rendered through the same section template. A name that is
not in the warehouse, and a layer or neuron out of range, raise ``NotFound`` naming it: the
application turns that into a 404 page.

The server's snapshot never changes, so what every page asks of the catalog (a model's shape,
the pair of runs, the directions, a run's prompts) is read once and kept (``Snapshot.once``);
what is particular to a page (a neuron's value vector and statistics, a prompt's tokens) is read
for it, so memory does not grow with the pages served.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import numpy as np
import polars as pl

from actwh.errors import ActwhError, NotFound, unknown
from actwh.report.build import (
    Plan,
    Section,
    chart_specs,
    check_asked,
    choose_pair,
    html_table,
    script_json,
)
from actwh.report.pages import neuron_page, prompt_view, unit_direction, value_vector
from actwh.warehouse.layout import PROBE
from actwh.warehouse.vector_index import normalized

if TYPE_CHECKING:
    from actwh.api.warehouse import Warehouse

PAGE_ROWS = 100  # rows of a SQL result per page
N_NEAREST = 10  # nearest value vectors on a neuron page
TOP_3 = "top 3 next tokens (probability)"  # a column of the logit lens on a prompt page


def href(*parts, **query) -> str:
    """A URL of this server: path parts quoted, query parameters that are not None encoded."""
    path = "/" + "/".join(quote(str(p), safe="") for p in parts)
    given = {k: v for k, v in query.items() if v is not None and v != ""}
    return path + ("?" + urlencode(given) if given else "")


def home(wh: Warehouse) -> dict:
    """Models, runs (the teacher-forced pairs marked), directions and tables, from the catalog."""
    models = wh.sql("select name, role, parent, architecture, n_layers, d_mlp from models")
    runs = wh.sql(
        "select r.name, r.model, r.mode, r.source_run, r.status, r.n_prompts, "
        "r.mode = 'teacher_forced' and s.model is not null and r.model <> s.model as pair "
        "from runs r left join runs s on s.name = r.source_run order by r.created_at"
    )
    directions = wh.sql(
        "select name, model, kind from directions "
        "where kind <> 'delta' or name like '%.0' order by model, name"
    )
    tables = wh.sql(  # from the catalog: no data file is opened
        "select table_name as name, sum(n_rows)::BIGINT as n_rows, sum(n_bytes)::BIGINT as n_bytes "
        "from commit_files group by all order by 1"
    )
    return {
        "title": str(wh.path).rstrip("/").rsplit("/", 1)[-1],
        "models": models.to_dicts(),
        "runs": runs.to_dicts(),
        "directions": directions.to_dicts(),
        "tables": tables.to_dicts(),
        "queries": wh.queries().select("name", "answers").to_dicts(),
        "paired": bool(runs["pair"].any()) if runs.height else False,
    }


def _model_row(wh: Warehouse, model: str) -> dict:
    """Model ``model``'s row of the catalog (kept with the snapshot)."""
    models = wh.snapshot.models()
    if model not in models:
        raise unknown("model", model, models)
    return models[model]


def _run(wh: Warehouse, run: str) -> dict:
    """Run ``run``'s row of the catalog (kept with the snapshot)."""
    runs = wh.snapshot.runs()
    if run not in runs:
        raise unknown("run", run, runs)
    return runs[run]


def _plan(wh: Warehouse, base_run, tuned_run, direction, layer, neuron=None) -> Plan:
    """The report's plan for one page: the names given checked as the report checks them, the
    pair of runs chosen as it chooses it."""

    def chosen() -> Plan:
        check_asked(wh, base_run, tuned_run, None, None)
        base, tuned, tuned_model = choose_pair(wh, base_run, tuned_run)
        named = _direction(wh, direction)
        return Plan(base, tuned, tuned_model, named, None, None, None, None, "profanity")

    plan = wh.snapshot.once(("plan", base_run, tuned_run, direction), chosen)
    return replace(plan, layer=layer, neuron=neuron)


def _direction(wh: Warehouse, given: str | None) -> str:
    """``given`` (it must be there: :func:`check_asked`), else toxic_probe, else the first
    direction that is not a δx (else toxic_probe: the sections that need one say so)."""
    if given is not None:
        check_asked(wh, None, None, given, None)
        return given
    names = wh.sql("select name, kind from directions order by kind = 'delta', name")
    if PROBE in set(names["name"]) or names.is_empty() or names["kind"][0] == "delta":
        return PROBE
    return names["name"][0]


def neuron(
    wh: Warehouse,
    model: str,
    layer: int,
    index: int,
    *,
    base_run: str | None = None,
    tuned_run: str | None = None,
    direction: str | None = None,
) -> dict:
    """A neuron's page: the report's (its value vector's tokens, cosine with the direction, its
    coefficient's histogram per run, its top contexts), and its nearest value vectors."""
    row = _model_row(wh, model)
    if not 0 <= layer < row["n_layers"]:
        raise NotFound(f"layer {layer} of {model}: it has layers 0-{row['n_layers'] - 1}")
    if not 0 <= index < row["d_mlp"]:
        raise NotFound(f"neuron {index} of {model}: its layers have neurons 0-{row['d_mlp'] - 1}")
    plan = _plan(wh, base_run, tuned_run, direction, layer, (layer, index))
    if plan.base_run is not None and _run(wh, plan.base_run)["model"] != model:
        # the pair is of another model: this page reads no run
        plan = replace(plan, base_run=None, tuned_run=None, tuned_model=None, neuron=None)
    base_run = plan.base_run
    plan.prompt_href = lambda prompt: href("prompt", base_run, prompt)
    v = value_vector(wh, model, layer, index)
    note, chart, more = neuron_page(wh, plan, v)
    sections = [
        Section("neuron", "Its value vector, coefficients and contexts", note, chart, html=more),
        _per_run(wh, plan, model, layer, index, v.vec),
        _directions(wh, model, v.vec),
        _nearest(wh, model, layer, index, v.vec),
    ]
    return _page(f"{model} L{layer} #{index}", sections)


def _directions_of(wh: Warehouse, model: str) -> tuple[pl.DataFrame, np.ndarray]:
    """The directions ``model`` sees (its own and its ancestors'; no δx): name, model, kind,
    and their unit vectors as a matrix ``unit`` (kept for the snapshot)."""

    def read() -> tuple[pl.DataFrame, np.ndarray]:
        found = wh.sql(
            "select name, model, kind, vec from directions "
            "where model in (select model from lineage($m)) and kind <> 'delta'",
            {"m": model},
        )
        vectors = found["vec"].to_list()  # none, before a direction is registered
        unit = normalized(np.array(vectors, np.float32)) if vectors else np.zeros((0, 0))
        return found.drop("vec"), unit

    return wh.snapshot.once(("directions", model), read)


def _per_run(
    wh: Warehouse, plan: Plan, model: str, layer: int, index: int, vector: np.ndarray
) -> Section:
    """Its coefficient m per run (over generated tokens), from ``neuron_stats`` (one layer's
    files): mean, spread, and its mean write along the direction m̄·⟨v, d̂⟩; for the pair, the
    change of the mean with a 95% interval over tokens (unpaired, so wider than the paired
    bootstrap of ``activation_drop``)."""
    stats = wh.sql(
        "select run, sum(n)::BIGINT as tokens, sum(sum) / sum(n) as mean_m, "
        "sqrt(greatest(sum(sum_sq) / sum(n) - pow(sum(sum) / sum(n), 2), 0)) as sd_m "
        "from neuron_stats where layer = $l and neuron = $n and generated group by run "
        "order by run",
        {"l": layer, "n": index},
    )
    along = unit_direction(wh, plan.direction, model)
    write = pl.col("mean_m") * float(along @ vector) if along is not None else pl.lit(None)
    kept = wh.snapshot.runs().values()
    runs = pl.DataFrame(
        {"run": [r["name"] for r in kept], "model": [r["model"] for r in kept]},
        schema={"run": pl.String, "model": pl.String},  # (no run yet: still typed)
    )
    stats = (
        stats.join(runs, on="run")
        .sort("run")
        .select(
            "run", "model", "tokens", "mean_m", "sd_m", write.cast(pl.Float64).alias("mean_write")
        )
    )
    note = (
        f"Its coefficient m over each run's generated tokens, and its mean write along "
        f"{plan.direction} (neuron_stats: the runs that tracked it or captured mlp_post)."
    )
    if stats.is_empty():
        return Section("runs", "Per run", note + " No run holds it.")
    pair = stats.filter(pl.col("run").is_in([plan.base_run, plan.tuned_run]))
    if plan.tuned_run is not None and pair.height == 2:
        b, t = (
            pair.filter(pl.col("run") == r).row(0, named=True)
            for r in (plan.base_run, plan.tuned_run)
        )
        change = t["mean_m"] - b["mean_m"]
        half = 1.96 * (b["sd_m"] ** 2 / b["tokens"] + t["sd_m"] ** 2 / t["tokens"]) ** 0.5
        note += (
            f" {plan.base_run} → {plan.tuned_run}: m̄ {b['mean_m']:+.4g} → {t['mean_m']:+.4g}, "
            f"change {change:+.4g} [{change - half:+.4g}, {change + half:+.4g}] (95%, over tokens)."
        )
    return Section("runs", "Per run", note, table=stats)


def _directions(wh: Warehouse, model: str, vector: np.ndarray) -> Section:
    """The cosine of its value vector with every direction of its model (and its ancestors')."""
    names, unit = _directions_of(wh, model)
    cosine = unit @ normalized(vector[None])[0] if names.height else np.zeros(0)
    cosines = (
        names.rename({"name": "direction"})
        .with_columns(pl.Series("cosine", cosine, pl.Float64))
        .sort(pl.col("cosine").abs(), descending=True)
    )
    note = "cos(v, d) for each direction (δx's are on the report's neuron page)."
    return Section("directions", "Cosine with each direction", note, table=cosines)


def _nearest(wh: Warehouse, model: str, layer: int, index: int, vector: np.ndarray) -> Section:
    found = wh.search(vector, model=model, k=N_NEAREST + 1, tokens=False)  # (their pages: more)
    found = found.filter(~((pl.col("layer") == layer) & (pl.col("neuron") == index)))
    return Section(
        "nearest",
        "Nearest value vectors",
        "By cosine with this neuron's value vector (FAISS, exact); each one's page shows its "
        "tokens.",
        html=_linked_neurons(found.head(N_NEAREST), model),
    )


def _linked_neurons(frame: pl.DataFrame, model: str) -> str:
    """A table of neurons whose (layer, neuron) cells link to their pages."""
    links = [
        f'<a href="{href("neuron", model, layer, n)}">L{layer} #{n}</a>'
        for layer, n in zip(frame["layer"].to_list(), frame["neuron"].to_list(), strict=True)
    ]
    shown = frame.drop("query", strict=False).with_columns(pl.Series("neuron", links))
    return html_table(shown, safe={"neuron"})


def prompt(
    wh: Warehouse,
    run: str,
    index: int,
    *,
    layer: int | None = None,
    direction: str | None = None,
    neuron: str | None = None,
) -> dict:
    """A prompt of a run, coloured by its projection on the direction at ``layer`` (default: two
    thirds of the depth), base and tuned side by side (the report's token view), and by a
    tracked neuron's coefficient (``neuron`` ``L:N``; default the run's first tracked one); each
    token's values on hover."""
    r = _run(wh, run)
    replays = r["mode"] == "teacher_forced" and r["source_run"] is not None
    # a replay is shown beside the run it replays; any other run beside its replay (the pair
    # _plan chooses for it), if it has one
    base_run, tuned_run = (r["source_run"], run) if replays else (run, None)
    depth = _model_row(wh, r["model"])["n_layers"]
    layer = (2 * depth) // 3 if layer is None else layer
    if not 0 <= layer < depth:
        raise NotFound(f"layer {layer} of {r['model']}: it has layers 0-{depth - 1}")
    plan = _plan(wh, base_run, tuned_run, direction, layer, _tracked(wh, base_run, neuron))
    held = wh.snapshot.once(
        ("prompts", run),
        lambda: set(wh.sql("select prompt from generations where run = $r", {"r": run})["prompt"]),
    )
    if index not in held:
        raise NotFound(f"prompt {index} of run {run}: it holds {len(held)} prompts")
    lens, hover = _lens(wh, plan, run, index)
    try:
        note, more = prompt_view(wh, plan, index, hover)
    except NotFound as missing:  # e.g. a run of no pair: its tokens, uncoloured
        text = wh.sql(
            "select prompt_text, continuation from generations where run = $r and prompt = $p",
            {"r": run, "p": index},
        ).row(0, named=True)
        note = f"Not coloured: {missing}."
        more = html_table(pl.DataFrame([text]))
    section = Section("prompt", "Its tokens, coloured", note, html=more)
    return _page(f"Prompt {index} of {run}", [section, lens])


def _lens(wh: Warehouse, plan: Plan, run: str, index: int) -> tuple[Section, dict[int, str]]:
    """The logit lens at the page's layer: each position the runs stored it at (the last prompt
    token, or every token with ``--lens-at all``), its top 3 next tokens in each run; and the
    same by position, for the token view's hover."""
    runs = [r for r in (plan.base_run, plan.tuned_run) if r is not None] or [run]
    title = f"Logit lens at layer {plan.layer}"
    # each run named in the filter, so that only its files are read (no join, no subquery)
    lens = wh.sql(  # with the token at each position, from the first run's tokens
        "select l.run, l.pos, l.site, l.rank, l.token as next, l.prob, t.token "
        "from logit_lens l left join tokens t "
        "on t.run = $a and t.prompt = $p and t.pos = l.pos "
        "where l.run in ($a, $b) and l.prompt = $p and l.layer = $l and l.rank <= 3 "
        "order by l.site, l.pos, l.run, l.rank",
        {"a": runs[0], "b": runs[-1], "p": index, "l": plan.layer},
    )
    if lens.is_empty():
        return Section(
            "lens",
            title,
            f"Not stored for this prompt in {', '.join(runs)} (ingest --logit-lens K; "
            "--lens-at all stores it at every token).",
        ), {}
    shown = (
        lens.with_columns(
            pl.format(
                "{} {}", pl.col("next").map_elements(repr, pl.String), pl.col("prob").round(3)
            ).alias("shown")
        )
        .group_by("site", "pos", "run", maintain_order=True)
        .agg(
            pl.col("token").first().map_elements(repr, pl.String),
            pl.col("shown").str.join(", ").alias(TOP_3),
        )
        .select("site", "pos", "token", "run", TOP_3)
    )
    hover: dict[int, list[str]] = {}
    for row in shown.iter_rows(named=True):
        said = f"lens L{plan.layer} {row['site']} {row['run']}: {row[TOP_3]}"
        hover.setdefault(row["pos"], []).append(said)
    note = (
        "What the residual stream at this layer predicts next, read through the final norm and "
        "the unembedding, at each position where it was stored (the last prompt token by "
        "default: what predicts the first generated token), also on hover over that token above; "
        "?layer= picks the layer."
    )
    return Section("lens", title, note, table=shown), {p: "; ".join(h) for p, h in hover.items()}


def _tracked(wh: Warehouse, run: str, neuron: str | None) -> tuple[int, int] | None:
    """``neuron`` (``L:N``), else the first neuron run ``run`` tracked (None: it tracked none)."""
    from actwh.arguments import layer_neuron
    from actwh.ingest.options import RunConfig

    if neuron:
        return layer_neuron(neuron, "neuron")
    config = RunConfig.of(_run(wh, run)["config"])
    tracked = sorted(config.track_neurons.items())
    return (tracked[0][0], tracked[0][1][0]) if tracked and tracked[0][1] else None


def search(
    wh: Warehouse,
    *,
    direction: str | None = None,
    model: str | None = None,
    neuron: str | None = None,
    vector: str | None = None,
    k: int = 20,
) -> dict:
    """The value vectors nearest a direction, a neuron's value vector (``L:N``) or a pasted
    vector (numbers separated by commas or spaces), each linking to its page."""
    from actwh.arguments import layer_neuron

    if neuron:
        if model is None:
            raise NotFound("a neuron's search needs its model")
        _model_row(wh, model)
        layer, index = layer_neuron(neuron, "neuron")
        query: object = wh.vectors("value_vectors", model=model, layer=layer, neuron=index)[0][0]
        what = f"value vector L{layer} #{index} of {model}"
    elif vector:
        import numpy as np

        try:
            query = np.array([float(x) for x in vector.replace(",", " ").split()], np.float32)
        except ValueError:
            raise NotFound("the pasted vector: expected numbers separated by commas") from None
        what = f"the pasted vector ({len(query)} numbers)"  # type: ignore[arg-type]
    else:
        direction = _direction(wh, direction)
        query, what = direction, f"direction {direction}"
    found = wh.search(query, model=model, k=k)  # type: ignore[arg-type]
    shown = model or wh.sql("select min(model) from vector_indexes").item()
    section = Section(
        "search",
        f"Nearest value vectors to {what}",
        "By cosine (|cosine| for gated MLPs, whose m takes either sign).",
        html=_linked_neurons(found, shown),
    )
    return _page(f"search: {what}", [section])


def sql(wh: Warehouse, query: str, page: int = 0) -> dict:
    """A page of a read-only SQL result (``PAGE_ROWS`` rows), and its columns for a chart."""
    frame = wh.sql(
        f"select * from ({query}) limit {PAGE_ROWS + 1} offset {page * PAGE_ROWS}"  # noqa: S608
    )  # (the query runs in the read-only sandbox: it can read only the warehouse)
    more = frame.height > PAGE_ROWS
    frame = frame.head(PAGE_ROWS)
    return {
        "title": "SQL",
        "query": query,
        "page": page,
        "more": more,
        "columns": frame.columns,
        "table": html_table(frame),
        # the rows for the chart, as polars writes JSON (dates as text), safe in a script block
        "rows": script_json(json.loads(frame.write_json())) if frame.height else "[]",
    }


def named_query(wh: Warehouse, name: str, given: dict[str, str]) -> dict:
    """A named analysis as a form (its parameters, their defaults and descriptions), and its
    result once every required parameter is given (values typed as the CLI's ``-p k=v``)."""
    from actwh.arguments import param_value
    from actwh.queries.loader import named_queries

    queries = named_queries()
    if name not in queries:
        raise unknown("query", name, queries)
    spec = queries[name]
    params = {k: param_value(v) for k, v in given.items() if v != ""}
    ready = all(p.name in params for p in spec.params if p.required)
    frame, error = None, None
    try:
        frame = wh.query(name, **params) if ready else None
    except NotFound:
        raise  # a name that is not there: the page is a 404 naming it
    except ActwhError as failed:  # what the warehouse lacks for it: said under the form
        error = str(failed)
    return {
        "title": f"query {name}",
        "spec": spec,
        "given": given,
        "table": _linked_rows(wh, frame) if frame is not None else "",
        "rows": frame.height if frame is not None else None,
        "error": error,
    }


def _linked_rows(wh: Warehouse, frame: pl.DataFrame) -> str:
    """A result whose rows link to neuron pages where it has (model, layer, neuron) or (layer,
    neuron) and one model holds value vectors, and to prompt pages where it has (run, prompt)."""
    cols, safe = set(frame.columns), set()
    if {"layer", "neuron"} <= cols:
        models = frame["model"].to_list() if "model" in cols else None
        if models is None:
            one = wh.sql("select model from vector_indexes")["model"].to_list()
            models = one * frame.height if len(one) == 1 else None
        if models is not None:
            links = [
                f'<a href="{href("neuron", m, layer, n)}">{n}</a>'
                for m, layer, n in zip(models, frame["layer"], frame["neuron"], strict=True)
            ]
            frame, safe = frame.with_columns(pl.Series("neuron", links)), {"neuron"}
    if {"run", "prompt"} <= cols:
        links = [
            f'<a href="{href("prompt", r, p)}">{p}</a>'
            for r, p in zip(frame["run"], frame["prompt"], strict=True)
        ]
        frame, safe = frame.with_columns(pl.Series("prompt", links)), safe | {"prompt"}
    return html_table(frame, safe=safe)


def findings(wh: Warehouse) -> dict:
    """The study's findings, each claim beside its control (the report's section: computed on
    demand, which takes a while)."""
    from actwh.report.build import make_plan
    from actwh.study.findings import FINDINGS_SECTION

    key, title, build = FINDINGS_SECTION
    note, _, _, more, _ = build(wh, make_plan(wh))
    return _page("findings", [Section(key, title, note, html=more)])


def _page(title: str, sections: list[Section]) -> dict:
    """A page of sections (the report's section template) and the specs of their charts."""
    return {"title": title, "sections": sections, "specs": script_json(chart_specs(sections))}
