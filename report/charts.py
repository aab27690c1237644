"""altair charts of the paper's figures, each drawn from a named query's DataFrame."""

from __future__ import annotations

import altair as alt
import polars as pl

WIDTH = 520


def _data(frame: pl.DataFrame) -> alt.Data:
    return alt.Data(values=frame.to_dicts())


# One colour per run in every figure: the base run blue, the tuned run orange, any other after.
RUN_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#bab0ac")


def run_colour(frame: pl.DataFrame, base_run: str | None, tuned_run: str | None) -> alt.Color:
    """Colour by ``run``, the same run the same colour throughout the report."""
    first = [r for r in (base_run, tuned_run) if r]
    runs = first + sorted(set(frame["run"].to_list()) - set(first))
    colours = [RUN_COLOURS[i % len(RUN_COLOURS)] for i in range(len(runs))]
    return alt.Color("run:N", title="run", scale=alt.Scale(domain=runs, range=colours))


def logit_lens(
    frame: pl.DataFrame, token: str, base_run: str | None = None, tuned_run: str | None = None
) -> alt.Chart:
    """Figure 1: P(token) layer by layer (``logit_lens_target``), one line per run."""
    return (
        alt.Chart(_data(frame))
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("mean_prob:Q", title=f"mean P({token!r})", scale=alt.Scale(type="log")),
            color=run_colour(frame, base_run, tuned_run),
            # the legend draws each site's dash (a point symbol would look the same for both)
            strokeDash=alt.StrokeDash(
                "site:N", title="site", legend=alt.Legend(symbolType="stroke")
            ),
            tooltip=["run:N", "layer:Q", "site:N", "mean_prob:Q", "ci95:Q", "n:Q"],
        )
        .properties(
            title=f"Figure 1 — logit lens: P({token!r}) at the last prompt token (log scale)",
            width=WIDTH,
            height=260,
        )
    )


def activation_drop(frame: pl.DataFrame, base_run: str, tuned_run: str) -> alt.Chart:
    """Figure 2: the mean write m·⟨v, d̂⟩ of the top neurons along the direction, base vs tuned
    (for GPT-2 this is the paper's mean activation times a positive constant per neuron)."""
    long = frame.with_columns(vector=pl.format("L{} #{}", "layer", "neuron")).unpivot(
        index=[
            "vector",
            "cosine",
            "base_mean",
            "tuned_mean",
            "write_change",
            "write_change_lo",
            "write_change_hi",
        ],
        on=["base_write", "tuned_write"],
        variable_name="run",
        value_name="write",
    )
    long = long.with_columns(
        pl.col("run").replace({"base_write": base_run, "tuned_write": tuned_run}),
        # the tuned bar's whisker: the paired change's 95% interval, from the base run's write
        lo=pl.col("write") - pl.col("write_change") + pl.col("write_change_lo"),
        hi=pl.col("write") - pl.col("write_change") + pl.col("write_change_hi"),
    )
    long = long.with_columns(
        [pl.when(pl.col("run") == tuned_run).then(pl.col(c)).alias(c) for c in ("lo", "hi")]
    )
    x = alt.X("vector:N", sort=None, title="neuron (layer, index)")
    bars = (
        alt.Chart(_data(long))
        .mark_bar()
        .encode(
            x=x,
            xOffset="run:N",
            y=alt.Y("write:Q", title="mean write along the direction, m·⟨v, d̂⟩"),
            color=run_colour(long, base_run, tuned_run),
            tooltip=[
                "vector:N",
                "run:N",
                "write:Q",
                "base_mean:Q",
                "tuned_mean:Q",
                "cosine:Q",
                "write_change:Q",
                "write_change_lo:Q",
                "write_change_hi:Q",
            ],
        )
    )
    whiskers = (
        alt.Chart(_data(long))
        .mark_rule(color="black")
        .encode(x=x, xOffset="run:N", y="lo:Q", y2="hi:Q")
    )
    return (bars + whiskers).properties(
        title="Figure 2 — what the top toxic neurons write, over generated tokens "
        "(whiskers: the change's 95% interval over prompts)",
        width=WIDTH,
        height=260,
    )


