"""Which capture kinds a run asks for, in the order their rows are buffered for a batch."""

from __future__ import annotations

from actwh.ingest.kinds import lens, neurons, projections, vectors
from actwh.ingest.kinds.base import CaptureKind, Capturing

KINDS = (vectors.make, projections.make, neurons.make_tracked, neurons.make_stats, lens.make)


def kinds_for(run: Capturing) -> list[CaptureKind]:
    """The kinds ``run`` asks for."""
    return [kind for make in KINDS if (kind := make(run)) is not None]
