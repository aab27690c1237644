"""Nearest value vectors: the FAISS index joined back to ``value_vectors`` (norm), with tokens.

What a neuron writes is ``m_i · v_i``. For a GELU MLP (GPT-2) ``m_i`` is almost never below −0.17,
so the neurons that write a direction are those whose value vector points along it (the paper's
Table 1). A gated neuron (Llama family) writes ``+v_i`` or ``−v_i``: the search ranks by
``|cosine|`` and says which sign of ``m_i`` writes toward the direction (``sign``), and the top
tokens are those of ``sign · v_i``. Given a run, it adds how the neuron actually fires there.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from actwh.errors import ActwhError, BadInput, Damaged, NotFound
from actwh.warehouse.arrays import column_to_numpy
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.vector_index import VectorIndex


def index_row(snapshot: Snapshot, model: str) -> dict:
    rows = snapshot.execute("select * from vector_indexes where model = $m", {"m": model})
    if rows.num_rows == 0:
        raise NotFound(
            f"no value vectors for model {model!r}; run: actwh index-vectors WH --model {model}"
        )
    return rows.to_pylist()[0]


def load_index(snapshot: Snapshot, model: str) -> VectorIndex:
    row = index_row(snapshot, model)
    path = snapshot.store.local_copy(row["path"], row["sha256"])  # cached by content
    try:
        return VectorIndex.load(path, row["d_mlp"])
    except RuntimeError as error:  # FAISS cannot read it: truncated, or not an index
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise Damaged(
            f"{row['path']}: the FAISS index of model {model} cannot be read ({reason}); "
            "run: actwh check WH"
        ) from error


def check_size(vectors: np.ndarray, snapshot: Snapshot, model: str) -> np.ndarray:
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    d_model = snapshot.model(model).get("d_model")
    if vectors.shape[1] != d_model:
        raise ActwhError(
            f"a query of size {vectors.shape[1]} cannot search model {model!r} (d_model {d_model})"
        )
    if not np.isfinite(vectors).all() or not np.abs(vectors).sum(axis=1).all():
        raise BadInput("a query vector is zero or not finite (NaN or inf): it has no direction")
    return vectors


def is_gated(snapshot: Snapshot, model: str) -> bool:
    return bool(snapshot.model(model).get("mlp_gated"))


def check_run(snapshot: Snapshot, run: str, model: str) -> None:
    """``run`` must exist and be of ``model`` or a model sharing its weights' layout (lineage)."""
    found = snapshot.execute("select model from runs where name = $r", {"r": run}).to_pylist()
    if not found:
        runs = snapshot.execute("select name from runs order by name").column(0).to_pylist()
        raise NotFound(f"no run {run!r} (runs: {', '.join(runs) or 'none'})")
    related = snapshot.execute(
        "select count(*) from lineage($a) x join lineage($b) y using (model)",
        {"a": found[0]["model"], "b": model},
    )
    if not related.column(0)[0].as_py():
        raise ActwhError(
            f"run {run!r} is of model {found[0]['model']!r}, which is not related to {model!r}"
        )


