"""MLP value vectors stored in a warehouse, with the readout that reads them as tokens,
and indexed with FAISS.

``MLP.v_i^l`` is row i of ``W_out`` (``[d_mlp, d_model]``); where a norm follows the MLP, what is
stored and searched is the direction it writes into the residual stream, ``γ ⊙ v_i``
(:meth:`~actwh.models.adapters.Adapter.write_vectors`). Its top tokens are those with the
highest logit ``W_U[:, w] · u``, where ``u`` is ``v`` itself (``unembed="raw"``: the paper's
Table 1 method; for GPT-2 the unembedding is the tied token embedding) or what the final norm
passes on of it (``"final_norm"``: ``γ ⊙ v`` for RMSNorm); each architecture has a default (see
:class:`~actwh.models.adapters.Adapter`). Its bottom tokens are the top tokens of ``−v``: what a
gated neuron promotes when its coefficient is negative.

The tokens of every vector at once cost ``n_vectors × vocab × d_model`` (12.6 minutes for Gemma
3 270M's 36,864 vectors and 262,144 tokens on two cores; out of reach at Llama-3-8B's size), and
only the vectors someone looks at need them. So what is stored is the readout ``U`` with
``logits = U · v`` (:func:`readout`; a ``.npy`` file beside the FAISS index, memory-mapped by
readers) and the model's tokens (the ``vocabulary`` table), and the tokens of a vector are read
when a query, a search or a page asks (the SQL function ``vector_tokens``, in numpy).
"""

from __future__ import annotations

import hashlib
import io
import uuid

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from actwh.ingest.options import IndexOptions
from actwh.ingest.registry import ensure_registered
from actwh.ingest.rows import TokenText
from actwh.models.loading import LoadedModel
from actwh.models.value_vectors import readout
from actwh.warehouse import layout, vector_index
from actwh.warehouse.arrays import vectors_to_column
from actwh.warehouse.catalog import now
from actwh.warehouse.retired import retire_index
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter


def store_value_vectors(store: Store, loaded: LoadedModel, options: IndexOptions) -> dict:
    """Write every value vector of ``loaded`` to ``value_vectors`` and the model's tokens to
    ``vocabulary`` (one commit), and beside the FAISS index the readout that reads a vector as
    tokens.

    ``options.unembed`` says how tokens are read (default: the architecture's). Returns the
    ``vector_indexes`` row. If the model's vectors are already stored and ``replace`` is false,
    nothing is done.
    """
    unembed, kind = options.unembed or loaded.adapter.default_unembed, options.index
    U = readout(loaded.adapter, unembed)  # checks unembed
    ensure_registered(store, loaded)
    existing = store.catalog.get("vector_indexes", model=loaded.name)
    if existing is not None and not options.replace:
        return existing
    adapter = loaded.adapter
    writer = CommitWriter(store, model=loaded.name)
    writer.remove_orphans()
    blocks = []
    for layer in tqdm(
        range(adapter.n_layers), desc=f"value vectors {loaded.name}", disable=not options.progress
    ):
        vectors = adapter.write_vectors(layer).detach().float().cpu().numpy()
        blocks.append(vectors)
        rows = pa.table(
            {
                "neuron": pa.array(np.arange(len(vectors)), pa.int32()),
                "vec": vectors_to_column(vectors),
                "norm": np.linalg.norm(vectors, axis=1).astype(np.float32),
                "top_tokens": pa.nulls(len(vectors), pa.list_(pa.string())),
                "bottom_tokens": pa.nulls(len(vectors), pa.list_(pa.string())),
            }
        )
        where = {"model": loaded.name, "layer": layer}
        writer.add("value_vectors", where, rows, vector_size=vectors.shape[1])
    ids = np.arange(U.shape[0], dtype=np.int32)
    tokens = pa.table({"token_id": ids, "token": TokenText(loaded.tokenizer)(ids.tolist())})
    writer.add("vocabulary", {"model": loaded.name}, tokens)
    index = vector_index.build(np.concatenate(blocks), kind)
    # Named by this build (a rebuild never overwrites what readers open), recorded in the
    # commit of the vectors: a kill before it leaves orphans for check --repair, never a
    # catalog row whose files differ.
    build = uuid.uuid4().hex[:12]
    path = f"{layout.INDEX_DIR}/{loaded.name}.{build}.faiss"
    readout_path = f"{layout.INDEX_DIR}/{loaded.name}.{build}.readout.npy"
    index_bytes = vector_index.to_bytes(index)
    buffer = io.BytesIO()
    np.save(buffer, U.cpu().numpy())
    readout_bytes = buffer.getvalue()
    store.put(path, index_bytes)
    store.put(readout_path, readout_bytes)
    row = {
        "model": loaded.name,
        "path": path,
        "kind": kind,
        "n_vectors": int(index.ntotal),
        "d_mlp": adapter.d_mlp,
        "sha256": hashlib.sha256(index_bytes).hexdigest(),
        "unembed": unembed,
        "readout": readout_path,
        "readout_sha256": hashlib.sha256(readout_bytes).hexdigest(),
        "created_at": now(),
    }

    def record(conn, commit_id: str) -> None:
        catalog = store.catalog
        old = catalog.get("vector_indexes", conn, model=loaded.name)
        catalog.delete(conn, "vector_indexes", model=loaded.name)
        catalog.insert(conn, "vector_indexes", row)
        if old is not None:
            retire_index(catalog, conn, [old["path"], old["readout"]], commit_id)

    writer.commit(replace_tables=("value_vectors", "vocabulary"), also=record)
    return row
