"""Named queries: one ``queries/NAME.sql`` file per analysis, with a header that documents it.

An analysis SQL cannot express at a sensible cost (a bootstrap over vectors) is a Python function
with the same header, listed in a module's ``ANALYSES`` (see :data:`PYTHON_MODULES`); it is named,
documented, bound and run exactly as a SQL one (``actwh query``, ``wh.query``).

Header lines (SQL comments at the top of the file)::

    -- name: activation_drop
    -- answers: what the query answers
    -- paper: the table or figure it reproduces
    -- needs: what must be in the warehouse first
    -- param base_run: a required parameter
    -- param n = 5: an optional one, with a JSON default

Parameters are bound by DuckDB as ``$name`` — never formatted into the SQL — and every ``$name``
the SQL uses must be declared (checked when the file is loaded).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from actwh.arguments import check_range
from actwh.errors import ActwhError, BadInput, NotFound

_HEADER = re.compile(r"^--\s*(name|answers|paper|needs):\s*(.*)$")
# A default is JSON: a quoted string (which may hold a colon) or a bare value.
_PARAM = re.compile(r'^--\s*param\s+(\w+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|.+?))?\s*:\s*(.*)$')
_USED = re.compile(r"\$([A-Za-z_]\w*)")
_REQUIRED = object()
PYTHON_MODULES = (
    "actwh.queries.offset_intervals",
    "actwh.queries.selectivity",
    "actwh.queries.decomposition",
)


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    default: object = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class NamedQuery:
    name: str
    answers: str
    paper: str
    needs: str
    sql: str
    params: tuple[Param, ...] = field(default_factory=tuple)
    run: Callable | None = None  # a Python analysis: run(sql, **params) -> polars.DataFrame

    def bind(self, given: dict) -> dict:
        """Defaults filled in; unknown or missing parameters are an error naming the valid ones."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise NotFound(
                f"query {self.name} has no parameter {unknown[0]!r}; "
                f"its parameters: {self.signature()}"
            )
        missing = [p.name for p in self.params if p.required and p.name not in given]
        if missing:
            raise ActwhError(
                f"query {self.name} needs {', '.join(missing)}; its parameters: {self.signature()}"
            )
        for p in self.params:  # null is a value only where it is the default ("none")
            value = given.get(p.name, p.default)
            if value is None and p.default is not None:
                raise ActwhError(
                    f"query {self.name}: parameter {p.name} cannot be null; "
                    f"its parameters: {self.signature()}"
                )
            _check_number(self.name, p, value)
        return {p.name: given.get(p.name, p.default) for p in self.params}

    def signature(self) -> str:
        return ", ".join(
            p.name if p.required else f"{p.name}={json.dumps(p.default)}" for p in self.params
        )


def _header(text: str) -> tuple[dict[str, str], tuple[Param, ...]]:
    header: dict[str, str] = {}
    params = []
    for line in text.strip().splitlines():
        if not line.startswith("--"):
            break
        if match := _PARAM.match(line):
            pname, default, description = match.groups()
            value = _REQUIRED if default is None else json.loads(default)
            params.append(Param(pname, description.strip(), value))
        elif match := _HEADER.match(line):
            header[match.group(1)] = match.group(2).strip()
    return header, tuple(params)


# The range of the numeric parameters the named queries share: a name means one thing in all of
# them (a count is at least 1, resamples and positions at least 0). Every number must be finite,
# and a parameter whose default is a number takes a number.
BOUNDS = {
    "k": {"at_least": 1},
    "n": {"at_least": 1},
    "bins": {"at_least": 1},
    "min_prompts": {"at_least": 1},
    "replicates": {"at_least": 0},
    "permutations": {"at_least": 0},
    "window": {"at_least": 0},
    "from_pos": {"at_least": 0},
    "seed": {"at_least": 0},
    "t_cut": {"at_least": 0},
}


def _check_number(query: str, param: Param, value) -> None:
    numeric = isinstance(param.default, int | float) and not isinstance(param.default, bool)
    if not numeric or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"query {query}: parameter {param.name} expects a number, got {value!r}")
    try:
        check_range(param.name, value, BOUNDS.get(param.name, {}))
    except BadInput as error:
        raise BadInput(f"query {query}: {error.template}") from None


def _named(header: dict, params: tuple, **body) -> NamedQuery:
    return NamedQuery(
        name=header["name"],
        answers=header.get("answers", ""),
        paper=header.get("paper", ""),
        needs=header.get("needs", ""),
        params=params,
        **body,
    )


def parse(name: str, text: str) -> NamedQuery:
    header, params = _header(text)
    if header.get("name") != name:
        raise ValueError(f"queries/{name}.sql declares name {header.get('name')!r}")
    used = set(_USED.findall(text))
    declared = {p.name for p in params}
    if used != declared:
        raise ValueError(f"queries/{name}.sql uses {sorted(used)} but declares {sorted(declared)}")
    return _named(header, params, sql=text)


def parse_python(text: str, function: Callable) -> NamedQuery:
    """A Python analysis: ``function(sql, **params)``, its header in ``text``."""
    header, params = _header(text)
    takes = list(inspect.signature(function).parameters)[1:]
    if "name" not in header or takes != [p.name for p in params]:
        raise ValueError(
            f"{function.__qualname__} takes {takes} but its header declares "
            f"{[p.name for p in params]} (name {header.get('name')!r})"
        )
    return _named(header, params, sql="", run=function)


@cache
def named_queries() -> dict[str, NamedQuery]:
    found = {}
    for entry in sorted(files("actwh.queries").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            name = entry.name[: -len(".sql")]
            found[name] = parse(name, entry.read_text())
    for module in PYTHON_MODULES:
        for text, function in importlib.import_module(module).ANALYSES:
            named = parse_python(text, function)
            found[named.name] = named
    return dict(sorted(found.items()))


def named_query(name: str) -> NamedQuery:
    queries = named_queries()
    if name not in queries:
        raise NotFound(f"no query {name!r}; named queries: {', '.join(queries)}")
    return queries[name]
