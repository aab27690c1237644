"""Figure 4: the residual stream of base and tuned models, on the shift and the first PC.

Paper (``toxicity/figures/pca.sync.py``): the first 50 prompts, their last position (one-token
prompts are skipped here: the first position of many models carries a huge residual norm),
``resid_mid`` of layer 19 for GPT-2 and its DPO model; the 100 vectors are z-scored per dimension;
axis 1 is the mean of (DPO − GPT-2) — the "shift component", not unit-normalised — and axis 2 the
first principal component; points are ``standardised @ [shift, pc]`` (the axes are not
orthogonal). Colour is the activation of a toxic value vector at that position: here its exact
coefficient from ``neuron_acts`` when that neuron was tracked (the paper used an approximation).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from actwh.errors import ActwhError
from actwh.warehouse.arrays import column_to_numpy

# The last prompt token of the first n multi-token prompts of the base run.
_LAST_PROMPT_TOKEN = """
    WITH last AS (
        SELECT prompt, n_prompt_tokens - 1 AS pos FROM generations
        WHERE run = $base AND n_prompt_tokens > 1 ORDER BY prompt LIMIT $n
    )
"""


def pca_shift(
    sql,
    base_run: str,
    tuned_run: str,
    layer: int,
    *,
    site: str | None = None,
    n_prompts: int = 50,
    neuron: tuple[int, int] | None = None,
) -> pl.DataFrame:
    """``sql`` runs a query with parameters (``Warehouse.sql``). Returns one row per point:
    ``prompt, run, shift, pc1, activation``."""
    if site is None:
        site = sql("select mlp_input($r) as site", {"r": base_run})["site"][0]
    frames = {}
    for run in (base_run, tuned_run):
        frames[run] = sql(
            _LAST_PROMPT_TOKEN
            + """
            SELECT r.prompt, r.vec FROM residuals r JOIN last USING (prompt, pos)
            WHERE r.run = $run AND r.layer = $layer AND r.site = $site
            ORDER BY r.prompt
            """,
            {"base": base_run, "n": n_prompts, "run": run, "layer": layer, "site": site},
        )
    base, tuned = frames[base_run], frames[tuned_run]
    if base.is_empty() or base["prompt"].to_list() != tuned["prompt"].to_list():
        raise ActwhError(
            f"need {site} at layer {layer} for the same prompts in {base_run} and {tuned_run} "
            "(--capture it in both runs, the tuned one --teacher-force the base one)"
        )
    X = np.vstack(
        [column_to_numpy(base["vec"].to_arrow()), column_to_numpy(tuned["vec"].to_arrow())]
    )
    std = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    n = base.height
    shift = (Z[n:] - Z[:n]).mean(axis=0)
    pc1 = np.linalg.svd(Z - Z.mean(axis=0), full_matrices=False)[2][0]
    prompts = base["prompt"].to_list() * 2
    runs = [base_run] * n + [tuned_run] * n
    points = pl.DataFrame(
        {"prompt": prompts, "run": runs, "shift": Z @ shift, "pc1": Z @ pc1},
        schema_overrides={"prompt": pl.Int32},
    )
    if neuron is None:
        return points.with_columns(activation=pl.lit(None, pl.Float32))
    acts = sql(
        _LAST_PROMPT_TOKEN
        + """
        SELECT a.run, a.prompt, a.act AS activation FROM neuron_acts a JOIN last USING (prompt, pos)
        WHERE a.run IN ($base, $tuned) AND a.layer = $layer AND a.neuron = $neuron
        """,
        {
            "base": base_run,
            "tuned": tuned_run,
            "n": n_prompts,
            "layer": neuron[0],
            "neuron": neuron[1],
        },
    )
    return points.join(acts, on=["run", "prompt"], how="left")
