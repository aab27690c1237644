"""MLP value vectors from a model's weights: stored with their top tokens, indexed with FAISS.

``MLP.v_i^l`` is row i of ``W_out`` (``[d_mlp, d_model]``). Its top tokens are those with the
highest dot product with the unembedding, ``v · W_U[:, w]`` — the paper's Table 1 method (no final
norm; for GPT-2 the unembedding is the tied token embedding).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from actwh.ingest.adapters import Adapter
from actwh.ingest.models import LoadedModel
from actwh.ingest.registry import ensure_registered
from actwh.ingest.rows import TokenText
from actwh.warehouse import layout, vector_index
from actwh.warehouse.arrays import vectors_to_column
from actwh.warehouse.catalog import now
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter, sha256_file

CHUNK = 1024  # value vectors per unembedding product, to bound memory ([CHUNK, vocab] floats)


@torch.no_grad()
def top_value_vectors(
    adapter: Adapter, direction: np.ndarray, k: int, per_layer: int | None = None
) -> list[tuple[float, int, int]]:
    """The ``k`` value vectors with the highest cosine with ``direction``: (cos, layer, neuron).

    ``per_layer`` keeps only each layer's best ``per_layer`` first, as the paper's code does
    (top 100 per layer, then pooled).
    """
    d = torch.as_tensor(direction, dtype=torch.float32, device=adapter.W_U.device)
    cos = torch.stack(
        [
            torch.nn.functional.cosine_similarity(adapter.W_out(l).float(), d[None], dim=1)
            for l in range(adapter.n_layers)
        ]
    )  # [n_layers, d_mlp]
    if per_layer is not None and per_layer < cos.shape[1]:
        keep = cos.topk(per_layer, dim=1).indices
        cos = torch.full_like(cos, -torch.inf).scatter(1, keep, cos.gather(1, keep))
    top = cos.flatten().topk(min(k, cos.numel()))
    d_mlp = cos.shape[1]
    return [
        (float(c), int(i) // d_mlp, int(i) % d_mlp)
        for c, i in zip(top.values, top.indices, strict=True)
    ]


@torch.no_grad()
def top_tokens(adapter: Adapter, vectors: torch.Tensor, k: int) -> torch.Tensor:
    """Token ids with the highest dot product with each vector (``[n, d]``) → ``[n, k]``."""
    W_U = adapter.W_U.float()
    out = [(chunk.float() @ W_U).topk(k, dim=-1).indices for chunk in vectors.split(CHUNK)]
    return torch.cat(out)


def store_value_vectors(
    store: Store,
    loaded: LoadedModel,
    *,
    kind: str = "flat",
    top: int = 10,
    replace: bool = False,
    progress: bool = True,
) -> dict:
    """Write every value vector of ``loaded`` to ``value_vectors`` and build its FAISS index.

    Returns the ``vector_indexes`` row. If the model's vectors are already stored and
    ``replace`` is false, nothing is done.
    """
    ensure_registered(store, loaded)
    existing = store.catalog.get("vector_indexes", model=loaded.name)
    if existing is not None and not replace:
        return existing
    adapter = loaded.adapter
    text = TokenText(loaded.tokenizer)
    writer = CommitWriter(store, model=loaded.name)
    writer.remove_orphans()
    blocks = []
    for layer in tqdm(
        range(adapter.n_layers), desc=f"value vectors {loaded.name}", disable=not progress
    ):
        W = adapter.W_out(layer).detach().float()
        ids = top_tokens(adapter, W, top).cpu().numpy()
        vectors = W.cpu().numpy()
        blocks.append(vectors)
        words = text(ids.reshape(-1).tolist())
        rows = pa.table(
            {
                "neuron": pa.array(np.arange(len(vectors)), pa.int32()),
                "vec": vectors_to_column(vectors),
                "norm": np.linalg.norm(vectors, axis=1).astype(np.float32),
                "top_tokens": [words[i * top : (i + 1) * top] for i in range(len(vectors))],
            }
        )
        writer.add(
            "value_vectors",
            {"model": loaded.name, "layer": layer},
            rows,
            vector_size=vectors.shape[1],
        )
    index = vector_index.build(np.concatenate(blocks), kind)
    directory = store.root / layout.INDEX_DIR
    directory.mkdir(exist_ok=True)
    path = directory / f"{loaded.name}.faiss"
    vector_index.save(index, path)
    writer.commit(replace_tables=("value_vectors",))
    row = {
        "model": loaded.name,
        "path": store.relative(path),
        "kind": kind,
        "n_vectors": int(index.ntotal),
        "d_mlp": adapter.d_mlp,
        "sha256": sha256_file(path),
        "created_at": now(),
    }
    with store.catalog.begin() as conn:
        store.catalog.delete(conn, "vector_indexes", model=loaded.name)
        store.catalog.insert(conn, "vector_indexes", row)
    return row
