"""The FAISS index of a model's MLP value vectors: "which value vectors look most like X?"

Vectors are L2-normalised before they are added, so inner product is cosine similarity. The faiss
id of ``MLP.v_i^l`` is ``l * d_mlp + i``. Kinds:

* ``flat`` (default): exact, ``IndexFlatIP``; results equal a brute-force cosine top-k.
* ``ivf``: ``IndexIVFFlat`` with ``4·sqrt(n)`` lists, ``nprobe`` 16 — approximate, for models with
  millions of value vectors.
* ``hnsw``: ``IndexHNSWFlat`` (M = 32), approximate.

The index moves to the GPU when faiss sees one. faiss-cpu compares a batch of queries one by one
unless the batch is at least ``distance_compute_blas_threshold`` (128,000 in faiss 1.15) queries
long; lowering it to 20 makes batched search use BLAS (about 5× faster here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from actwh.errors import ActwhError

KINDS = ("flat", "ivf", "hnsw")
BLAS_THRESHOLD = 20
IVF_NPROBE = 16

faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD


def normalized(vectors: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    faiss.normalize_L2(out)
    return out


def build(vectors: np.ndarray, kind: str = "flat") -> faiss.Index:
    """An index over ``vectors`` (``[n, d]``, any norm); ids are row numbers."""
    if kind not in KINDS:
        raise ActwhError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    n, d = vectors.shape
    data = normalized(vectors)
    index: faiss.Index  # (faiss's stubs lag its Python API: the ignores below are theirs)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    else:
        lists = max(1, min(int(4 * math.sqrt(n)), n // 39))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        ivf.train(data)
        ivf.nprobe = min(IVF_NPROBE, lists)
        index = ivf
    index.add(data)
    return index


def to_bytes(index: faiss.Index) -> bytes:
    """The index as the file ``faiss.read_index`` opens."""
    return faiss.serialize_index(index).tobytes()


def _search_parameters(index: faiss.Index, selector) -> faiss.SearchParameters:
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)  # type: ignore[call-arg]
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
            sel=selector, efSearch=index.hnsw.efSearch
        )
    return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]


@dataclass
class VectorIndex:
    """A loaded index with its id layout.

    ``gpu_index`` (when faiss sees a GPU) answers unrestricted searches; searches restricted to
    some layers use the CPU index, where faiss supports id selectors.
    """

    index: faiss.Index
    d_mlp: int
    gpu_index: faiss.Index | None = None

    @classmethod
    def load(cls, path: Path, d_mlp: int, *, gpu: bool | None = None) -> VectorIndex:
        if not path.is_file():
            raise ActwhError(f"value-vector index {path} is missing; run actwh index-vectors again")
        index = faiss.read_index(str(path))
        if gpu is None:
            gpu = faiss.get_num_gpus() > 0
        return cls(index, d_mlp, faiss.index_cpu_to_all_gpus(index) if gpu else None)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        layers: list[int] | None = None,
        *,
        either_sign: bool = False,
        per_layer: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` value vectors by cosine for each query (``[q, d]``).

        Returns ``(cosine, layer, neuron)``, each ``[q, k]``; restricted to ``layers`` if given.
        ``either_sign`` ranks by ``|cosine|`` (the cosine keeps its sign): a gated neuron writes
        ``+v`` or ``−v``, so a vector pointing against the query can write along it.
        ``per_layer`` keeps each layer's best ``per_layer`` first, then pools them (the
        paper's code: 100).
        """
        if per_layer is not None:
            n_layers = self.index.ntotal // self.d_mlp
            parts = [
                self.search(queries, per_layer, [l], either_sign=either_sign)
                for l in (layers if layers is not None else range(n_layers))
            ]
            scores, layer, neuron = (np.concatenate([p[i] for p in parts], 1) for i in range(3))
            key = -np.abs(scores) if either_sign else -scores
            order = np.argsort(key, axis=1, kind="stable")[:, :k]
            return (
                np.take_along_axis(scores, order, axis=1),
                np.take_along_axis(layer, order, axis=1),
                np.take_along_axis(neuron, order, axis=1),
            )
        queries = normalized(np.atleast_2d(queries))
        if not either_sign:
            scores, ids = self._search(queries, k, layers)
        else:  # v and −v in one search: one pass over the vectors, not two
            n = len(queries)
            both, both_ids = self._search(np.concatenate([queries, -queries]), k, layers)
            scores = np.concatenate([both[:n], -both[n:]], axis=1)
            ids = np.concatenate([both_ids[:n], both_ids[n:]], axis=1)
            order = np.argsort(-np.abs(scores), axis=1, kind="stable")
            scores = np.take_along_axis(scores, order, axis=1)
            ids = np.take_along_axis(ids, order, axis=1)
            # With k near the number of vectors, both searches can return the same one.
            firsts = [np.unique(row, return_index=True)[1] for row in ids]
            keep = np.stack([np.sort(k_)[: scores.shape[1] // 2] for k_ in firsts])
            scores = np.take_along_axis(scores, keep, axis=1)
            ids = np.take_along_axis(ids, keep, axis=1)
        return scores, ids // self.d_mlp, ids % self.d_mlp

    def _search(
        self, queries: np.ndarray, k: int, layers: list[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.index.ntotal)
        if layers is None:
            scores, ids = (self.gpu_index or self.index).search(queries, k)
        else:
            allowed = np.concatenate(
                [np.arange(l * self.d_mlp, (l + 1) * self.d_mlp, dtype=np.int64) for l in layers]
            )
            selector = faiss.IDSelectorBatch(allowed)
            params = _search_parameters(self.index, selector)
            scores, ids = self.index.search(queries, min(k, len(allowed)), params=params)
        return scores, ids
