"""The options of ``actwh demo``: the one declaration of its flags and of
:func:`actwh.study.demo.demo`'s keywords (see ``Options`` in :mod:`actwh.arguments`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from actwh.arguments import Options, option, progress_option


@dataclass
class DemoOptions(Options):
    out: str | None = option(
        None,
        "Directory for the warehouse, the DPO model and the report; a rerun reuses finished "
        "steps.  [default: demo-out, or demo-out-MODEL for another --model]",
    )
    model: Literal["embedded", "gemma3-270m"] = option(
        "embedded",
        "The shipped model studied: SmolLM2-135M-Instruct, or the pretrained Gemma 3 270M.",
    )
    progress: bool = progress_option()
    quick: bool = option(
        False,
        "A small but complete study in minutes (48 prompts, 8 tokens, 4 DPO steps, no sweep): "
        "every table and report section filled, to explore; its numbers are not findings.  "
        "[out: demo-quick]",
    )
    seeds: int = option(
        1,
        "Repeat pairs → DPO → evaluation with this many seeds and report the spread (a rerun "
        "with more seeds adds only the new ones).",
        at_least=1,
    )
    sweep: str | None = option(
        None,
        "Scales of the un-aligning sweep besides the paper's ×10 (each is a variant and its "
        "control, evaluated: about 3 minutes each on SmolLM2 here), e.g. 2,5.  [default: 2,5; "
        "none with --quick]",
    )
