"""The options of ``actwh report``: the one declaration of its flags and of
:func:`actwh.report.write`'s keywords (see ``Options`` in :mod:`actwh.arguments`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from actwh.arguments import Options, option, progress_option


@dataclass
class ReportOptions(Options):
    """What the report shows; every value given must be in the warehouse, the rest is chosen
    from it."""

    out: str | Path = option("report.html", "The HTML page to write.", aliases=("-o",))
    base_run: str | None = option(None, "Default: the source of the first teacher-forced run.")
    tuned_run: str | None = option(None, "Default: the first teacher-forced run.")
    direction: str | None = option(
        None, "The direction the figures are about (default: toxic_probe)."
    )
    token: str | None = option(None, "Logit-lens target token (default: the first one stored).")
    layer: int | None = option(
        None, "Layer for Figures 4 and 5 (default: the top toxic vector's).", at_least=0
    )
    scorer: str = option("profanity", "The scorer whose evaluations the tables show.")
    neurons: str | Iterable[tuple[int, int] | str] = option(
        (), "Add a page for each of these neurons.", metavar="L:I"
    )
    prompts: str | Iterable[int | str] = option(
        (), "Add a token view of each of these prompts.", metavar="N"
    )
    force: bool = option(False, "Replace OUT even if it is not an earlier report.")
    progress: bool = progress_option()
