"""altair charts of the paper's figures, each drawn from a named query's DataFrame."""

from __future__ import annotations

import altair as alt
import polars as pl

WIDTH = 520


def _data(frame: pl.DataFrame) -> alt.Data:
    return alt.Data(values=frame.to_dicts())


def logit_lens(frame: pl.DataFrame, token: str) -> alt.Chart:
    """Figure 1: P(token) layer by layer (``logit_lens_target``), one line per run."""
    return (
        alt.Chart(_data(frame))
        .mark_line(point=True)
        .encode(
            x=alt.X("point:Q", title="3 × layer + site (resid_pre 0, resid_mid 1, resid_post 2)"),
            y=alt.Y("mean_prob:Q", title=f"mean P({token!r})", scale=alt.Scale(type="log")),
            color=alt.Color("run:N", title="run"),
            tooltip=["run:N", "layer:Q", "site:N", "mean_prob:Q", "ci95:Q", "n:Q"],
        )
        .properties(
            title=f"Figure 1 — logit lens: P({token!r}) at the last prompt token (log scale)",
            width=WIDTH,
            height=260,
        )
    )


def activation_drop(frame: pl.DataFrame, base_run: str, tuned_run: str) -> alt.Chart:
    """Figure 2: mean coefficient of the top toxic value vectors, base vs tuned."""
    long = frame.with_columns(vector=pl.format("L{} #{}", "layer", "neuron")).unpivot(
        index=["vector", "cosine"],
        on=["base_mean", "tuned_mean"],
        variable_name="run",
        value_name="mean",
    )
    long = long.with_columns(
        pl.col("run").replace({"base_mean": base_run, "tuned_mean": tuned_run})
    )
    return (
        alt.Chart(_data(long))
        .mark_bar()
        .encode(
            x=alt.X("vector:N", sort=None, title="value vector (layer, index)"),
            xOffset="run:N",
            y=alt.Y("mean:Q", title="mean coefficient over generated tokens"),
            color=alt.Color("run:N", title="run"),
            tooltip=["vector:N", "run:N", "mean:Q", "cosine:Q"],
        )
        .properties(
            title="Figure 2 — activation of the top toxic value vectors", width=WIDTH, height=260
        )
    )


def pca(frame: pl.DataFrame, layer: int, neuron: tuple[int, int] | None) -> alt.Chart:
    """Figure 4: base and tuned residual streams on the shift component and the first PC."""
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
            title=f"m of L{neuron[0]} #{neuron[1]}",
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


def value_vector_shift(frame: pl.DataFrame, layer: int) -> alt.Chart:
    """Figure 5: distribution of cos(δx^ℓ, δv) for value vectors of each earlier layer."""
    return (
        alt.Chart(_data(frame))
        .mark_area(opacity=0.6, interpolate="step")
        .encode(
            x=alt.X(
                "cosine:Q", title=f"cos(δx at layer {layer}, δv)", scale=alt.Scale(domain=[-1, 1])
            ),
            y=alt.Y("proportion:Q", title="proportion"),
            tooltip=["value_layer:Q", "cosine:Q", "n:Q", "proportion:Q", "layer_mean:Q"],
        )
        .properties(width=150, height=90)
        .facet(facet=alt.Facet("value_layer:O", title="value vectors of layer"), columns=5)
        .properties(title=f"Figure 5 — value-vector shifts against δx of layer {layer}")
    )


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
