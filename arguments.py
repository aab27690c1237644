"""Arguments checked against their annotations, so a wrong type is one line naming the argument.

``wh.ingest(model, generate="5")`` would otherwise fail deep inside with a bare ``TypeError``, and
``layers=True`` would quietly mean layer 1. :func:`checks_arguments` makes every public method of
a class check what it is given against its annotations first. The annotations this understands
are the ones the API uses: classes, ``X | Y``, ``None``, ``Literal[...]``, ``Iterable[X]``,
``list[X]``, ``tuple[X, Y]``, ``dict``; a name only imported for type checkers (``LoadedModel``)
is not checked. ``int`` never accepts a bool; ``float`` accepts an int.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterable

from actwh.errors import ActwhError, arg


def checks_arguments(cls: type) -> type:
    """Class decorator: every public method of ``cls`` checks its arguments' types."""
    for name, method in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(method):
            setattr(cls, name, _checked(method))
    return cls


def check(name: str, value, hint) -> None:
    """Raise naming ``name`` when ``value`` does not fit the annotation ``hint``."""
    if not matches(value, hint):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ActwhError(
            f"{arg(name)}: expected {describe(hint)}, got {type(value).__name__} {shown}"
        )


def matches(value, hint) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (see the module's docstring)."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, h) for h in params)
    if origin is typing.Literal:
        return value in params
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (list, set, tuple, Iterable) or hint in (list, set, tuple, Iterable):
        return _matches_items(value, origin or hint, params)
    if isinstance(hint, type):
        return isinstance(value, hint)
    if origin is not None and isinstance(origin, type):
        return isinstance(value, origin)
    return True  # an annotation this does not understand is not checked


def _matches_items(value, container, params) -> bool:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return False
    if container is not Iterable and not isinstance(value, container):
        return False
    if not isinstance(value, list | tuple | set | frozenset | range):
        return True  # a generator is not consumed to check it
    if container is tuple and params and params[-1] is not Ellipsis:
        return len(value) == len(params) and all(map(matches, value, params))
    item = params[0] if params else typing.Any
    return all(matches(v, item) for v in value)


def describe(hint) -> str:
    """An annotation as a reader would say it: ``int``, ``str or None``, ``a list of str``."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(h) for h in params)
    if origin is typing.Literal:
        return " or ".join(repr(p) for p in params)
    if origin is tuple and params:
        return f"a tuple ({', '.join(describe(p) for p in params if p is not Ellipsis)})"
    if origin in (list, set, Iterable):
        return f"a list of {describe(params[0])}" if params else "a list"
    return getattr(hint, "__name__", str(hint))


def _checked(method: Callable) -> Callable:
    signature = inspect.signature(method)
    hints: dict | None = None

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        nonlocal hints
        if hints is None:
            hints = _hints(method, signature)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:  # an unknown keyword, a missing argument
            raise ActwhError(f"{method.__name__}: {error}") from None
        for name, value in bound.arguments.items():
            if name in hints:
                check(name, value, hints[name])
        return method(*args, **kwargs)

    return wrapper


def _hints(method: Callable, signature: inspect.Signature) -> dict:
    """Each parameter's annotation, evaluated in the method's module; one that names a type
    imported only for type checkers is left out."""
    namespace = vars(sys.modules[method.__module__])
    hints = {}
    for name, parameter in signature.parameters.items():
        annotation = parameter.annotation
        if annotation is inspect.Parameter.empty or parameter.kind is parameter.VAR_KEYWORD:
            continue
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except NameError:
            continue
    return hints
