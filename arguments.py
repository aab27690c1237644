"""Arguments: checked against their annotations, so a wrong type is one line naming the argument;
and the two spellings every command shares, layers (``10-20``) and name lists (``a,b``), parsed
the same way for the CLI's strings and the library's Python values. Nothing here imports torch.

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
import json
import operator
import sys
import types
import typing
from collections.abc import Callable, Iterable

import numpy as np

from actwh.errors import BadInput, arg


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
        raise BadInput(
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
    if hint is int:  # numpy's integers too (a count read from an array)
        return isinstance(value, int | np.integer) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        )
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
    if isinstance(value, range):
        return matches(0, params[0]) if params else True  # its items are ints, however many
    if not isinstance(value, list | tuple | set | frozenset):
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
            raise BadInput(f"{method.__name__}: {error}") from None
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


def exactly_one(**choices) -> str:
    """The name of the one argument among ``choices`` that is given (not None); anything else
    is an error naming them all."""
    given = [name for name, value in choices.items() if value is not None]
    if len(given) != 1:
        raise BadInput("give exactly one of " + ", ".join(arg(name) for name in choices))
    return given[0]


def utf8(raw: bytes, where: str) -> str:
    """``raw`` as text (a byte-order mark dropped), or one line naming ``where`` and the line of
    the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise BadInput(
            f"{where}:{line}: not valid UTF-8 text (byte 0x{raw[error.start]:02x})"
        ) from None


