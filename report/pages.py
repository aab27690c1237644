"""The report's pages for looking: a page per value vector, and prompts coloured token by token.

A **neuron page** (anchor ``neuron-L{layer}-{index}``) shows what a neuron's value vector promotes
and suppresses, how its coefficient m is distributed over every stored token in the base and the
tuned run (``neuron_histogram``), the contexts where it fires hardest toward the direction with
its coefficient in both runs on the same token (``neuron_contexts``), and the cosine of its value
vector with the direction and with δx of its own and later layers.

A **prompt view** (anchor ``prompt-{id}``) shows a prompt and its continuation twice — base run and
tuned run, the same tokens (a teacher-forced pair) — every token coloured by its projection on
the direction at the report's layer, and by a tracked neuron's coefficient; the value is on
hover. A transformed prompt names its transform, a chat marks where each message starts, and the
generated reply is underlined.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

import actwh.report.charts as charts
from actwh.errors import ActwhError, NotFound

if TYPE_CHECKING:
    from actwh.api.warehouse import Warehouse

N_NEURONS = 5  # pages for the top value vectors of the direction, by write
N_PROMPTS = 4  # views of the prompts whose projection tuning changed most


def top_vectors(wh: Warehouse, base_run: str | None, direction: str) -> list[tuple[int, int]]:
    """The top value vectors of ``direction`` by reach (``top_toxic_vectors``): the pages to
    show where no teacher-forced pair ranks tracked neurons by their mean write."""
    try:
        model = base_model(wh, base_run)
        top = wh.query("top_toxic_vectors", model=model, direction=direction, k=N_NEURONS)
        return list(zip(top["layer"].to_list(), top["neuron"].to_list(), strict=True))
    except ActwhError:
        return []


def default_prompts(wh: Warehouse, plan) -> list[int]:
    """The prompts whose mean projection on the direction over the reply changed most."""
    if not (plan.base_run and plan.tuned_run and plan.layer is not None):
        return []
    shift = wh.query(
        "prompt_shift",
        base_run=plan.base_run,
        tuned_run=plan.tuned_run,
        layer=plan.layer,
        direction=plan.direction,
    )
    return shift["prompt"].head(N_PROMPTS).to_list()


def base_model(wh: Warehouse, base_run: str | None) -> str:
    """The model of ``base_run``; without one, the first model with value vectors."""
    if base_run:
        return wh.sql("select model from runs where name = $r", {"r": base_run}).item()
    models = wh.sql("select model from vector_indexes order by model")
    if models.is_empty():
        raise NotFound("no value vectors (actwh index-vectors WH --model M)")
    return models["model"][0]


# ---- neuron pages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueVector:
    """Value vector ``neuron`` of ``layer`` of ``model``, and the tokens +v and −v promote."""

    model: str
    layer: int
    neuron: int
    vec: np.ndarray  # [d_model] float32
    top_tokens: list[str]
    bottom_tokens: list[str]


def value_vector(wh: Warehouse, model: str, layer: int, neuron: int) -> ValueVector:
    """One value vector read once (its layer's file), its tokens from the model's readout (one
    product gives +v's and −v's), else those stored with it (a warehouse older than readouts)."""
    try:
        vectors, _ = wh.vectors("value_vectors", model=model, layer=layer, neuron=neuron)
    except NotFound:
        vectors = np.zeros((0, 0), np.float32)
    if not len(vectors):
        raise NotFound(f"no value vector L{layer} #{neuron} of {model} (actwh index-vectors)")
    vec = vectors[0]
    tokens = wh.vector_tokens(model, vec, 10)
    if tokens is None:
        stored = wh.sql(
            "select top_tokens, bottom_tokens from value_vectors "
            "where model = $m and layer = $l and neuron = $n",
            {"m": model, "l": layer, "n": neuron},
        ).row(0)
        tokens = (list(stored[0] or []), list(stored[1] or []))
    return ValueVector(model, layer, neuron, vec, *tokens)


def neuron_page(wh: Warehouse, plan, v: ValueVector):
    """(note, chart, html) of the page of value vector ``v``."""
    layer, neuron, model = v.layer, v.neuron, v.model
    gated = bool(wh.snapshot.model(model).get("mlp_gated"))
    along = unit_direction(wh, plan.direction, model)
    # no such direction for this model: no cosine, contexts ranked by m
    cosine = None if along is None else float(along @ _unit(v.vec))
    sign = -1 if gated and cosine is not None and cosine < 0 else 1
    toward = (
        ""
        if cosine is None
        else (
            f"cos(v, {plan.direction}) {cosine:+.3f}: it writes toward {plan.direction} when "
            f"m {'<' if sign < 0 else '>'} 0. "
        )
    )
    note = (
        f"Value vector L{layer} #{neuron} of {model} (‖v‖ {np.linalg.norm(v.vec):.3g}). {toward}"
        f"Contexts are ranked by {'−m' if sign < 0 else 'm'} in {plan.base_run}."
    )
    parts = [
        _token_list("v promotes (its write when m > 0)", v.top_tokens),
        _token_list("−v promotes (its write when m < 0)", v.bottom_tokens),
    ]
    chart = None
    if plan.base_run:
        runs = {
            "base_run": plan.base_run,
            "tuned_run": plan.tuned_run,
            "layer": layer,
            "neuron": neuron,
        }
        try:
            contexts = wh.query("neuron_contexts", **runs, sign=sign, k=10)
            histogram = wh.query("neuron_histogram", **runs, bins=40)
        except NotFound:  # the runs hold no coefficient of this neuron: said below
            histogram = pl.DataFrame()
        if histogram.height:
            chart = charts.neuron_histogram(histogram, layer, neuron, plan.base_run, plan.tuned_run)
            parts.append(_contexts(contexts, plan))
        else:
            parts.append(
                "<p class='note'>No coefficients of this neuron in the runs: track it "
                f"(--track-neurons {layer}:{neuron}) or capture mlp_post at layer {layer}.</p>"
            )
    parts.append(_dx_cosines(wh, plan, v))
    return note, chart, "".join(parts)


def unit_direction(wh: Warehouse, name: str, model: str) -> np.ndarray | None:
    """Direction ``name`` as ``model`` sees it (its own, else its nearest ancestor's), as a unit
    vector; None where it sees none of that name."""
    try:
        return _unit(wh.direction(name, model=model))
    except NotFound:
        return None


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / (np.linalg.norm(vector) or 1.0)


def _token_list(label: str, tokens: list[str] | None) -> str:
    shown = " ".join(f"<code>{html.escape(repr(t))}</code>" for t in (tokens or [])[:10])
    return f"<p><b>{html.escape(label)}</b>: {shown or '—'}</p>"


def _contexts(frame: pl.DataFrame, plan) -> str:
    rows = []
    for r in frame.iter_rows(named=True):
        tuned = "" if r["tuned_act"] is None else f"{r['tuned_act']:+.3f}"
        text = f"{_visible(r['before'])}<mark>{_visible(r['token'])}</mark>{_visible(r['after'])}"
        # a link only where a view of that prompt is (the page's, or the server's): no dead end
        target = (
            plan.prompt_href(r["prompt"])
            if plan.prompt_href is not None
            else f"#prompt-{r['prompt']}"
            if r["prompt"] in plan.prompts
            else None
        )
        prompt = (
            f"<a href='{html.escape(target)}'>{r['prompt']}</a>" if target else str(r["prompt"])
        )
        rows.append(
            f"<tr><td>{prompt}</td><td>{r['pos']}</td>"
            f"<td>{r['base_act']:+.3f}</td><td>{tuned}</td><td class='text'>{text}</td></tr>"
        )
    head = (
        f"<tr><th>prompt</th><th>pos</th><th>m {html.escape(str(plan.base_run))}</th>"
        f"<th>m {html.escape(str(plan.tuned_run))}</th><th>context</th></tr>"
    )
    return (
        "<div><b>Top contexts</b> (the marked token; same token in both runs)"
        f"<table class='contexts'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _dx_cosines(wh: Warehouse, plan, v: ValueVector) -> str:
    """cos(v, δx ℓ) for the δx directions of the plan's prefix at layers ℓ ≥ v's (from the
    catalog: no value vector is read again)."""
    if plan.prefix is None:
        return ""
    deltas = wh.sql(
        "select cast(split_part(name, '.', -1) as integer) as dx_layer, vec from directions "
        "where kind = 'delta' and name like $p || '.%' "
        "and cast(split_part(name, '.', -1) as integer) >= $l order by dx_layer",
        {"p": plan.prefix, "l": v.layer},
    )
    unit = _unit(v.vec)
    cells = " ".join(
        f"{layer}: {float(_unit(np.asarray(d, np.float32)) @ unit):+.3f}"
        for layer, d in deltas.iter_rows()
    )
    return f"<p><b>cos(v, δx) at layer ≥ {v.layer}</b>: {cells or '—'}</p>"


# ---- prompt views ------------------------------------------------------------------------------


def prompt_view(wh: Warehouse, plan, prompt: int, hover: dict[int, str] | None = None):
    """(note, html) of one prompt's token view; ``hover``: more to show on a token, by position
    (the server's logit lens)."""
    if not (plan.base_run and plan.tuned_run and plan.layer is not None):
        raise NotFound("no teacher-forced pair of runs (actwh ingest ... --teacher-force BASE)")
    tokens = wh.sql(
        "select pos, token, is_generated, turn from tokens where run = $r and prompt = $p "
        "order by pos",
        {"r": plan.base_run, "p": prompt},
    )
    if tokens.is_empty():
        raise NotFound(f"no prompt {prompt} in run {plan.base_run}")
    meta = wh.sql(
        "select p.transform, p.source_prompt, json_array_length(p.messages) as messages "
        "from prompts p join runs r "
        "on r.prompt_set = p.prompt_set where r.name = $r and p.prompt = $p",
        {"r": plan.base_run, "p": prompt},
    )
    site = wh.snapshot.once(
        ("mlp_input", plan.base_run),
        lambda: wh.sql("select mlp_input($r)", {"r": plan.base_run}).item(),
    )
    params = {
        "b": plan.base_run,
        "t": plan.tuned_run,
        "p": prompt,
        "l": plan.layer,
        "s": site,
        "d": plan.direction,
    }
    dots = wh.sql(
        "select run, pos, dot from projections where run in ($b, $t) and prompt = $p "
        "and layer = $l and site = $s and direction = $d",
        params,
    )
    base, tuned = (_values(dots, run, "dot") for run in (plan.base_run, plan.tuned_run))
    rows = _triple(plan, f"⟨x, {plan.direction}⟩ at {site} {plan.layer}", base, tuned)
    if plan.neuron is not None:
        layer, neuron = plan.neuron
        acts = wh.sql(  # both runs in one statement
            "select $b as run, pos, act from neuron_coefficients($b, $l, $n) where prompt = $p "
            "union all "
            "select $t as run, pos, act from neuron_coefficients($t, $l, $n) where prompt = $p",
            {"b": plan.base_run, "t": plan.tuned_run, "l": layer, "n": neuron, "p": prompt},
        )
        base, tuned = (_values(acts, run, "act") for run in (plan.base_run, plan.tuned_run))
        rows += _triple(plan, f"m of L{layer} #{neuron}", base, tuned)
    described = []
    if meta.height and meta["transform"][0]:
        described.append(f"{meta['transform'][0]} of prompt {meta['source_prompt'][0]}")
    if meta.height and meta["messages"][0]:
        described.append(f"a chat of {meta['messages'][0]} messages")
    note = (
        f"Prompt {prompt}{' (' + ', '.join(described) + ')' if described else ''}: each token "
        "coloured by its value, red positive, blue negative (one scale for both runs, one for "
        "their difference; the first token, an attention sink, is left out of the scales); the "
        "value on hover; the generated reply underlined."
    )
    body = ""
    for i, (label, values) in enumerate(rows):
        group = i - i % 3  # base, tuned, difference
        scale = _scale(rows[group : group + 2] if i % 3 < 2 else [rows[i]])
        body += _text_row(label, tokens, values, scale, hover or {})
    return note, f"<div class='tokens'>{body}</div>"


def _values(frame: pl.DataFrame, run: str, column: str) -> dict[int, float]:
    """``column`` of run ``run``'s rows, by position."""
    chosen = frame.filter(pl.col("run") == run)
    return dict(zip(chosen["pos"].to_list(), chosen[column].to_list(), strict=True))


def _triple(plan, what: str, base: dict, tuned: dict) -> list[tuple[str, dict]]:
    """Rows of a token view: base run, tuned run, and their difference, per position."""
    change = {pos: tuned[pos] - value for pos, value in base.items() if pos in tuned}
    return [
        (f"{plan.base_run}: {what}", base),
        (f"{plan.tuned_run}: {what}", tuned),
        (f"{plan.tuned_run} − {plan.base_run}", change),
    ]


def _scale(rows: list[tuple[str, dict]]) -> float:
    values = [abs(v) for _, row in rows for pos, v in row.items() if v is not None and pos > 0]
    return max(values, default=0.0) or 1.0


def _text_row(
    label: str, tokens: pl.DataFrame, values: dict[int, float], scale: float, hover: dict[int, str]
) -> str:
    spans, turn = [], None
    for t in tokens.iter_rows(named=True):
        if t["turn"] is not None and t["turn"] != turn and not t["is_generated"]:
            turn = t["turn"]
            what = "template" if turn < 0 else f"message {turn}"  # a default system prompt
            spans.append(f"<span class='turn'>{what}</span>")
        value = values.get(t["pos"])
        shown = "no value" if value is None else f"{value:+.3f}"
        style = "" if value is None else f" style='background:{_colour(value, scale)}'"
        kind = " class='gen'" if t["is_generated"] else ""
        more = f"; {hover[t['pos']]}" if t["pos"] in hover else ""
        title = html.escape(f"{t['token']!r} pos {t['pos']}: {shown}{more}", quote=True)
        spans.append(f'<span{kind}{style} title="{title}">{_visible(t["token"])}</span>')
    return f"<p><b>{html.escape(label)}</b> {_legend(scale)}<br>{''.join(spans)}</p>"


def _legend(scale: float) -> str:
    """The colour scale of a token row: full blue at −scale, white at 0, full red at +scale."""
    stops = (-scale, -scale / 2, 0.0, scale / 2, scale)
    swatches = "".join(
        f"<span style='background:{_colour(v, scale)}'>&nbsp;{v:+.3g}&nbsp;</span>" for v in stops
    )
    return f"<span class='legend'>colour: {swatches}</span>"


def _colour(value: float, scale: float) -> str:
    alpha = min(abs(value) / scale, 1.0) * 0.85
    rgb = "214,39,40" if value > 0 else "31,119,180"
    return f"rgba({rgb},{alpha:.2f})"


def _visible(text: str | None) -> str:
    """Token text as HTML, whitespace kept visible: a newline shows as ↵."""
    return html.escape(text or "").replace("\n", "↵")
