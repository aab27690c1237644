"""``projections``: the dot product and cosine of residual sites (``project``) with every
direction of the model, computed on the device so only two numbers per direction leave it.

The hooks only keep the residual tensors; they are projected all at once — every site, layer and
forward call of the batch in one matmul — when the batch ends, or earlier once what is kept
passes :data:`FLUSH_BYTES` (a long prompt on a large model)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from actwh.ingest.kinds.base import CaptureKind, Capturing, RanBatch, Rows
from actwh.ingest.rows import long_table, strings
from actwh.ingest.scratch import Scratch
from actwh.models.sites import RESIDUAL_SITES

TABLES = ("projections",)

FLUSH_BYTES = 128 << 20  # residuals kept before they are projected


class Projections(CaptureKind):
    buffers = ("dots", "norms", "x")

    def __init__(self, sites, layers, names: list[str], vectors: torch.Tensor):
        super().__init__([(s, l) for s in sites for l in layers])
        self.names, self.vectors = names, vectors  # [n, d_model] on the device
        self.norms = vectors.norm(dim=-1)
        self.kept_bytes = 0
        self.scratch = Scratch()  # the stack

    def on(self, key, x: torch.Tensor) -> None:
        self.keep(key, x, "x")
        self.kept_bytes += x.nbytes
        if self.kept_bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Project every residual kept since the last flush: the keys' tensors stacked (those of
        one shape together: all of them, unless a flush came mid-call), one matmul, one norm."""
        groups: dict[tuple[int, ...], list] = {}
        for key, parts in self.parts["x"].items():
            if parts:
                shape = (*parts[0].shape[:1], sum(p.shape[1] for p in parts), parts[0].shape[2])
                groups.setdefault(shape, []).append(key)
        for (batch, width, d), keys in groups.items():
            first = self.parts["x"][keys[0]][0]
            x = self.scratch.get((len(keys), batch, width, d), first.dtype, first.device)
            for k, key in enumerate(keys):
                torch.cat(self.parts["x"][key], dim=1, out=x[k])
            x32 = x.reshape(-1, d).float()
            dots = (x32 @ self.vectors.T).reshape(len(keys), batch, width, -1)
            norms = torch.linalg.vector_norm(x32, dim=-1).reshape(len(keys), batch, width, 1)
            for k, key in enumerate(keys):
                self.keep(key, dots[k], "dots")
                self.keep(key, norms[k], "norms")
        for parts in self.parts["x"].values():
            parts.clear()
        self.kept_bytes = 0

    def start_batch(self, last: torch.Tensor | None = None) -> None:
        super().start_batch(last)
        self.kept_bytes = 0

    def rows(self, batch: RanBatch) -> Iterator[Rows]:
        self.flush()
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


def make(run: Capturing) -> Projections | None:
    sites = [s for s in run.config.project if s in RESIDUAL_SITES]
    if not run.directions or not sites:
        return None
    names = sorted(run.directions)
    vectors = np.stack([run.directions[n] for n in names])
    return Projections(sites, run.layers, names, torch.tensor(vectors, device=run.device))
