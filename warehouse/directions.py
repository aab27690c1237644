"""Directions: named vectors in a model's residual space, and the math that makes them (numpy).

A direction belongs to a model and knows its size. Ways to make one:

* a vector from a file (see ``actwh.ingest.vector_files``) or from a probe;
* a value vector ``MLP.v_i^l`` (row i of ``W_out``);
* ``svd``: the top-N value vectors nearest another direction, each L2-normalised, stacked as
  columns of a ``[d_model, N]`` matrix, left singular vector ``U[:, i]`` — oriented so that its
  cosine with the source direction is positive (a singular vector's sign is arbitrary; the paper's
  code never fixes it);
* ``delta``: δx of a layer, the mean over paired tokens of ``tuned − base`` at a residual site.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TypedDict

import numpy as np

from actwh.errors import ActwhError, AlreadyExists, BadInput, NotFound, arg
from actwh.warehouse.arrays import column_to_numpy, to_blob
from actwh.warehouse.catalog import now
from actwh.warehouse.layout import check_name
from actwh.warehouse.registry import model_row
from actwh.warehouse.store import Store


def add_direction(
    store: Store,
    model: str,
    name: str,
    vector: np.ndarray,
    *,
    kind: str,
    meta: Mapping[str, object] | None = None,
    replace: bool = False,
) -> dict:
    """Register ``vector`` as direction ``name`` of ``model`` (its size must be d_model)."""
    check_name("direction", name)
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    d_model = model_row(store.catalog, model)["d_model"]
    if vector.shape[0] != d_model:
        raise BadInput(
            f"direction {name!r} has size {vector.shape[0]}, but model {model!r} has "
            f"d_model {d_model}"
        )
    if not np.isfinite(vector).all() or not vector.any():
        raise BadInput(f"direction {name!r} is zero or not finite")
    row = {
        "model": model,
        "name": name,
        "kind": kind,
        "d_model": d_model,
        "vector": to_blob(vector),
        "norm": float(np.linalg.norm(vector)),
        "meta": json.dumps(meta or {}, sort_keys=True),
        "created_at": now(),
    }
    catalog = store.catalog
    with catalog.begin() as conn:
        if catalog.get("directions", conn, model=model, name=name) is not None:
            if not replace:
                raise AlreadyExists(
                    f"model {model!r} already has a direction {name!r}; pass {arg('replace')} "
                    "to overwrite"
                )
            catalog.delete(conn, "directions", model=model, name=name)
        catalog.insert(conn, "directions", row)
    return row


def svd_direction(
    vectors: np.ndarray, source: np.ndarray, component: int = 0
) -> tuple[np.ndarray, float]:
    """``U[:, component]`` of the stacked, L2-normalised ``vectors`` (``[N, d]``), sign-oriented.

    Returns the unit vector and its singular value. Oriented toward ``source`` (positive cosine);
    if it is orthogonal to ``source``, toward the mean of the stacked vectors.
    """
    if not 0 <= component < min(vectors.shape):
        raise BadInput(f"SVD component {component} out of range for {vectors.shape[0]} vectors")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    u, s, _ = np.linalg.svd(unit.T.astype(np.float64), full_matrices=False)  # [d, N]
    direction = u[:, component]
    reference = source if abs(direction @ source) > 1e-8 * np.linalg.norm(source) else unit.sum(0)
    if direction @ reference < 0:
        direction = -direction
    return direction.astype(np.float32), float(s[component])


def mean_difference(base: np.ndarray, tuned: np.ndarray) -> np.ndarray:
    """δx: mean over rows of ``tuned − base`` (both ``[n_tokens, d]``, rows paired)."""
    if base.shape != tuned.shape or base.shape[0] == 0:
        raise ActwhError(f"cannot pair {base.shape[0]} base rows with {tuned.shape[0]} tuned rows")
    return (tuned.astype(np.float64) - base.astype(np.float64)).mean(axis=0).astype(np.float32)


class DeltaMeta(TypedDict):
    """A δx direction's ``meta`` in the catalog (``kind = 'delta'``), as the report and the SQL
    of ``residual_offset`` and ``value_vector_shift`` read it: the one declaration of its keys."""

    base_run: str
    tuned_run: str
    site: str
    layer: int
    arm: str  # the prompts' arm it was measured on (absent in warehouses before arms: 'all')


def delta_directions(
    snapshot, base_run: str, tuned_run: str, site: str, layers=None, arm: str = "plain"
) -> dict[int, np.ndarray]:
    """δx per layer: mean over paired tokens of ``tuned − base`` at ``site``, over the prompts of
    ``arm`` (plain, an encoding, chat, or all: see the ``arm_prompts`` macro).

    The runs must hold the same token sequences (a teacher-forced pair), and both must have
    stored full vectors of ``site`` (``capture``).
    """
    runs = {r["name"]: r for r in snapshot.execute("select * from runs").to_pylist()}
    for run in (base_run, tuned_run):
        if run not in runs:
            raise NotFound(f"no run {run!r} (runs: {', '.join(sorted(runs)) or 'none'})")
    pairing = snapshot.execute(
        """select count(*) as n,
                  count(*) filter (where b.token_id is distinct from t.token_id) as mismatched
           from (select prompt, pos, token_id from tokens where run = $base) b
           full outer join (select prompt, pos, token_id from tokens where run = $tuned) t
           using (prompt, pos)""",
        {"base": base_run, "tuned": tuned_run},
    ).to_pylist()[0]
    if pairing["n"] == 0 or pairing["mismatched"]:
        raise BadInput(
            f"runs {base_run!r} and {tuned_run!r} do not hold the same tokens "
            f"({pairing['mismatched']} of {pairing['n']} positions differ); pair them with "
            f"an ingest with {arg('teacher_force')} {base_run}"
        )
    available = (
        snapshot.execute(
            """select layer from residuals where run = $base and site = $site
           intersect select layer from residuals where run = $tuned and site = $site
           order by layer""",
            {"base": base_run, "tuned": tuned_run, "site": site},
        )
        .column(0)
        .to_pylist()
    )
    if not available:
        raise NotFound(
            f"runs {base_run!r} and {tuned_run!r} have no stored {site} vectors in common; "
            f"ingest them with {arg('capture')} {site}"
        )
    wanted = available if layers is None else [l for l in layers if l in available]
    missing = sorted(set(layers or []) - set(available))
    if missing:
        raise NotFound(f"{site} is not stored for layers {missing} of both runs")
    deltas = {}
    query = """select vec from residuals where run = $run and layer = $layer and site = $site
               and prompt in (select prompt from arm_prompts($base, $arm)) order by prompt, pos"""
    for layer in wanted:
        base, tuned = (
            column_to_numpy(
                snapshot.execute(
                    query, {"run": r, "layer": layer, "site": site, "base": base_run, "arm": arm}
                ).column("vec")
            )
            for r in (base_run, tuned_run)
        )
        deltas[layer] = mean_difference(base, tuned)
    return deltas


def svd_from_index(
    snapshot,
    index,
    model: str,
    source: np.ndarray,
    *,
    top: int,
    component: int = 0,
    per_layer: int | None = None,
) -> tuple[np.ndarray, dict]:
    """SVD direction of the ``top`` value vectors nearest ``source`` (see :func:`svd_direction`):
    by cosine, or for a gated MLP by |cosine| (its neurons write ±v; the SVD does not depend on
    the sign of each stacked vector)."""
    from actwh.warehouse.search import is_gated, value_vectors

    scores, layer, neuron = index.search(
        source[None], top, either_sign=is_gated(snapshot, model), per_layer=per_layer
    )
    hits = list(zip(scores[0], layer[0], neuron[0], strict=True))
    if len(hits) < top:
        raise BadInput(f"asked for the top {top} value vectors, but only {len(hits)} exist")
    keys = [(int(l), int(n)) for _, l, n in hits]
    vectors = value_vectors(snapshot, model, keys)
    direction, singular = svd_direction(vectors, source, component)
    cos = float(direction @ source / np.linalg.norm(source))
    meta = {
        "top": top,
        "per_layer": per_layer,
        "component": component,
        "singular_value": singular,
        "cos_with_source": cos,
        "vectors": [f"{l}:{n}" for l, n in keys],
    }
    return direction, meta
