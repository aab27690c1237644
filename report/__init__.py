"""The report: the paper's figures and tables, computed from a warehouse, as one HTML page.

>>> import actwh, actwh.report
>>> actwh.report.write(actwh.open("wh"), out="report.html", neurons=[(19, 770)])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from actwh.arguments import items, layer_neuron, takes_options
from actwh.errors import BadInput, arg
from actwh.report.options import ReportOptions

if TYPE_CHECKING:
    from actwh.api.warehouse import Warehouse
    from actwh.report.build import Written


@takes_options(ReportOptions)
def write(
    wh: Warehouse,
    options: ReportOptions | None = None,
    *,
    first: Sequence[tuple] = (),
    **overrides,
) -> Written:
    """Write the report of ``wh`` (see :class:`ReportOptions`): one offline HTML page (and a
    PNG per chart beside it), with a page per top value vector of the direction and a
    token-by-token view of the prompts tuning changed most; ``neurons`` (``[(19, 770)]`` or
    ``"19:770"``) and ``prompts`` add more. ``first``: sections a caller puts before the
    paper's, ``(key, title, build)`` with ``build(wh, plan)`` as in :mod:`actwh.report.build`
    (the study's findings). Returns the ``page``, the ``charts`` and the ``plan``. An existing
    file is replaced when it is an actwh report (and its charts), otherwise only with
    ``force``."""
    from actwh.report.build import make_plan, report_files, write_report

    o = ReportOptions.given(options, overrides)
    report_files(o.out, o.force)
    plan = make_plan(
        wh,
        base_run=o.base_run,
        tuned_run=o.tuned_run,
        direction=o.direction,
        token=o.token,
        layer=o.layer,
        scorer=o.scorer,
        neurons=[layer_neuron(n, "neurons") for n in items(o.neurons)],
        prompts=[_number(n, "prompts") for n in items(o.prompts)],
    )
    return write_report(wh, o.out, plan, o.force, o.progress, first)


def _number(spec: int | str, option: str) -> int:
    try:
        return int(spec)
    except ValueError:
        raise BadInput(f"{arg(option)} {spec!r}: expected a number") from None
