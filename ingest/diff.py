"""How far a tuned model moved from its base: per parameter, and per value vector (paper §5.1).

Per parameter tensor: cosine between the flattened weights, ‖θ_base‖, ‖θ_tuned − θ_base‖ and the
mean absolute difference per element (the paper's "norm difference" is not defined precisely, so
all three are kept). Per value vector ``MLP.v_i^l``: cosine between base and tuned, and the shift
``δv = v_tuned − v_base`` itself — the input of Figure 5 (cosine of δv with δx of a later layer).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from actwh.errors import ActwhError
from actwh.models.loading import LoadedModel
from actwh.warehouse.arrays import vectors_to_column
from actwh.warehouse.registry import adopt, check_compatible, register_model
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter


@torch.no_grad()
def parameter_diffs(base: LoadedModel, tuned: LoadedModel) -> pa.Table:
    tuned_params = dict(tuned.model.named_parameters())
    rows = []
    for name, p in base.model.named_parameters():
        q = tuned_params.get(name)
        if q is None or q.shape != p.shape:
            raise ActwhError(f"parameter {name} is missing or differently shaped in {tuned.name}")
        x, y = p.detach().double().flatten(), q.detach().double().flatten()
        diff = y - x
        # A cosine with an all-zero tensor is undefined: NULL, not a made-up number.
        defined = bool(x.norm() > 0 and y.norm() > 0)
        cos = float(torch.nn.functional.cosine_similarity(x, y, dim=0)) if defined else None
        rows.append(
            {
                "parameter": name,
                "numel": x.numel(),
                "cosine": cos,
                "norm_base": float(x.norm()),
                "norm_diff": float(diff.norm()),
                "mean_abs_diff": float(diff.abs().mean()),
            }
        )
    return pa.Table.from_pylist(rows)


@torch.no_grad()
def value_vector_diffs(base: LoadedModel, tuned: LoadedModel, layer: int) -> pa.Table:
    v_base = base.adapter.write_vectors(layer).detach().float()
    v_tuned = tuned.adapter.write_vectors(layer).detach().float()
    delta = (v_tuned - v_base).cpu().numpy()
    cos = torch.nn.functional.cosine_similarity(v_base, v_tuned, dim=1).cpu().numpy()
    return pa.table(
        {
            "neuron": pa.array(np.arange(len(delta)), pa.int32()),
            "cosine": cos.astype(np.float32),
            "delta_norm": np.linalg.norm(delta, axis=1).astype(np.float32),
            "delta": vectors_to_column(delta),
        }
    )


def store_weight_diffs(store: Store, base: LoadedModel, tuned: LoadedModel) -> pa.Table:
    """Write ``weight_diffs`` and ``value_vector_diffs`` of ``tuned`` against ``base``."""
    check_compatible(base.catalog_row(), tuned.catalog_row(), "diff")
    catalog = store.catalog
    with catalog.begin() as conn:  # the tuned model becomes the base's child, or it is refused
        register_model(conn, catalog, base.catalog_row())
        if tuned.name != base.name:  # (a model against itself: a check that nothing moved)
            register_model(conn, catalog, tuned.catalog_row(), role="tuned", parent=base.name)
            adopt(conn, catalog, tuned.name, base.name)
    writer = CommitWriter(store, model=tuned.name)
    writer.remove_orphans()
    params = parameter_diffs(base, tuned)
    labelled = params.append_column("base", pa.array([base.name] * params.num_rows))
    writer.add("weight_diffs", {"model": tuned.name}, labelled)
    for layer in range(base.adapter.n_layers):
        rows = value_vector_diffs(base, tuned, layer)
        rows = rows.append_column("base", pa.array([base.name] * rows.num_rows))
        writer.add(
            "value_vector_diffs",
            {"model": tuned.name, "layer": layer},
            rows,
            vector_size=base.adapter.d_model,
        )
    writer.commit(replace_tables=("weight_diffs", "value_vector_diffs"))
    return params
