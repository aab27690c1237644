"""How much do the prompts that were run decide δx's cosines? Bootstrap intervals, in numpy.

δx of a layer (``actwh directions add --delta``) is the mean over paired tokens of tuned − base.
Resampling prompts — each with all its tokens, which are not independent of each other — gives
replicates ``δx_b = Σ_p c_bp·S_p / Σ_p c_bp·n_p``, where ``S_p`` is prompt p's summed difference,
``n_p`` its token count and ``c_bp`` how often replicate b drew it. Every cosine of δx with a fixed
vector (a probe, a layer's value-vector shifts) then has one value per replicate, and the interval
is their 2.5% and 97.5% percentiles. The draws are the SQL macro ``bootstrap_index``'s, the rule
``toxicity_table`` and ``activation_drop`` use, so every layer and query resamples the same way.
SQL alone would need a sum of vectors per replicate; numpy does it as one matrix product.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from actwh.errors import ActwhError, NotFound
from actwh.warehouse.arrays import column_to_numpy

RESIDUAL_OFFSET_INTERVALS = """
-- name: residual_offset_intervals
-- answers: How sure is the cosine of δx with a direction, layer by layer? cos(δx, d) with a 95% bootstrap interval over the paired runs' prompts (each with all its tokens), and on the last row (layer NULL) the mean over layers with its interval. The point values equal residual_offset's cos_with_direction.
-- paper: §5.2 (δx = x_DPO − x_GPT2 at resid_mid), with the error bars the paper does not give
-- needs: as residual_offset, and the runs' stored vectors at δx's site (δx is resampled from them)
-- param prefix = "dx": the δx directions' name prefix
-- param direction = "toxic_probe": the direction to compare δx with (that of δx's model, else its nearest ancestor's)
-- param replicates = 1000: bootstrap resamples of the prompts (percentile interval, 2.5% to 97.5%)
"""

VALUE_VECTOR_SHIFT_INTERVALS = """
-- name: value_vector_shift_intervals
-- answers: How sure are Figure 5's summaries, and do they beat their nulls? For every layer j up to δx's layer ℓ: layer_mean, the mean cos(δv_i, δx^ℓ); oriented_mean, the mean sign(m̄_i)·cos(δv_i, δx^ℓ); aggregate_cos, cos(Σ_i m̄_i·δv_i, δx^ℓ) — each with a 95% bootstrap interval over the prompts δx was averaged over (δv and m̄ held fixed) — and aggregate_share, the part of δx^ℓ that Σ_i m̄_i·δv_i makes up along δx^ℓ (its projection on δx̂^ℓ over ‖δx^ℓ‖). Nulls: the row of layer ℓ itself (causal false: its MLP comes after resid_mid ℓ, so it cannot cause δx^ℓ), and random_cos_p95, the 95th percentile of |cos| between δx^ℓ and 1,000 random Gaussian directions. The point values equal value_vector_shift's.
-- paper: Figure 5, with the error bars the paper does not give
-- needs: as value_vector_shift, and the runs' stored vectors at δx's site
-- param model: the tuned model
-- param layer: ℓ, the layer of δx (the paper: 19 of GPT-2 medium)
-- param prefix = "dx": the δx directions' name prefix
-- param replicates = 1000: bootstrap resamples of the prompts (percentile interval, 2.5% to 97.5%)
"""


def residual_offset_intervals(sql, prefix: str, direction: str, replicates: int) -> pl.DataFrame:
    deltas = sql(
        """SELECT CAST(split_part(name, '.', -1) AS INTEGER) AS layer, model, meta
           FROM directions WHERE kind = 'delta' AND name LIKE $prefix || '.%' ORDER BY layer""",
        {"prefix": prefix},
    )
    if deltas.is_empty():
        raise NotFound(
            f"no δx directions {prefix}.LAYER; add them with actwh directions add WH {prefix} "
            "--delta BASE_RUN TUNED_RUN"
        )
    d = _unit(sql, deltas["model"].min(), direction)
    rows, replicate_cos = [], []
    counts = None
    for layer, meta in deltas.select("layer", "meta").iter_rows():
        sums, n = paired_sums(sql, json.loads(meta), layer)
        if counts is None:  # every layer resamples the same prompts the same way
            counts = resample_counts(sql, len(n), replicates)
        elif len(n) != counts.shape[1]:
            raise ActwhError(f"δx {prefix}.{layer} pairs {len(n)} prompts, not {counts.shape[1]}")
        point, reps = _cosines(_resampled(sums, n, counts), sums.sum(0), d)
        replicate_cos.append(reps)
        sizes = {"n_prompts": len(n), "n_tokens": int(n.sum())}
        rows.append(
            {
                "layer": layer,
                "cos_with_direction": point,
                **_interval(reps, "cos_with_direction"),
                **sizes,
            }
        )
    mean = float(np.mean([r["cos_with_direction"] for r in rows]))
    rows.append(
        {
            "layer": None,
            "cos_with_direction": mean,
            **_interval(np.mean(replicate_cos, axis=0), "cos_with_direction"),
            **sizes,
        }
    )
    return pl.DataFrame(rows, schema_overrides={"layer": pl.Int32})


def value_vector_shift_intervals(
    sql, model: str, layer: int, prefix: str, replicates: int
) -> pl.DataFrame:
    found = sql(
        "SELECT meta FROM direction_of($model, $name) LIMIT 1",
        {"model": model, "name": f"{prefix}.{layer}"},
    )
    if found.is_empty():
        raise NotFound(
            f"no δx direction {prefix}.{layer} for model {model!r}; add it with actwh directions "
            f"add WH {prefix} --delta BASE_RUN TUNED_RUN"
        )
    meta = json.loads(found["meta"][0])
    sums, n = paired_sums(sql, meta, layer)
    dx = _resampled(sums, n, resample_counts(sql, len(n), replicates))
    dx_all = sums.sum(0)
    shifts = sql(
        """SELECT d.layer, d.delta, d.delta_norm, means.m
           FROM value_vector_diffs d
           LEFT JOIN mean_coefficients($run, $arm) means USING (layer, neuron)
           WHERE d.model = $model AND d.layer <= $layer ORDER BY d.layer, d.neuron""",
        {"run": meta["base_run"], "arm": meta.get("arm", "all"), "model": model, "layer": layer},
    )
    if shifts.is_empty():
        raise NotFound(f"no value-vector shifts of {model!r}; run actwh diff WH --tuned {model}")
    delta = column_to_numpy(shifts["delta"].to_arrow()).astype(np.float64)
    norm = np.linalg.norm(delta, axis=1)
    unit = delta / np.where(norm > 0, norm, 1.0)[:, None]
    m = shifts["m"].fill_null(np.nan).to_numpy()
    fired = ~np.isnan(m)
    layers = shifts["layer"].to_numpy()
    rng = np.random.default_rng(0)
    random = rng.standard_normal((1000, dx_all.shape[0]))
    random_p95 = float(np.quantile(np.abs(_cosines(random, dx_all, dx_all)[1]), 0.95))
    dx_mean = dx_all / n.sum()  # δx itself: the mean over tokens
    rows = []
    for j in np.unique(layers):
        at = layers == j
        moved = at & (norm > 0)
        if not moved.any():
            continue
        oriented = moved & fired
        written = (m[at & fired, None] * delta[at & fired]).sum(0)  # Σ_i m̄_i·δv_i
        # A mean of cosines with δx is one cosine numerator: δx with the mean of the unit vectors.
        summaries = {
            "layer_mean": (unit[moved].mean(0), False),
            "oriented_mean": (
                (np.sign(m[oriented, None]) * unit[oriented]).mean(0) if oriented.any() else None,
                False,
            ),
            "aggregate_cos": (written, True),
        }
        row: dict[str, object] = {
            "value_layer": int(j),
            "causal": bool(j < layer),
            "aggregate_share": float(written @ dx_mean / (dx_mean @ dx_mean)),
            "random_cos_p95": random_p95,
        }
        for name, (vector, normalise) in summaries.items():
            if vector is None:
                row |= {name: None, f"{name}_lo": None, f"{name}_hi": None}
                continue
            point, reps = _cosines(dx, dx_all, vector, normalise=normalise)
            row |= {name: point, **_interval(reps, name)}
        rows.append(row)
    return pl.DataFrame(rows, schema_overrides={"value_layer": pl.Int32})


ANALYSES = [
    (RESIDUAL_OFFSET_INTERVALS, residual_offset_intervals),
    (VALUE_VECTOR_SHIFT_INTERVALS, value_vector_shift_intervals),
]


def paired_sums(
    sql, meta: dict, layer: int, site: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt of δx's runs (``meta``: base_run, tuned_run, site, arm): the summed difference
    tuned − base over its tokens at ``layer`` of ``site`` (default δx's own; ``[P, d]``,
    float64, prompts in order) and its token count. δx registered before arms existed averaged
    every prompt (arm all)."""
    site = site or meta["site"]
    frames = [
        sql(
            """SELECT prompt, vec FROM residuals
               WHERE run = $run AND layer = $layer AND site = $site
                 AND prompt IN (SELECT prompt FROM arm_prompts($base, $arm))
               ORDER BY prompt, pos""",
            {
                "run": meta[run],
                "layer": layer,
                "site": site,
                "base": meta["base_run"],
                "arm": meta.get("arm", "all"),
            },
        )
        for run in ("base_run", "tuned_run")
    ]
    base, tuned = frames
    prompts = base["prompt"].to_numpy()
    if base.is_empty() or not np.array_equal(prompts, tuned["prompt"].to_numpy()):
        raise ActwhError(
            f"runs {meta['base_run']!r} and {meta['tuned_run']!r} hold no paired {site} vectors "
            f"at layer {layer}, so δx cannot be resampled; ingest both with --capture "
            "resid_mid,resid_post"
        )
    diff = column_to_numpy(tuned["vec"].to_arrow()).astype(np.float64) - column_to_numpy(
        base["vec"].to_arrow()
    )
    starts = np.flatnonzero(np.r_[True, prompts[1:] != prompts[:-1]])
    return np.add.reduceat(diff, starts, axis=0), np.diff(np.r_[starts, len(prompts)])


