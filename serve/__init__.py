"""``actwh serve``: a warehouse in the browser, read-only — a page for any neuron, prompt,
direction and query, rendered on demand from the report's templates (report/templates/).

:func:`make_app` is the Starlette application (``serve/app.py``: routes, errors as pages);
``serve/pages.py`` says what each page shows, reading only what it shows.
"""

from actwh.serve.app import make_app, serve

__all__ = ["make_app", "serve"]
