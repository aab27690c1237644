"""Where does δx come from? Its exact split into what attention and the MLPs changed.

The residual stream is a sum: resid_mid of layer ℓ is resid_post of layer ℓ−1 plus attention ℓ's
output, and resid_post ℓ is resid_mid ℓ plus MLP ℓ's output. So with resid_mid and resid_post
stored in both runs of a teacher-forced pair, each block's output change is a difference of stored
means — attention k: δresid_mid_k − δresid_post_{k−1}; MLP k: δresid_post_k − δresid_mid_k; and
δresid_mid_0 is the embedding's and attention 0's change together — and δx of layer ℓ (at
resid_mid) is exactly their sum over the blocks before it. Each block's share is its projection on
δx̂ over ‖δx‖, so the shares add up to 1.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from actwh.errors import ActwhError
from actwh.warehouse.arrays import column_to_numpy

DX_DECOMPOSITION = """
-- name: dx_decomposition
-- answers: Which blocks make δx of a layer ℓ? Per block k up to ℓ: the change of attention k's output (attn; block 0 with the embedding's change) and of MLP k's output (mlp, blocks before ℓ), as shares of δx^ℓ along itself (projection on δx̂^ℓ over ‖δx^ℓ‖; all shares add up to 1), and their norms; sum_error is ‖Σ blocks − δx^ℓ‖ / ‖δx^ℓ‖ against the registered δx (the decomposition is exact up to float16 storage).
-- paper: §5.2 ("the largest increases come from MLP blocks"), measured
-- needs: δx directions PREFIX.LAYER at resid_mid, and resid_post stored in both of δx's runs (ingest both with --capture resid_mid,resid_post)
-- param prefix = "dx": the δx directions' name prefix
-- param layer = null: ℓ, the layer of δx (null: the last)
"""


def _mean(sql, run: str, site: str, layer: int, meta: dict) -> np.ndarray:
    """The mean of ``site``'s vectors at ``layer`` over the tokens of δx's prompts (its arm)."""
    frame = sql(
        """SELECT vec FROM residuals WHERE run = $run AND site = $site AND layer = $layer
             AND prompt IN (SELECT prompt FROM arm_prompts($base, $arm))""",
        {
            "run": run,
            "site": site,
            "layer": layer,
            "base": meta["base_run"],
            "arm": meta.get("arm", "all"),
        },
    )
    if frame.is_empty():
        raise ActwhError(
            f"run {run!r} has no {site} vectors at layer {layer}; ingest both of δx's runs with "
            "--capture resid_mid,resid_post"
        )
    return column_to_numpy(frame["vec"].to_arrow()).astype(np.float64).mean(0)


def dx_decomposition(sql, prefix: str, layer: int | None) -> pl.DataFrame:
    found = sql(
        """SELECT CAST(split_part(name, '.', -1) AS INTEGER) AS layer, meta, vec FROM directions
           WHERE kind = 'delta' AND name LIKE $prefix || '.%' ORDER BY layer""",
        {"prefix": prefix},
    )
    if found.is_empty():
        raise ActwhError(
            f"no δx directions {prefix}.LAYER; add them with actwh directions add WH {prefix} "
            "--delta BASE_RUN TUNED_RUN"
        )
    layers = found["layer"].to_list()
    layer = layers[-1] if layer is None else layer
    if layer not in layers:
        raise ActwhError(f"no δx direction {prefix}.{layer} (layers: {layers[0]}-{layers[-1]})")
    row = found.filter(pl.col("layer") == layer).row(0, named=True)
    meta = json.loads(row["meta"])
    if meta["site"] != "resid_mid":
        raise ActwhError(
            f"δx {prefix}.{layer} is at {meta['site']}; the decomposition needs resid_mid"
        )
    dx = np.asarray(row["vec"], dtype=np.float64)

    def delta(site: str, k: int) -> np.ndarray:
        return _mean(sql, meta["tuned_run"], site, k, meta) - _mean(
            sql, meta["base_run"], site, k, meta
        )

    mid = [delta("resid_mid", k) for k in range(layer + 1)]
    post = [delta("resid_post", k) for k in range(layer)]
    attn = [mid[0]] + [mid[k] - post[k - 1] for k in range(1, layer + 1)]
    mlp = [post[k] - mid[k] for k in range(layer)] + [None]
    total = sum(attn) + sum(mlp[:-1])
    scale = dx @ dx
    error = float(np.linalg.norm(total - dx) / np.linalg.norm(dx))
    return pl.DataFrame(
        [
            {
                "block": k,
                "attn_share": float(attn[k] @ dx / scale),
                "mlp_share": None if mlp[k] is None else float(mlp[k] @ dx / scale),
                "attn_norm": float(np.linalg.norm(attn[k])),
                "mlp_norm": None if mlp[k] is None else float(np.linalg.norm(mlp[k])),
                "dx_layer": layer,
                "dx_norm": float(np.sqrt(scale)),
                "sum_error": error,
            }
            for k in range(layer + 1)
        ],
        schema_overrides={"block": pl.Int32, "dx_layer": pl.Int32},
    )


ANALYSES = [(DX_DECOMPOSITION, dx_decomposition)]
