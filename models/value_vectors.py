"""MLP value vectors read from a model's weights: which neurons write most toward a direction,
and which tokens a vector promotes.

``MLP.v_i^l`` is row i of ``W_out`` (``[d_mlp, d_model]``); where a norm follows the MLP, it is
the direction it writes into the residual stream, ``γ ⊙ v_i``
(:meth:`~actwh.models.adapters.Adapter.write_vectors`). Its top tokens are those with the
highest logit ``W_U[:, w] · u``, where ``u`` is ``v`` itself (``unembed="raw"``: the paper's
Table 1 method; for GPT-2 the unembedding is the tied token embedding) or what the final norm
passes on of it (``"final_norm"``: ``γ ⊙ v`` for RMSNorm); each architecture has a default (see
:class:`~actwh.models.adapters.Adapter`). Its bottom tokens are the top tokens of ``−v``: what a
gated neuron promotes when its coefficient is negative. Storing and indexing them in a
warehouse is :mod:`actwh.ingest.value_index`.
"""

from __future__ import annotations

import numpy as np
import torch

from actwh.errors import ActwhError
from actwh.models.adapters import Adapter

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