def nearest(
    snapshot: Snapshot,
    index: VectorIndex,
    model: str,
    queries: np.ndarray,
    k: int = 20,
    layers: list[int] | None = None,
    run: str | None = None,
    tokens: bool = True,
) -> pa.Table:
    """The ``k`` neurons whose value vectors can write most along each query row.

    Returns ``query, rank, layer, neuron, cosine, sign, norm, top_tokens`` (rank 1 = nearest;
    ``sign``: the sign of the coefficient that writes toward the query, that of the cosine;
    ``top_tokens``: those of ``sign · v``; without ``tokens`` and ``run``, neither ``norm`` nor
    ``top_tokens``: no value vector is read). With ``run``, also how each neuron fires over the
    run's generated tokens (all its tokens if it generated none): ``frac_pos`` (share of tokens
    with m > 0), ``mean_pos`` and ``mean_neg`` (means of max(m, 0) and min(m, 0); their sum is
    the mean coefficient) and ``mean_write`` (mean of m·⟨v, q̂⟩: positive writes toward q).
    """
    queries = check_size(queries, snapshot, model)
    if run is not None:
        check_run(snapshot, run, model)
    scores, layer, neuron = index.search(queries, k, layers, either_sign=is_gated(snapshot, model))
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
    if not tokens and run is None:
        return hits.append_column(
            "sign", pa.array(np.where(hits["cosine"].to_numpy() < 0, -1, 1).astype(np.int8))
        )
    # The hits' layers as constants: the scan of value_vectors reads only their files (a join's
    # keys prune nothing), so a search costs its k hits, not the whole table.
    hit_layers = ", ".join(str(int(x)) for x in np.unique(layer)) or "NULL"
    con = snapshot.con
    con.register("_hits", hits)
    try:
        found = snapshot.relation(
            f"""select h.query, h.rank, h.layer, h.neuron, h.cosine,
                      CAST(if(h.cosine < 0, -1, 1) AS TINYINT) AS sign, v.norm,
                      coalesce(vector_tokens($model, v.vec, if(h.cosine < 0, -1, 1), 10),
                               if(h.cosine < 0, v.bottom_tokens, v.top_tokens)) AS top_tokens
               from _hits h join value_vectors v
                 on v.model = $model and v.layer = h.layer and v.neuron = h.neuron
               where v.layer in ({hit_layers})
               order by h.query, h.rank""",
            {"model": model},
        ).to_arrow_table()
        if run is None:
            return found
        con.register("_found", found)
        try:
            return snapshot.relation(
                """select f.*, s.frac_pos, s.mean_pos, s.mean_neg,
                          s.mean * f.norm * f.cosine as mean_write
                   from _found f left join neuron_means($run) s using (layer, neuron)
                   order by f.query, f.rank""",
                {"run": run},
            ).to_arrow_table()
        finally:
            con.unregister("_found")
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
        table = snapshot.relation(
            """select w.i, v.vec from _wanted w join value_vectors v
                 on v.model = $model and v.layer = w.layer and v.neuron = w.neuron
               order by w.i""",
            {"model": model},
        ).to_arrow_table()
    finally:
        con.unregister("_wanted")
    if table.num_rows != len(keys):
        shape = snapshot.execute(
            "select n_layers, d_mlp from models where name = $m", {"m": model}
        ).to_pylist()
        outside = [
            (l, n)
            for l, n in keys
            if shape and not (0 <= l < shape[0]["n_layers"] and 0 <= n < shape[0]["d_mlp"])
        ]
        if outside:
            raise NotFound(
                f"value vector {outside[0][0]}:{outside[0][1]}: out of range (model {model!r} has "
                f"{shape[0]['n_layers']} layers of {shape[0]['d_mlp']} neurons)"
            )
        raise NotFound(
            f"value vectors of {model!r} are not stored; "
            f"run: actwh index-vectors WH --model {model}"
        )
    return column_to_numpy(table.column("vec"))


def mean_sides(snapshot: Snapshot, run: str, n_layers: int, d_mlp: int) -> tuple:
    """Each neuron's mean max(m, 0) and mean max(−m, 0) in ``run`` (``mean_pos`` and
    ``−mean_neg`` of ``neuron_means``; their sum is the mean |m|): two ``[n_layers, d_mlp]``
    arrays, NaN for a layer the run did not cover."""
    return (
        _neuron_means(snapshot, run, n_layers, d_mlp, "mean_pos"),
        _neuron_means(snapshot, run, n_layers, d_mlp, "-mean_neg"),
    )


def mean_coefficients(snapshot: Snapshot, run: str, n_layers: int, d_mlp: int) -> np.ndarray:
    """Each neuron's mean coefficient in ``run`` (schema.sql's ``neuron_means``): ``[n_layers,
    d_mlp]``; NaN for a layer the run did not cover."""
    return _neuron_means(snapshot, run, n_layers, d_mlp, "mean")


def _neuron_means(snapshot: Snapshot, run: str, n_layers: int, d_mlp: int, value: str):
    rows = snapshot.execute(
        f"select layer, neuron, {value} as value from neuron_means($run)", {"run": run}
    ).to_pydict()
    if not rows["layer"]:
        raise NotFound(
            f"run {run!r} has no neuron_stats (it was ingested before actwh kept them); "
            "ingest it again"
        )
    means = np.full((n_layers, d_mlp), np.nan)
    means[rows["layer"], rows["neuron"]] = rows["value"]
    return means
