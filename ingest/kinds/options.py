"""Each capture kind's options: the fields of ``actwh ingest``'s flags and ``wh.ingest``'s
keywords that belong to one kind (its module in this package reads them from the run's options).
:class:`actwh.ingest.options.IngestOptions` is the run's options plus all of these. Nothing here
imports torch: the CLI builds its flags from these classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from actwh.arguments import option


@dataclass
class VectorOptions:
    """Full vectors of some sites (residuals, mlp_acts): :mod:`actwh.ingest.kinds.vectors`."""

    capture: str | Iterable[str] = option(
        "",
        "Sites whose full vectors are stored: resid_pre, resid_mid, resid_post, "
        "attn_out, mlp_out, mlp_post. Default: none.",
        resume=True,
        metavar="SITES",
    )
    store_dtype: Literal["float16", "float32"] = option(
        "float16", "dtype of stored vectors.", resume=True
    )
    on_overflow: Literal["scale", "float32", "error"] = option(
        "scale",
        "float16 storage of a row with values beyond ±65504: divide it by a power of two (kept "
        "as its vec_scale; readers apply it), store the block as float32, or stop.",
    )


@dataclass
class ProjectionOptions:
    """Projections on the model's directions: :mod:`actwh.ingest.kinds.projections`."""

    project: str | Iterable[str] | None = option(
        None,
        "Residual sites projected on the model's directions. Default: the site the "
        "MLP reads (resid_mid; resid_pre for GPT-NeoX) and resid_post.",
        resume=True,
        metavar="SITES",
    )


@dataclass
class NeuronOptions:
    """Tracked neurons' coefficients (neuron_acts): :mod:`actwh.ingest.kinds.neurons`."""

    track_neurons: str | Iterable[tuple[int, int]] = option(
        "",
        "Store mlp_post coefficients of value vectors: 19:770,12:771 or DIRECTION:K (top K by "
        "cosine, |cosine| for gated MLPs, e.g. toxic_probe:64).",
        resume=True,
        metavar="SPEC",
    )


@dataclass
class LensOptions:
    """The logit lens and target-token probabilities: :mod:`actwh.ingest.kinds.lens`."""

    logit_lens: int = option(
        0,
        "Store the top-K tokens of the logit lens (0: off).",
        resume=True,
        metavar="K",
        at_least=0,
    )
    target_tokens: str | Iterable[str | int] = option(
        "",
        "With --logit-lens: probability of these one-token strings at every layer, e.g. "
        "' crap,#7510'. Not given: a teacher-forced run takes its source run's; else the first "
        "tokens of the model's evaluated continuations scored toxic, else the toxic probe's top "
        "tokens (what the demo does).",
        resume=True,
        metavar="TOKENS",
    )
    lens_at: Literal["last", "all"] = option(
        "last",
        "Logit lens at the last prompt token (what predicts the first generated token) or at all.",
        resume=True,
    )