def check_text(where: str, text) -> None:
    """Refuse a string that cannot be UTF-8 (a command line's undecodable bytes, a lone
    surrogate from JSON): one line naming ``where``, not an encoder's traceback later."""
    check(where, text, str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadInput(
            f"{where}: not valid UTF-8 text (character {error.start}: {text[error.start]!r})"
        ) from None


def names(spec: str | Iterable[str]) -> list[str]:
    """Names given as one comma list, or as an iterable of names or comma lists (what a CLI
    option that repeats, ``--run a --run b,c``, hands over): ``["a", "b", "c"]``."""
    given = [spec] if isinstance(spec, str) else list(spec)
    return [n.strip() for item in given for n in item.split(",") if n.strip()]


def items(spec: str | Iterable | None) -> list:
    """A comma list as its names (:func:`names`), or an iterable's items as they are
    (``[(19, 770)]``, ``[0, 3]``); ``None`` is none."""
    if spec is None:
        return []
    return names(spec) if isinstance(spec, str) else list(spec)


def layer_spans(
    spec: str | int | Iterable[int] | None, option: str = "layers"
) -> list[tuple[int, int]] | None:
    """The layers ``spec`` names as inclusive spans, without the model: ``None`` for all. Bad
    syntax and negative layers are refused here, before any model loads."""
    if isinstance(spec, str) and not spec.strip():
        raise BadInput(f"{arg(option)}: no layer given; 'all', a layer like 19, or 10-20")
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return None
    if isinstance(spec, str):
        spans = [_span(part.strip(), spec, option) for part in spec.split(",")]
    elif isinstance(spec, range):  # its ends bound it: they are checked before it is expanded
        spans = [(spec[0], spec[0]), (spec[-1], spec[-1])] if len(spec) else []
    else:
        items = list(spec) if isinstance(spec, Iterable) else [spec]
        spans = [(_layer(item, option),) * 2 for item in items]
    if not spans:
        raise BadInput(f"{arg(option)}: no layer given")
    for lo, _ in spans:
        if lo < 0:
            raise BadInput(f"{arg(option)}: layer {lo} is out of range (layers are 0-based)")
    return spans


def parse_layers(
    spec: str | int | Iterable[int] | None, n_layers: int, option: str = "layers"
) -> list[int]:
    """``None``/``all``, a layer (``19``), a list or range of layers, or the CLI's ``10-20``
    (inclusive) and comma lists of those; 0-based. Each layer is checked before any range is
    expanded, so ``0-999999999`` or ``range(10**12)`` is refused at once."""
    spans = layer_spans(spec, option)
    if spans is None:
        return list(range(n_layers))
    for lo, hi in spans:
        for layer in (lo, hi):
            if not 0 <= layer < n_layers:
                raise BadInput(
                    f"{arg(option)}: layer {layer} is out of range; the model has {n_layers} "
                    f"layers (0-{n_layers - 1})"
                )
    if isinstance(spec, range):
        return sorted(set(spec))
    return sorted({layer for lo, hi in spans for layer in range(lo, hi + 1)})


def _span(part: str, spec: str, option: str) -> tuple[int, int]:
    """One item of the CLI's layer list: ``19`` or ``10-20``."""
    try:
        if "-" in part[1:]:
            lo, hi = (int(x) for x in part.split("-", 1))
            if lo > hi:
                raise ValueError
            return lo, hi
        return int(part), int(part)
    except ValueError:
        raise BadInput(
            f"{arg(option)} {spec!r}: expected 'all', a layer like 19, a range like 10-20, "
            "or a comma list of those"
        ) from None


def _layer(item, option: str) -> int:
    """A layer given as a Python value: an int (not a bool, not 1.5)."""
    if isinstance(item, bool) or not isinstance(item, int | np.integer):
        raise BadInput(f"{arg(option)}: {item!r} is not a layer number (0-based int)")
    return int(item)


# ---- options declared once -----------------------------------------------------------------
#
# A command's options dataclass (a subclass of :class:`Options`, kept beside the code that runs
# the command: ``EvaluateOptions`` in train/evaluate.py) is the one declaration of its options:
# each field's annotation (``Literal[...]`` for a choice), default and ``option(...)`` metadata
# (help text, whether a resumed run must match it) make the CLI's flags (:mod:`actwh.cli.flags`),
# the keywords of the ``Warehouse`` method that takes them (:func:`takes_options`) and the
# resume check (:func:`resume_keys`). The method passes the dataclass whole to the engine.


class Options:
    """Base of a command's options dataclass: a value that does not fit its field's annotation,
    a number outside its field's declared range (``option(..., at_least=1)``) or not finite, or
    a required field left ``None``, is refused at construction, naming the field — before any
    model loads or file is written."""

    def __post_init__(self) -> None:
        for f, hint in option_fields(type(self)):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("required"):
                raise BadInput(f"{arg(f.name)} is required")
            check(f.name, value, hint)
            check_range(f.name, value, f.metadata.get("range", {}))
            if isinstance(value, np.generic):  # numpy's 3 as Python's (it is stored as JSON)
                setattr(self, f.name, value.item())

    @classmethod
    def given(cls, options: typing.Any, overrides: dict) -> typing.Self:
        """What a method that takes ``options: X | None = None, **overrides`` runs with: the
        options given (default: every default), with the keywords given replacing fields."""
        from dataclasses import replace

        if options is not None and not isinstance(options, cls):
            raise BadInput(
                f"{arg('options')}: expected {cls.__name__}, got {type(options).__name__}"
            )
        try:
            given: typing.Any = options
            return replace(given, **overrides) if given is not None else cls(**overrides)
        except TypeError as error:  # an unknown keyword
            raise BadInput(f"{cls.__name__}: {error}") from None

    def record(self) -> dict:
        """The options as stored in the catalog (a run's ``config``, a variant's ``edit``): every
        field but how it was shown (progress bars)."""
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k != "progress"}  # type: ignore[call-overload]


# A number's declared range: each bound, as words and as the test a value must pass.
_BOUNDS = {
    "at_least": (">=", operator.ge),
    "above": (">", operator.gt),
    "at_most": ("<=", operator.le),
}