def pca(
    frame: pl.DataFrame, layer: int, neuron: tuple[int, int] | None, direction: str = ""
) -> alt.Chart:
    """Figure 4: base and tuned residual streams on the shift component and the first PC,
    coloured (with a neuron) by its coefficient oriented so that red writes toward the
    direction, whichever sign of m does so."""
    data = _data(frame)
    lines = (
        alt.Chart(data)
        .mark_line(strokeDash=[2, 2], opacity=0.35, color="gray")
        .encode(x="shift:Q", y="pc1:Q", detail="prompt:N")
    )
    color = (
        alt.Color(
            "activation:Q",
            scale=alt.Scale(scheme="redyellowblue", reverse=True),
            title=f"±m of L{neuron[0]} #{neuron[1]} (+: toward {direction})",
        )
        if neuron
        else alt.Color("run:N")
    )
    points = (
        alt.Chart(data)
        .mark_point(filled=True, size=60)
        .encode(
            x=alt.X("shift:Q", title="shift component (mean tuned − base)"),
            y=alt.Y("pc1:Q", title="first principal component"),
            shape=alt.Shape("run:N", title="run"),
            color=color,
            tooltip=["prompt:Q", "run:N", "shift:Q", "pc1:Q", "activation:Q"],
        )
    )
    return (lines + points).properties(
        title=f"Figure 4 — resid_mid at layer {layer}, last prompt token", width=WIDTH, height=320
    )


def value_vector_shift(frame: pl.DataFrame, layer: int) -> alt.VConcatChart:
    """Figure 5: per earlier layer, cos(Σ m̄·δv, δx^ℓ) and the mean raw and oriented cosines;
    below, the distributions of cos(δv, δx^ℓ), raw and oriented by sign(m̄)."""
    per_layer = (
        frame.group_by("value_layer")
        .agg(pl.col("aggregate_cos", "oriented_mean", "layer_mean").first())
        .unpivot(index="value_layer", variable_name="measure", value_name="cos")
        .with_columns(
            pl.col("measure").replace(
                {
                    "aggregate_cos": "cos(Σ m̄·δv, δx)",
                    "oriented_mean": "mean sign(m̄)·cos(δv, δx)",
                    "layer_mean": "mean cos(δv, δx)",
                }
            )
        )
    )
    lines = (
        alt.Chart(_data(per_layer))
        .mark_line(point=True)
        .encode(
            x=alt.X("value_layer:O", title="layer of the value vectors"),
            y=alt.Y("cos:Q", title=f"cosine with δx of layer {layer}"),
            color=alt.Color("measure:N", title=None),
            tooltip=["value_layer:Q", "measure:N", "cos:Q"],
        )
        .properties(
            title=f"Figure 5 — what each layer's value-vector change writes along δx^{layer}",
            width=WIDTH,
            height=240,
        )
    )
    bins = frame.unpivot(
        index=["value_layer", "cosine"],
        on=["proportion", "oriented_proportion"],
        variable_name="kind",
        value_name="share",
    ).with_columns(
        pl.col("kind").replace(
            {"proportion": "cos(δv, δx)", "oriented_proportion": "sign(m̄)·cos(δv, δx)"}
        )
    )
    histograms = (
        alt.Chart(_data(bins))
        .mark_area(opacity=0.5, interpolate="step")
        .encode(
            x=alt.X("cosine:Q", title="cosine", scale=alt.Scale(domain=[-1, 1])),
            y=alt.Y("share:Q", title="proportion", stack=None),
            color=alt.Color("kind:N", title=None),
            tooltip=["value_layer:Q", "kind:N", "cosine:Q", "share:Q"],
        )
        .properties(width=150, height=90)
        .facet(facet=alt.Facet("value_layer:O", title="value vectors of layer"), columns=5)
    )
    return alt.vconcat(lines, histograms).resolve_scale(color="independent")


