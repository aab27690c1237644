"""Where does δx come from? Its exact split into what attention and the MLPs changed.

The residual stream is a sum: resid_mid of layer ℓ is resid_post of layer ℓ−1 plus attention ℓ's
output, and resid_post ℓ is resid_mid ℓ plus MLP ℓ's output. So with resid_mid and resid_post
stored in both runs of a teacher-forced pair, each block's output change is a difference of stored
means — attention k: δresid_mid_k − δresid_post_{k−1}; MLP k: δresid_post_k − δresid_mid_k; and
δresid_mid_0 is the embedding's and attention 0's change together — and δx of layer ℓ (at
resid_mid) is exactly their sum over the blocks before it. Each block's share is its projection on
δx̂ over ‖δx‖, so the shares add up to 1; their intervals resample δx's prompts (the two runs hold
the same tokens, so a prompt is resampled in both).

An MLP's mean output is Σ_i m̄_i·v_i + b, so its change is exactly Σ_i δm̄_i·v_i (what its
coefficients changed) + Σ_i m̄'_i·δv_i (what its value vectors changed) + δb: the paper's two
candidate mechanisms, measured (m̄ from neuron_stats over the same tokens; no intervals: the
statistics are per arm, not per prompt). A norm after the MLP (Gemma 2/3, OLMo 2) makes the output
a nonlinear function of the m_i, and the split is not reported there.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from actwh.errors import ActwhError, NotFound
from actwh.queries.offset_intervals import paired_sums, resample_counts
from actwh.warehouse.arrays import column_to_numpy

DX_DECOMPOSITION = """
-- name: dx_decomposition
-- answers: Which blocks make δx of a layer ℓ? Per block k up to ℓ: the change of attention k's output (attn; block 0 with the embedding's change) and of MLP k's output (mlp, blocks before ℓ), as shares of δx^ℓ along itself (projection on δx̂^ℓ over ‖δx^ℓ‖; all shares add up to 1) with 95% bootstrap intervals over δx's prompts, and their norms; each MLP's change split into its coefficients' change (mlp_dm: Σ_i δm̄_i·v_i) and its value vectors' (mlp_dv: Σ_i m̄'_i·δv_i), the rest being its bias's change (null where a norm follows the MLP, which makes the split nonlinear); the last row (block null) is the totals of attention and of the MLPs, with their intervals; sum_error is ‖Σ blocks − δx^ℓ‖ / ‖δx^ℓ‖ against the registered δx (the decomposition is exact up to float16 storage).
-- paper: §5.2 ("the largest increases come from MLP blocks"), measured
-- needs: δx directions PREFIX.LAYER at resid_mid, and resid_post stored in both of δx's runs (ingest both with --capture resid_mid,resid_post); for mlp_dm/mlp_dv, value vectors of the base model (actwh index-vectors) and actwh diff of the tuned one
-- param prefix = "dx": the δx directions' name prefix
-- param layer = null: ℓ, the layer of δx (null: the last)
-- param replicates = 200: bootstrap resamples of δx's prompts (0: no intervals)
"""


def _mlp_split(sql, meta: dict, layers: int, arm: str) -> list[tuple] | None:
    """Per MLP block k < ``layers``: (Σ_i δm̄_i·v_i, Σ_i m̄'_i·δv_i), the change of its mean
    output from its coefficients and from its value vectors (m̄: each neuron's mean over the
    arm's tokens, from neuron_stats; v: the base model's value vectors; ' the tuned run's). None
    where it cannot be split: a norm after the MLP, value vectors or diffs not stored, or runs
    ingested before neuron_stats kept arms."""
    models = sql(
        """SELECT r.name, r.model, m.mlp_post_norm, m.d_mlp FROM runs r
           JOIN models m ON m.name = r.model WHERE r.name IN ($base, $tuned)""",
        {"base": meta["base_run"], "tuned": meta["tuned_run"]},
    )
    by_run = {r["name"]: r for r in models.iter_rows(named=True)}
    base, tuned = by_run[meta["base_run"]], by_run[meta["tuned_run"]]
    if base["mlp_post_norm"]:
        return None
    split = []
    for k in range(layers):
        means = []
        for run in (meta["base_run"], meta["tuned_run"]):
            try:
                stats = sql(
                    """SELECT neuron, sum(sum) / sum(n) AS m FROM arm_stats($run, $arm)
                       WHERE layer = $layer GROUP BY neuron""",
                    {"run": run, "arm": arm, "layer": k},
                )
            except ActwhError:  # ingested before neuron_stats kept arms
                return None
            m = np.zeros(base["d_mlp"])
            m[stats["neuron"].to_numpy()] = stats["m"].to_numpy()
            means.append((m, stats.height))
        v = sql(
            "SELECT neuron, vec FROM value_vectors WHERE model = $m AND layer = $layer",
            {"m": base["model"], "layer": k},
        )
        dv = sql(
            """SELECT neuron, delta FROM value_vector_diffs
               WHERE model = $m AND layer = $layer""",
            {"m": tuned["model"], "layer": k},
        )
        if min(means[0][1], means[1][1], v.height, dv.height) == 0:
            return None
        (m_base, _), (m_tuned, _) = means
        V = column_to_numpy(v["vec"].to_arrow()).astype(np.float64)
        dV = column_to_numpy(dv["delta"].to_arrow()).astype(np.float64)
        split.append(
            (
                (m_tuned - m_base)[v["neuron"].to_numpy()] @ V,
                m_tuned[dv["neuron"].to_numpy()] @ dV,
            )
        )
    return split


def _delta_direction(sql, prefix: str, layer: int | None) -> tuple[int, dict, dict]:
    """The δx direction ``prefix.LAYER`` (the last layer's when ``layer`` is None): its layer,
    its row and its meta; refused unless it was measured at resid_mid."""
    found = sql(
        """SELECT CAST(split_part(name, '.', -1) AS INTEGER) AS layer, meta, vec FROM directions
           WHERE kind = 'delta' AND name LIKE $prefix || '.%' ORDER BY layer""",
        {"prefix": prefix},
    )
    if found.is_empty():
        raise NotFound(
            f"no δx directions {prefix}.LAYER; add them with actwh directions add WH {prefix} "
            "--delta BASE_RUN TUNED_RUN"
        )
    layers = found["layer"].to_list()
    layer = layers[-1] if layer is None else layer
    if layer not in layers:
        raise NotFound(f"no δx direction {prefix}.{layer} (layers: {layers[0]}-{layers[-1]})")
    row = found.filter(pl.col("layer") == layer).row(0, named=True)
    meta = json.loads(row["meta"])
    if meta["site"] != "resid_mid":
        raise ActwhError(
            f"δx {prefix}.{layer} is at {meta['site']}; the decomposition needs resid_mid"
        )
    return layer, row, meta


def dx_decomposition(sql, prefix: str, layer: int | None, replicates: int) -> pl.DataFrame:
    layer, row, meta = _delta_direction(sql, prefix, layer)
    arm = meta.get("arm", "all")
    # Per prompt (in order): the tuned run's sums minus the base run's (the same tokens), and
    # the token counts — the same at every site and layer.
    sites = [("resid_mid", k) for k in range(layer + 1)] + [("resid_post", k) for k in range(layer)]
    diffs = {}
    for site, k in sites:
        diffs[site, k], counts = paired_sums(sql, meta, k, site)

    def blocks(weights: np.ndarray) -> tuple[list, list]:
        """Each block's output change, the prompts weighted by ``weights`` (a resample)."""
        n = weights @ counts
        mid = [weights @ diffs["resid_mid", k] / n for k in range(layer + 1)]
        post = [weights @ diffs["resid_post", k] / n for k in range(layer)]
        attn = [mid[0]] + [mid[k] - post[k - 1] for k in range(1, layer + 1)]
        return attn, [post[k] - mid[k] for k in range(layer)]

    def shares(attn: list, mlp: list) -> np.ndarray:
        """Each block's share along δx (their sum): attention 0..ℓ, then MLP 0..ℓ−1."""
        dx = sum(attn) + sum(mlp)
        return np.array([x @ dx for x in (*attn, *mlp)]) / (dx @ dx)

    attn, mlp = blocks(np.ones(len(counts)))
    whole = shares(attn, mlp)
    # the draws of every bootstrap in actwh (bootstrap_index), so intervals agree across queries
    draws = resample_counts(sql, len(counts), replicates) if replicates else np.empty((0, 0))
    drawn = np.array([shares(*blocks(w)) for w in draws]).reshape(replicates, len(whole))
    lo, hi = (
        np.percentile(drawn, q, axis=0) if replicates else np.full(len(whole), np.nan)
        for q in (2.5, 97.5)
    )
    dx = np.asarray(row["vec"], dtype=np.float64)
    scale = dx @ dx
    split = _mlp_split(sql, meta, layer, arm)
    error = float(np.linalg.norm(sum(attn) + sum(mlp) - dx) / np.linalg.norm(dx))

    found = []
    for k in range(layer + 1):
        i = layer + 1 + k if k < layer else None  # the MLP's column; block ℓ has none
        dm, dv = (None, None) if split is None or i is None else split[k]
        found.append(
            {
                "block": k,
                "attn_share": _at(whole, k),
                "attn_share_lo": _at(lo, k),
                "attn_share_hi": _at(hi, k),
                "mlp_share": _at(whole, i),
                "mlp_share_lo": _at(lo, i),
                "mlp_share_hi": _at(hi, i),
                "mlp_dm_share": None if dm is None else float(dm @ dx / scale),
                "mlp_dv_share": None if dv is None else float(dv @ dx / scale),
                "attn_norm": float(np.linalg.norm(attn[k])),
                "mlp_norm": None if i is None else float(np.linalg.norm(mlp[k])),
                "dx_layer": layer,
                "dx_norm": float(np.sqrt(scale)),
                "n_prompts": len(counts),
                "sum_error": error,
            }
        )
    found.append(_totals(found, layer, whole, drawn, attn, mlp))
    return pl.DataFrame(found, schema_overrides={"block": pl.Int32, "dx_layer": pl.Int32})


def _at(values: np.ndarray, i: int | None) -> float | None:
    return None if i is None or np.isnan(values[i]) else float(values[i])


def _totals(rows: list[dict], layer: int, whole, drawn, attn: list, mlp: list) -> dict:
    """The last row, block null: attention's and the MLPs' totals, their intervals from the
    same resamples (``drawn``, one row of block shares per resample)."""
    a, m = slice(0, layer + 1), slice(layer + 1, None)
    totals = np.stack([drawn[:, a].sum(1), drawn[:, m].sum(1)], axis=1)
    low, high = (
        np.percentile(totals, q, axis=0) if len(drawn) else np.full(2, np.nan) for q in (2.5, 97.5)
    )

    def total(column: str) -> float | None:
        values = [r[column] for r in rows if r["block"] < layer]
        return None if None in values else float(sum(values))

    return rows[-1] | {
        "block": None,
        "attn_share": float(whole[a].sum()),
        "attn_share_lo": _at(low, 0),
        "attn_share_hi": _at(high, 0),
        "mlp_share": float(whole[m].sum()),
        "mlp_share_lo": _at(low, 1),
        "mlp_share_hi": _at(high, 1),
        "mlp_dm_share": total("mlp_dm_share"),
        "mlp_dv_share": total("mlp_dv_share"),
        "attn_norm": float(np.linalg.norm(sum(attn))),
        "mlp_norm": float(np.linalg.norm(sum(mlp))),
    }


ANALYSES = [(DX_DECOMPOSITION, dx_decomposition)]