def check_range(name: str, value, bounds: dict) -> None:
    """Refuse a number that is not finite or is outside ``bounds`` (``at_least``, ``above``,
    ``at_most``), naming ``name``; anything else passes."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return
    if isinstance(value, int | np.integer):
        if abs(int(value)) >= 2**63:  # beyond what any array, index or seed takes
            raise BadInput(f"{arg(name)} {value}: too large")
    elif not np.isfinite(value):
        raise BadInput(f"{arg(name)} {value}: expected a finite number")
    for bound, limit in bounds.items():
        words, passes = _BOUNDS[bound]
        if limit is not None and not passes(value, limit):
            raise BadInput(f"{arg(name)} {value}: must be {words} {limit}")


def bounds_text(bounds: dict) -> str:
    """A declared range in words, as the CLI's help shows it: ``>= 1``, ``> 0, <= 0.9``."""
    return ", ".join(f"{_BOUNDS[k][0]} {v}" for k, v in bounds.items() if v is not None)


def option(
    default,
    help: str,
    *,
    resume: bool = False,
    metavar: str | None = None,
    aliases: tuple[str, ...] = (),
    cli: bool = True,
    required: bool = False,
    nargs: int = 1,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
):
    """A field of an options dataclass: its default, its help text, whether a run resumed with
    a different value is refused (``resume``), the CLI's ``metavar`` and extra flag ``aliases``
    (``("--lr",)``, ``("-k",)``); ``cli=False`` keeps it off the command line; ``required``: a
    value must be given (the default is ``None``); ``nargs=2``: the flag takes two values;
    ``at_least``/``above``/``at_most``: the range a number must be in (every number must also be
    finite)."""
    from dataclasses import field

    bounds = {"at_least": at_least, "above": above, "at_most": at_most}
    meta = {
        "range": {k: v for k, v in bounds.items() if v is not None},
        "help": help,
        "resume": resume,
        "metavar": metavar,
        "aliases": aliases,
        "cli": cli,
        "required": required,
        "nargs": nargs,
    }
    return field(default=default, metadata=meta)


def device_option():
    """The ``device`` field every command that runs a model has."""
    return option("auto", "Where the model runs: auto, cpu, cuda, cuda:1, ...")


def progress_option():
    """The ``progress`` field every command with long work has."""
    return option(True, "Progress bars on stderr.")


_FIELDS: dict[type, list[tuple]] = {}


def option_fields(cls: type) -> list[tuple]:
    """The fields of an options dataclass, each with its annotation evaluated: ``(field,
    type)``."""
    from dataclasses import fields

    if cls not in _FIELDS:
        hints = typing.get_type_hints(cls)
        _FIELDS[cls] = [(f, hints[f.name]) for f in fields(cls)]
    return _FIELDS[cls]


def resume_keys(cls: type) -> tuple[str, ...]:
    """The options a resumed run must share with the run it continues."""
    return tuple(f.name for f, _ in option_fields(cls) if f.metadata.get("resume"))


def takes_options(cls: type, *, exclude: tuple[str, ...] = ()) -> Callable:
    """Method decorator for ``def method(self, ..., options: X | None = None, **overrides)``:
    its signature shows each field of ``cls`` (less ``exclude``) as a keyword-only parameter,
    so ``help(wh.evaluate)`` lists them and :func:`checks_arguments` refuses an unknown one by
    name; :meth:`Options.given` checks their values."""

    def decorate(method: Callable) -> Callable:
        signature = inspect.signature(method)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        taken = {p.name for p in own}
        added = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
            for f, _ in option_fields(cls)
            if f.name not in taken and f.name not in exclude
        ]
        method.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        method.__options__ = cls  # type: ignore[attr-defined]
        return method

    return decorate


def param_value(text: str):
    """A query parameter typed as text (``-p k=v``, a form field): JSON where it parses as JSON
    (numbers, true, null, lists), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def layer_neuron(spec: str | tuple[int, int], option: str) -> tuple[int, int]:
    """A neuron given as ``(19, 770)`` or the CLI's ``"19:770"``."""
    if isinstance(spec, tuple):
        return spec
    try:
        layer, neuron = (int(x) for x in spec.split(":"))
    except ValueError:
        raise BadInput(f"{arg(option)} {spec!r}: expected LAYER:NEURON, e.g. 19:770") from None
    return layer, neuron