def residual_offset(frame: pl.DataFrame, direction: str) -> alt.Chart:
    """δx per layer: its norm and its cosine with a direction."""
    data = _data(frame)
    norm = (
        alt.Chart(data)
        .mark_bar(opacity=0.7)
        .encode(
            x=alt.X("layer:O", title="layer"),
            y=alt.Y("dx_norm:Q", title="‖δx‖"),
            tooltip=["layer:Q", "dx_norm:Q", "cos_with_direction:Q", "shift_along_direction:Q"],
        )
    )
    cos = (
        alt.Chart(data)
        .mark_line(point=True, color="firebrick")
        .encode(x="layer:O", y=alt.Y("cos_with_direction:Q", title=f"cos(δx, {direction})"))
    )
    return (
        alt.layer(norm, cos)
        .resolve_scale(y="independent")
        .properties(
            title="δx per layer: norm (bars) and cosine with the direction (line)",
            width=WIDTH,
            height=260,
        )
    )


def neuron_histogram(
    frame: pl.DataFrame,
    layer: int,
    neuron: int,
    base_run: str | None = None,
    tuned_run: str | None = None,
) -> alt.Chart:
    """A neuron's coefficient over every stored token (``neuron_histogram``), one colour per
    run: the share of each run's tokens in each bin."""
    return (
        alt.Chart(_data(frame))
        .mark_line(interpolate="step-after", point=True)
        .encode(
            x=alt.X("bin_lo:Q", title=f"coefficient m of L{layer} #{neuron}"),
            y=alt.Y("share:Q", title="share of tokens", scale=alt.Scale(type="symlog")),
            color=run_colour(frame, base_run, tuned_run),
            tooltip=["run:N", "bin_lo:Q", "bin_hi:Q", "tokens:Q", "share:Q"],
        )
        .properties(title=f"L{layer} #{neuron}: coefficient distribution", width=380, height=200)
    )


def toxicity(frame: pl.DataFrame) -> alt.Chart:
    """Tables 2 and 4: mean toxicity per model with its 95% interval, one colour per scorer."""
    base = alt.Chart(_data(frame)).encode(
        y=alt.Y("model:N", title=None, sort=frame["model"].unique(maintain_order=True).to_list()),
        yOffset="scorer:N",
        color=alt.Color("scorer:N", title="scorer"),
    )
    bars = base.mark_rule().encode(
        x=alt.X("toxicity_lo:Q", title="mean toxicity (95% bootstrap interval)"),
        x2="toxicity_hi:Q",
    )
    points = base.mark_point(filled=True, size=60).encode(
        x="toxicity:Q",
        tooltip=["model:N", "scorer:N", "toxicity:Q", "toxicity_lo:Q", "toxicity_hi:Q"],
    )
    return (bars + points).properties(title="Toxicity by scorer", width=WIDTH, height=180)


def unaligning(frame: pl.DataFrame) -> alt.HConcatChart:
    """The un-aligning sweep: toxicity (one panel per scorer) and perplexity against the scale s
    of the keys, the un-aligned variants beside their controls, with 95% intervals."""
    data = _data(
        frame.with_columns(
            pl.when(pl.col("control_of").is_null())
            .then(pl.lit("un-aligned"))
            .otherwise(pl.lit("control"))
            .alias("edit"),
        )
    )
    scale = alt.X("edit_scale:Q", title="scale s of the keys", scale=alt.Scale(type="log"))
    colour = alt.Color("edit:N", title=None, sort=["un-aligned", "control"])

    def panel(metric: str, title: str, **filters) -> alt.LayerChart:
        base = alt.Chart(data).encode(x=scale, color=colour)
        for field, value in filters.items():
            base = base.transform_filter(alt.datum[field] == value)
        line = base.mark_line(point=True).encode(
            y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(zero=False)),
            tooltip=["model:N", "edit_scale:Q", f"{metric}:Q", f"{metric}_lo:Q", f"{metric}_hi:Q"],
        )
        return line + base.mark_rule().encode(y=f"{metric}_lo:Q", y2=f"{metric}_hi:Q")

    scorers = frame["scorer"].unique(maintain_order=True).to_list()
    panels = [panel("toxicity", f"toxicity by {s}", scorer=s) for s in scorers]
    perplexity = panel("perplexity", "perplexity (log)", scorer=scorers[0]).resolve_scale(
        y="shared"
    )
    return alt.hconcat(
        *[p.properties(width=220, height=200) for p in (*panels, perplexity)],
        title="Un-aligning by scale, against controls that add as much write",
    )
