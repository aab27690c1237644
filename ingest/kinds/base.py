"""What every capture kind is: the hook points it reads, what its hook keeps, the rows it writes.

A *capture kind* is one thing a run can keep from inside the model (full vectors, projections on
directions, tracked neurons, neuron statistics, the logit lens). Its module declares:

* ``make(capturing)``: the kind for a run (:class:`Capturing`), or ``None`` when the run does
  not ask for it;
* ``keys()``: the hook points it reads, ``(site, layer)``;
* ``on(key, x)``: what the hook keeps of ``x`` (``[batch, pos, ...]``, on the device) during one
  forward call — a batch makes one call for the prompt, then one per generated token. It only
  keeps: hooks run at every layer of every call, so work on what was kept (projections,
  statistics) is done in ``rows`` (or ``flush``), once over all layers and calls;
* ``flush()``: that work on what was kept so far, before the batch ends (to bound memory);
* ``rows(batch)``: the fact-table rows of one batch (padding dropped), as :class:`Rows`;
* ``before_commit()``: rows it accumulates over several batches (statistics), once per commit.

A new kind is one module here, listed in :data:`actwh.ingest.kinds.registry.KINDS`, with its
options in :mod:`actwh.ingest.kinds.options` and its table in ``schema.sql``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from actwh.ingest.generate import Ran
from actwh.ingest.options import RunConfig
from actwh.ingest.rows import Flat, TokenText
from actwh.models.adapters import Adapter

Key = tuple[str, int]  # (site, layer)


@dataclass
class Capturing:
    """What a run captures, as each kind's ``make`` reads it: the run's config (its options and
    what they resolved to against the model), the model's shapes, the direction vectors and each
    prompt's arm."""

    adapter: Adapter
    config: RunConfig
    directions: dict[str, np.ndarray] = field(default_factory=dict)  # config.directions' vectors
    arms: dict[int, str] = field(default_factory=dict)  # prompt → arm (plain if not listed)

    @property
    def layers(self) -> list[int]:
        return self.config.layers or []

    @property
    def device(self) -> torch.device:
        return self.adapter.W_U.device


@dataclass
class RanBatch:
    """One batch, run: what a kind needs to turn what it kept into rows."""

    ran: Ran
    flat: Flat  # every real position of the batch
    prompts: list[int]  # prompt id of each row
    last: torch.Tensor  # [batch]: column of each row's last prompt token
    text: TokenText


@dataclass
class Rows:
    """Rows for one partition of one fact table."""

    table: str
    layer: int | None
    rows: pa.Table
    vector_size: int | None = None
    dtype: str | None = None  # the stored dtype of vectors, when it differs from the asked one


class CaptureKind:
    """Base of the capture kinds: what the hook kept, per buffer (a kind may keep several things
    per call, e.g. dots and norms) and per key, emptied at every batch."""

    buffers: tuple[str, ...] = ("kept",)

    def __init__(self, keys: list[Key]):
        self._keys = list(dict.fromkeys(keys))
        self.parts: dict[str, dict[Key, list[torch.Tensor]]] = {
            buffer: {key: [] for key in self._keys} for buffer in self.buffers
        }

    def keys(self) -> list[Key]:
        return self._keys

    def start_batch(self, last: torch.Tensor | None = None) -> None:
        for buffer in self.parts.values():
            for parts in buffer.values():
                parts.clear()

    def keep(self, key: Key, x: torch.Tensor, buffer: str = "kept") -> None:
        self.parts[buffer][key].append(x)

    def on(self, key: Key, x: torch.Tensor) -> None:
        self.keep(key, x)

    def flush(self) -> None:
        """Do now the work on what was kept that ``rows`` would otherwise do (nothing here)."""

    def kept_keys(self) -> list[Key]:
        """The keys whose hook ran this batch."""
        return [key for key, parts in self.parts[self.buffers[0]].items() if parts]

    def joined(self, key: Key, buffer: str = "kept") -> torch.Tensor:
        """What the hook kept at ``key`` this batch, along the sequence axis."""
        parts = self.parts[buffer][key]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def rows(self, batch: RanBatch) -> Iterator[Rows]:
        raise NotImplementedError

    def before_commit(self) -> Iterator[Rows]:
        return iter(())
