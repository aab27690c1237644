"""Full vectors of chosen sites (``capture``): ``residuals`` (``[d_model]``) and ``mlp_acts``
(``mlp_post``, the neuron coefficients, ``[d_mlp]``), stored as float16 (a row beyond its range
scaled by a power of two: ``vec_scale``) or float32."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from actwh.ingest.kinds.base import CaptureKind, Capturing, RanBatch, Rows
from actwh.ingest.rows import vector_array
from actwh.ingest.scratch import Scratch
from actwh.models.sites import NEURON_SITE

TABLES = ("residuals", "mlp_acts")


def site_table(site: str) -> str:
    """The fact table that holds a site's full vectors."""
    return "mlp_acts" if site == NEURON_SITE else "residuals"


class FullVectors(CaptureKind):
    def __init__(self, sites, layers, dtype: str = "float32", on_overflow: str = "scale"):
        super().__init__([(s, l) for s in sites for l in layers])
        self.dtype, self.on_overflow = dtype, on_overflow
        self.scratch = Scratch()

    def collect(self) -> dict:
        """This batch's vectors per ``(site, layer)``, ``[batch, pos, d]`` (padded layout)."""
        return {key: self.joined(key) for key in self.kept_keys()}

    def rows(self, batch: RanBatch) -> Iterator[Rows]:
        flat = batch.flat
        for (site, layer), x in self.collect().items():
            table = site_table(site)
            where = f"{site} layer {layer}"
            array, used, scale = vector_array(
                flat, x, self.dtype, where, self.on_overflow, self.scratch
            )
            columns = {"prompt": flat.prompt, "pos": flat.pos}
            if table == "residuals":
                columns["site"] = pa.array([site] * len(flat), pa.string())
            columns["vec"], columns["vec_scale"] = array, scale
            yield Rows(table, layer, pa.table(columns), x.shape[-1], used)


def make(run: Capturing) -> FullVectors | None:
    config = run.config
    if not config.capture:
        return None
    options = config.options
    return FullVectors(config.capture, run.layers, options.store_dtype, options.on_overflow)