def resample_counts(sql, n_prompts: int, replicates: int) -> np.ndarray:
    """``[replicates, n_prompts]``: how often each replicate draws each prompt."""
    if replicates < 1:
        raise ActwhError(f"replicates must be at least 1 (got {replicates})")
    draws = sql(
        "SELECT b, bootstrap_index(b, unnest(range($n)), $n) AS i FROM range($r) t(b)",
        {"n": n_prompts, "r": replicates},
    )
    counts = np.zeros((replicates, n_prompts))
    np.add.at(counts, (draws["b"].to_numpy(), draws["i"].to_numpy()), 1)
    return counts


def _resampled(sums: np.ndarray, n: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """δx of every replicate, ``[replicates, d]``."""
    return (counts @ sums) / (counts @ n)[:, None]


def _cosines(
    replicates: np.ndarray, whole: np.ndarray, vector: np.ndarray, *, normalise: bool = True
) -> tuple[float, np.ndarray]:
    """cos(δx, vector) for the whole sample and each replicate; with ``normalise=False`` the
    vector's own length is kept (a mean of unit vectors: the mean of their cosines)."""
    scale = np.linalg.norm(vector) if normalise else 1.0

    def cos(x):
        return (x @ vector) / (np.linalg.norm(x, axis=-1) * scale)

    return float(cos(whole)), cos(replicates)


def _interval(replicates: np.ndarray, name: str) -> dict:
    lo, hi = np.quantile(replicates, [0.025, 0.975])
    return {f"{name}_lo": float(lo), f"{name}_hi": float(hi)}


def _unit(sql, model: str, direction: str) -> np.ndarray:
    found = sql(
        "SELECT vec::FLOAT[] AS v FROM direction_of($model, $name) LIMIT 1",
        {"model": model, "name": direction},
    )
    if found.is_empty():
        raise NotFound(f"no direction {direction!r} for model {model!r} or its ancestors")
    v = np.asarray(found["v"][0].to_list(), dtype=np.float64)
    return v / np.linalg.norm(v)
