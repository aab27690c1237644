"""Nearest value vectors: the FAISS index joined back to ``value_vectors`` (norm, top tokens)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from actwh.errors import ActwhError
from actwh.warehouse.arrays import column_to_numpy
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.vector_index import VectorIndex


def index_row(snapshot: Snapshot, model: str) -> dict:
    rows = snapshot.execute("select * from vector_indexes where model = $m", {"m": model})
    if rows.num_rows == 0:
        raise ActwhError(
            f"no value vectors for model {model!r}; run: actwh vectors WH --model {model}"
        )
    return rows.to_pylist()[0]


def load_index(snapshot: Snapshot, model: str) -> VectorIndex:
    row = index_row(snapshot, model)
    return VectorIndex.load(snapshot.store.root / row["path"], row["d_mlp"])


def check_size(vectors: np.ndarray, snapshot: Snapshot, model: str) -> np.ndarray:
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    d_model = snapshot.execute("select d_model from models where name = $m", {"m": model})
    d_model = d_model.column(0)[0].as_py()
    if vectors.shape[1] != d_model:
        raise ActwhError(
            f"a query of size {vectors.shape[1]} cannot search model {model!r} (d_model {d_model})"
        )
    return vectors


def nearest(
    snapshot: Snapshot,
    index: VectorIndex,
    model: str,
    queries: np.ndarray,
    k: int = 20,
    layers: list[int] | None = None,
) -> pa.Table:
    """Top-``k`` value vectors by cosine for each query row.

    Returns columns ``query, rank, layer, neuron, cosine, norm, top_tokens`` (rank 1 = nearest).
    """
    queries = check_size(queries, snapshot, model)
    scores, layer, neuron = index.search(queries, k, layers)
    q, kk = scores.shape
    hits = pa.table(
        {
            "query": np.repeat(np.arange(q, dtype=np.int32), kk),
            "rank": np.tile(np.arange(1, kk + 1, dtype=np.int32), q),
            "layer": layer.reshape(-1).astype(np.int16),
            "neuron": neuron.reshape(-1).astype(np.int32),
            "cosine": scores.reshape(-1),
        }
    )
    con = snapshot.con
    con.register("_hits", hits)
    try:
        return con.sql(
            """select h.query, h.rank, h.layer, h.neuron, h.cosine, v.norm, v.top_tokens
               from _hits h join value_vectors v
                 on v.model = $model and v.layer = h.layer and v.neuron = h.neuron
               order by h.query, h.rank""",
            params={"model": model},
        ).to_arrow_table()
    finally:
        con.unregister("_hits")


def value_vectors(snapshot: Snapshot, model: str, keys: list[tuple[int, int]]) -> np.ndarray:
    """The value vectors ``(layer, neuron)`` of ``model``, in the order given → ``[n, d]``."""
    wanted = pa.table(
        {
            "i": np.arange(len(keys), dtype=np.int32),
            "layer": np.array([k[0] for k in keys], dtype=np.int16),
            "neuron": np.array([k[1] for k in keys], dtype=np.int32),
        }
    )
    con = snapshot.con
    con.register("_wanted", wanted)
    try:
        table = con.sql(
            """select w.i, v.vec from _wanted w join value_vectors v
                 on v.model = $model and v.layer = w.layer and v.neuron = w.neuron
               order by w.i""",
            params={"model": model},
        ).to_arrow_table()
    finally:
        con.unregister("_wanted")
    if table.num_rows != len(keys):
        raise ActwhError(
            f"value vectors of {model!r} are not stored; run: actwh vectors WH --model {model}"
        )
    return column_to_numpy(table.column("vec"))
