"""``projections``: the dot product and cosine of residual sites (``project``) with every
direction of the model, computed on the device so only two numbers per direction leave it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from actwh.ingest.kinds.base import CaptureKind, RanBatch, Request, Rows
from actwh.ingest.rows import long_table, strings
from actwh.models.sites import RESIDUAL_SITES

TABLES = ("projections",)


class Projections(CaptureKind):
    buffers = ("dots", "norms")

    def __init__(self, sites, layers, names: list[str], vectors: torch.Tensor):
        super().__init__([(s, l) for s in sites for l in layers])
        self.names, self.vectors = names, vectors  # [n, d_model] on the device
        self.norms = vectors.norm(dim=-1)

    def on(self, key, x: torch.Tensor) -> None:
        # Hooks run ~60 times per forward call: only the ops that must see x now.
        x32 = x.float()
        self.keep(key, x32 @ self.vectors.T, "dots")
        self.keep(key, torch.linalg.vector_norm(x32, dim=-1, keepdim=True), "norms")

    def rows(self, batch: RanBatch) -> Iterator[Rows]:
        flat, n = batch.flat, len(self.names)
        for key in self.kept_keys():
            dots = self.joined(key, "dots")
            cos = dots / (self.joined(key, "norms") * self.norms).clamp_min(1e-12)
            columns = {
                "site": strings(key[0], len(flat) * n),
                "direction": pa.array(self.names * len(flat), pa.string()),
                "dot": flat.take(dots).reshape(-1).cpu().numpy(),
                "cos": flat.take(cos).reshape(-1).cpu().numpy(),
            }
            yield Rows("projections", key[1], long_table(flat, n, columns))


def make(request: Request) -> Projections | None:
    sites = [s for s in request.project if s in RESIDUAL_SITES]
    if not request.directions or not sites:
        return None
    names = sorted(request.directions)
    vectors = np.stack([request.directions[n] for n in names])
    return Projections(sites, request.layers, names, torch.tensor(vectors, device=request.device))
