"""The Starlette application of ``actwh serve``: a route per page, each a few lines that read the
request, ask ``serve/pages.py`` and render a template of ``report/templates/``.

Read-only by construction: the warehouse is opened without ``create`` and every query goes
through its read-only snapshot; only GET is routed. A name or number that is not in the warehouse
is a 404 page naming it (``NotFound``), bad input a 400 page (``ActwhError``); anything else is a
500 page with no traceback. One warehouse serves every request of a process, one request at a
time (DuckDB's connection is not shared across threads); ``--workers N`` runs N processes, each
with its own view, so N pages are built at once. A process's products stay on one thread: FAISS's
OpenMP threads, left at two, spun against DuckDB's (a neuron page 1.7× slower), and OpenBLAS's
threads took a third of a page's CPU time waiting for work (numpy's product with the readout).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

import actwh
from actwh.errors import ActwhError, BadInput, NotFound
from actwh.report.templates import render
from actwh.serve import pages
from actwh.serve.options import ServeOptions

if TYPE_CHECKING:
    from actwh.api.warehouse import Warehouse


def make_app(warehouse: str | Path) -> Starlette:
    """The application over ``warehouse`` (a directory or a bucket URI), opened now."""
    import faiss

    wh = _opened(warehouse)
    lock = threading.Lock()

    def page(template: str, build: Callable[[Warehouse], dict]) -> Response:
        """``template`` with what ``build`` reads from the warehouse (one request at a time)."""
        with lock:
            faiss.omp_set_num_threads(1)  # OpenMP's setting is per thread: this request's
            try:
                values = build(wh)
            except NotFound as error:
                return _error(404, str(error))
            except ActwhError as error:
                return _error(400, str(error))
        return HTMLResponse(render(template, **values))

    def home(request: Request) -> Response:
        return page("home.html", pages.home)

    def neuron(request: Request) -> Response:
        p, q = request.path_params, request.query_params
        runs = {k: q.get(k) for k in ("base_run", "tuned_run", "direction")}
        return page(
            "page.html", lambda w: pages.neuron(w, p["model"], p["layer"], p["neuron"], **runs)
        )

    def prompt(request: Request) -> Response:
        p, q = request.path_params, request.query_params
        return page(
            "page.html",
            lambda w: pages.prompt(
                w,
                p["run"],
                p["prompt"],
                layer=_int(q, "layer"),
                direction=q.get("direction"),
                neuron=q.get("neuron"),
            ),
        )

    def search(request: Request) -> Response:
        q = request.query_params
        given = {key: q.get(key) for key in ("direction", "model", "neuron", "vector")}
        k = lambda: min(max(_int(q, "k") or 20, 1), 1000)  # noqa: E731
        return page("page.html", lambda w: pages.search(w, **given, k=k()))

    def direction(request: Request) -> Response:
        return page("page.html", lambda w: pages.search(w, direction=request.path_params["name"]))

    def findings(request: Request) -> Response:
        return page("page.html", pages.findings)

    def sql(request: Request) -> Response:
        q = request.query_params
        query = q.get("q", "").strip()
        if not query:
            return HTMLResponse(render("sql.html", title="SQL", query="", table="", rows="[]"))
        return page("sql.html", lambda w: pages.sql(w, query, max(_int(q, "page") or 0, 0)))

    def download(request: Request) -> Response:
        query, fmt = request.query_params.get("q", ""), request.path_params["format"]
        with lock:
            try:
                frame = wh.sql(query)
            except ActwhError as error:
                return _error(400, str(error))
        buffer = io.BytesIO()
        if fmt == "csv":
            frame.write_csv(buffer)
            kind = "text/csv"
        else:
            frame.write_parquet(buffer)
            kind = "application/vnd.apache.parquet"
        headers = {"Content-Disposition": f'attachment; filename="result.{fmt}"'}
        return Response(buffer.getvalue(), media_type=kind, headers=headers)

    def query(request: Request) -> Response:
        name, given = request.path_params["name"], dict(request.query_params)
        return page("query.html", lambda w: pages.named_query(w, name, given))

    def vega(request: Request) -> Response:
        return Response(_bundle(), media_type="text/javascript")

    def missing(request: Request, exc) -> Response:
        return _error(404, f"no page {request.url.path}")

    def failed(request: Request, exc) -> Response:
        return _error(500, "the server failed on this page (see its log)")

    routes = [
        Route("/", home),
        Route("/neuron/{model}/{layer:int}/{neuron:int}", neuron),
        Route("/prompt/{run}/{prompt:int}", prompt),
        Route("/search", search),
        Route("/direction/{name}", direction),
        Route("/findings", findings),
        Route("/sql", sql),
        Route("/sql.{format:str}", download),
        Route("/query/{name}", query),
        Route("/static/vega.js", vega),
    ]
    return Starlette(routes=routes, exception_handlers={404: missing, 500: failed})


def _int(query: QueryParams, name: str) -> int | None:
    """Query parameter ``name`` as a whole number (None where it is not given)."""
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise BadInput(f"{name} {text!r}: expected a whole number") from None


def _error(status: int, message: str) -> Response:
    title = {404: "Not found", 400: "Bad input", 500: "Server error"}[status]
    return HTMLResponse(render("error.html", title=title, message=message), status_code=status)


@cache
def _bundle() -> str:
    """Vega, Vega-Lite and vega-embed (vl-convert's bundle): charts render offline."""
    import vl_convert

    return vl_convert.javascript_bundle()  # type: ignore[call-arg]


_WAREHOUSE = "ACTWH_SERVE_WAREHOUSE"  # the warehouse, for each worker process


def app_of_environment() -> Starlette:
    """The application each worker process makes (``--workers`` above 1)."""
    _one_blas_thread()
    return make_app(os.environ[_WAREHOUSE])


def serve(warehouse: str | Path, options: ServeOptions | None = None) -> None:
    """Serve ``warehouse`` until interrupted."""
    import uvicorn

    o = options or ServeOptions()
    _one_blas_thread()
    app: Starlette | str
    if o.workers == 1:
        app = make_app(warehouse)
    else:  # each worker process makes its own; a warehouse that cannot be read: one line, now
        _opened(warehouse).close()
        os.environ[_WAREHOUSE] = str(warehouse)
        app = f"{__name__}:{app_of_environment.__name__}"
    uvicorn.run(
        app,
        factory=o.workers > 1,
        workers=o.workers,
        host=o.host,
        port=o.port,
        log_level="warning",
    )


def _opened(warehouse: str | Path) -> Warehouse:
    """``warehouse`` opened and read once: one that cannot be read fails here, not on a page."""
    wh = actwh.open(warehouse)
    wh.sql("select 1")
    return wh


def _one_blas_thread() -> None:
    """OpenBLAS on one thread in this (server) process: see the module's docstring."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
