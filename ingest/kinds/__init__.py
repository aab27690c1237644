"""The capture kinds: everything a run can keep from inside the model, one module each (see
:mod:`actwh.ingest.kinds.base` for what a kind declares).

To add a kind (attention patterns, SAE features, ...): write its module here with a ``make``
function, add ``make`` to :data:`KINDS`, and declare its table in ``schema.sql``.
"""

from __future__ import annotations

from actwh.ingest.kinds import lens, neurons, projections, vectors
from actwh.ingest.kinds.base import CaptureKind, Request

# In the order their rows are buffered for a batch.
KINDS = (vectors.make, projections.make, neurons.make_tracked, neurons.make_stats, lens.make)


def kinds_for(request: Request) -> list[CaptureKind]:
    """The kinds ``request`` asks for."""
    return [kind for make in KINDS if (kind := make(request)) is not None]
