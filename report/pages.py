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
from typing import TYPE_CHECKING

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
        model = _base_model(wh, base_run)
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


def _base_model(wh: Warehouse, base_run: str | None) -> str:
    if base_run:
        return wh.sql("select model from runs where name = $r", {"r": base_run}).item()
    models = wh.sql("select model from vector_indexes order by model")
    if models.is_empty():
        raise NotFound("no value vectors (actwh index-vectors WH --model M)")
    return models["model"][0]


# ---- neuron pages ------------------------------------------------------------------------------


def neuron_page(wh: Warehouse, plan, layer: int, neuron: int):
    """(note, chart, html) of one neuron's page."""
    model = _base_model(wh, plan.base_run)
    found = wh.sql(
        "select coalesce(vector_tokens(v.model, v.vec, 1, 10), v.top_tokens) as top_tokens, "
        "coalesce(vector_tokens(v.model, v.vec, -1, 10), v.bottom_tokens) as bottom_tokens, "
        "v.norm, m.mlp_gated as gated, "
        "list_cosine_similarity(v.vec::FLOAT[], d.vec::FLOAT[]) as cosine "
        "from value_vectors v join models m on m.name = v.model "
        "left join direction_of($m, $d) d on true "
        "where v.model = $m and v.layer = $l and v.neuron = $n",
        {"m": model, "d": plan.direction, "l": layer, "n": neuron},
    )
    if found.is_empty():
        raise NotFound(f"no value vector L{layer} #{neuron} of {model} (actwh index-vectors)")
    v = found.row(0, named=True)
    cosine = v["cosine"]
    sign = -1 if v["gated"] and cosine is not None and cosine < 0 else 1
    toward = (
        ""
        if cosine is None
        else (
            f"cos(v, {plan.direction}) {cosine:+.3f}: it writes toward {plan.direction} when "
            f"m {'<' if sign < 0 else '>'} 0. "
        )
    )
    note = (
        f"Value vector L{layer} #{neuron} of {model} (‖v‖ {v['norm']:.3g}). {toward}"
        f"Contexts are ranked by {'−m' if sign < 0 else 'm'} in {plan.base_run}."
    )
    parts = [
        _token_list("v promotes (its write when m > 0)", v["top_tokens"]),
        _token_list("−v promotes (its write when m < 0)", v["bottom_tokens"]),
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
    parts.append(_dx_cosines(wh, plan, model, layer, neuron))
    return note, chart, "".join(parts)


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


def _dx_cosines(wh: Warehouse, plan, model: str, layer: int, neuron: int) -> str:
    if plan.prefix is None:
        return ""
    frame = wh.sql(
        "select cast(split_part(d.name, '.', -1) as integer) as dx_layer, "
        "list_cosine_similarity(d.vec::FLOAT[], v.vec::FLOAT[]) as cosine "
        "from directions d, value_vectors v "
        "where d.kind = 'delta' and d.name like $p || '.%' and v.model = $m and v.layer = $l "
        "and v.neuron = $n and cast(split_part(d.name, '.', -1) as integer) >= $l "
        "order by dx_layer",
        {"p": plan.prefix, "m": model, "l": layer, "n": neuron},
    )
    cells = " ".join(f"{r['dx_layer']}: {r['cosine']:+.3f}" for r in frame.iter_rows(named=True))
    return f"<p><b>cos(v, δx) at layer ≥ {layer}</b>: {cells or '—'}</p>"


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
    site = wh.sql("select mlp_input($r)", {"r": plan.base_run}).item()
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
    base, tuned = (_values(dots, run) for run in (plan.base_run, plan.tuned_run))
    rows = _triple(plan, f"⟨x, {plan.direction}⟩ at {site} {plan.layer}", base, tuned)
    if plan.neuron is not None:
        layer, neuron = plan.neuron
        base, tuned = (
            dict(
                wh.sql(
                    "select pos, act from neuron_coefficients($r, $l, $n) where prompt = $p",
                    {"r": run, "l": layer, "n": neuron, "p": prompt},
                ).iter_rows()
            )
            for run in (plan.base_run, plan.tuned_run)
        )
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


def _values(frame: pl.DataFrame, run: str) -> dict[int, float]:
    chosen = frame.filter(pl.col("run") == run)
    return dict(zip(chosen["pos"].to_list(), chosen["dot"].to_list(), strict=True))


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
