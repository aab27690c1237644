"""``actwh serve``: a warehouse in the browser, read-only — a page for any neuron, prompt,
direction and query, rendered on demand from the report's templates (report/templates/).

:func:`make_app` is the Starlette application (``serve/app.py``: routes, errors as pages);
``serve/pages.py`` says what each page shows, reading only what it shows. Importing this package
imports neither (the CLI reads ``serve/options.py`` for ``--help``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from actwh.serve.options import ServeOptions


def make_app(warehouse: str | Path) -> Starlette:
    """The application over ``warehouse`` (see :func:`actwh.serve.app.make_app`)."""
    from actwh.serve.app import make_app as made

    return made(warehouse)


def serve(warehouse: str | Path, options: ServeOptions | None = None) -> None:
    """Serve ``warehouse`` until interrupted (see :func:`actwh.serve.app.serve`)."""
    from actwh.serve.app import serve as run

    run(warehouse, options)
