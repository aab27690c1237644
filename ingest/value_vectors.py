"""MLP value vectors from a model's weights: stored with the readout that reads them as tokens,
and indexed with FAISS.

``MLP.v_i^l`` is row i of ``W_out`` (``[d_mlp, d_model]``); where a norm follows the MLP, what is
stored and searched is the direction it writes into the residual stream, ``γ ⊙ v_i``
(:meth:`~actwh.ingest.adapters.Adapter.write_vectors`). Its top tokens are those with the
highest logit ``W_U[:, w] · u``, where ``u`` is ``v`` itself (``unembed="raw"``: the paper's
Table 1 method; for GPT-2 the unembedding is the tied token embedding) or what the final norm
passes on of it (``"final_norm"``: ``γ ⊙ v`` for RMSNorm); each architecture has a default (see
:class:`~actwh.ingest.adapters.Adapter`). Its bottom tokens are the top tokens of ``−v``: what a
gated neuron promotes when its coefficient is negative.

The tokens of every vector at once cost ``n_vectors × vocab × d_model`` (12.6 minutes for Gemma
3 270M's 36,864 vectors and 262,144 tokens on two cores; out of reach at Llama-3-8B's size), and
only the vectors someone looks at need them. So what is stored is the readout ``U`` with
``logits = U · v`` (:func:`readout`; a ``.npy`` file beside the FAISS index, memory-mapped by
readers) and the model's tokens (the ``vocabulary`` table), and the tokens of a vector are read
when a query, a search or a page asks (the SQL function ``vector_tokens``, in numpy).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from actwh.errors import ActwhError
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


UNEMBED = ("raw", "final_norm")


@torch.no_grad()
def top_value_vectors(
    adapter: Adapter,
    direction: np.ndarray,
    k: int,
    per_layer: int | None = None,
    *,
    mean_coefficients: np.ndarray | None = None,
) -> list[tuple[float, int, int]]:
    """The ``k`` neurons that write most toward ``direction``: ``(score, layer, neuron)``.

    The score is the rule of schema.sql's ``reach_cos`` / ``write_cos``: the cosine of the value
    vector with the direction for a GELU MLP (the paper's ranking); for a gated MLP, its absolute
    value (a neuron writes ±v), or — given ``mean_coefficients`` (``[n_layers, d_mlp]``, each
    neuron's mean m in a run) — the cosine of the mean write ``sign(m̄)·cos``.

    ``per_layer`` keeps only each layer's best ``per_layer`` first, as the paper's code does
    (top 100 per layer, then pooled).
    """
    d = torch.as_tensor(direction, dtype=torch.float32, device=adapter.W_U.device)
    cos = torch.stack(
        [
            torch.nn.functional.cosine_similarity(adapter.write_vectors(l).float(), d[None], dim=1)
            for l in range(adapter.n_layers)
        ]
    )  # [n_layers, d_mlp]
    if adapter.gated:
        if mean_coefficients is None:
            cos = cos.abs()
        else:
            cos = cos * torch.as_tensor(np.sign(mean_coefficients), dtype=cos.dtype).to(cos.device)
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
def readout(adapter: Adapter, unembed: str = "raw") -> torch.Tensor:
    """``U`` (``[vocab, d_model]``, float32) with ``U · v`` the logits of what a vector ``v``
    promotes, read ``unembed`` (see the module's docstring): ``W_U``'s columns, or with the final
    norm's gain folded in (and centred, for a LayerNorm, as the norm centres ``v``)."""
    if unembed not in UNEMBED:
        raise ActwhError(f"unembed {unembed!r}: expected one of {', '.join(UNEMBED)}")
    U = adapter.W_U.float().T
    if unembed == "final_norm":
        U = U * adapter.gain(adapter.final_norm).float()
        if adapter.centred_norm:  # (v − mean v)·u = v·(u − mean u)
            U = U - U.mean(dim=1, keepdim=True)
    return U.contiguous()


@torch.no_grad()
def top_tokens(
    adapter: Adapter, vectors: torch.Tensor, k: int, unembed: str = "raw"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids each vector (``[n, d]``) promotes most, and those its negation promotes most:
    two ``[n, k]`` tensors (see the module's docstring for ``unembed``)."""
    U = readout(adapter, unembed)
    top, bottom = [], []
    for chunk in vectors.split(CHUNK):
        logits = chunk.float() @ U.T
        top.append(logits.topk(k, dim=-1).indices)
        bottom.append(logits.topk(k, dim=-1, largest=False).indices)
    return torch.cat(top), torch.cat(bottom)


def store_value_vectors(
    store: Store,
    loaded: LoadedModel,
    *,
    kind: str = "flat",
    unembed: str | None = None,
    replace: bool = False,
    progress: bool = True,
) -> dict:
    """Write every value vector of ``loaded`` to ``value_vectors`` and the model's tokens to
    ``vocabulary`` (one commit), and beside the FAISS index the readout that reads a vector as
    tokens.

    ``unembed`` says how tokens are read (default: the architecture's). Returns the
    ``vector_indexes`` row. If the model's vectors are already stored and ``replace`` is false,
    nothing is done.
    """
    unembed = unembed or loaded.adapter.default_unembed
    U = readout(loaded.adapter, unembed)  # checks unembed
    ensure_registered(store, loaded)
    existing = store.catalog.get("vector_indexes", model=loaded.name)
    if existing is not None and not replace:
        return existing
    adapter = loaded.adapter
    writer = CommitWriter(store, model=loaded.name)
    writer.remove_orphans()
    blocks = []
    for layer in tqdm(
        range(adapter.n_layers), desc=f"value vectors {loaded.name}", disable=not progress
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
    directory = store.root / layout.INDEX_DIR
    directory.mkdir(exist_ok=True)
    path = directory / f"{loaded.name}.faiss"
    vector_index.save(index, path)
    readout_path = directory / f"{loaded.name}.readout.npy"
    tmp = readout_path.with_name(readout_path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, U.cpu().numpy())
    tmp.replace(readout_path)
    writer.commit(replace_tables=("value_vectors", "vocabulary"))
    row = {
        "model": loaded.name,
        "path": store.relative(path),
        "kind": kind,
        "n_vectors": int(index.ntotal),
        "d_mlp": adapter.d_mlp,
        "sha256": sha256_file(path),
        "unembed": unembed,
        "readout": store.relative(readout_path),
        "readout_sha256": sha256_file(readout_path),
        "created_at": now(),
    }
    with store.catalog.begin() as conn:
        store.catalog.delete(conn, "vector_indexes", model=loaded.name)
        store.catalog.insert(conn, "vector_indexes", row)
    return row
