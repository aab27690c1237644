"""The CLI's flags made from an options dataclass (see ``option`` in :mod:`actwh.arguments`): one
``--field-name`` per field, its type, choices, default and help from the declaration, so a field
added there is a flag here with nothing else to edit."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable

import click

from actwh.arguments import option_fields


def options_of(cls: type, *, exclude: tuple[str, ...] = ()) -> Callable:
    """Command decorator: a click option for each field of ``cls`` that is on the command line
    (``option(..., cli=False)`` is not), in declaration order."""

    def decorate(command: Callable) -> Callable:
        for f, hint in reversed(option_fields(cls)):
            if f.metadata.get("cli", True) and f.name not in exclude:
                command = _flag(f, hint)(command)
        return command

    return decorate


def _flag(f, hint) -> Callable:
    meta = f.metadata
    names = [f"--{f.name.replace('_', '-')}", *meta.get("aliases", ()), f.name]
    kind = _click_type(hint)
    if kind is bool:
        return click.option(*names, is_flag=True, default=f.default, help=meta.get("help"))
    shown = not (f.default is None or f.default is False or f.default == "")
    return click.option(
        *names,
        type=kind,
        default=f.default,
        show_default=shown,
        metavar=meta.get("metavar"),
        help=meta.get("help"),
    )


def _click_type(hint):
    """The click type for an annotation: a ``Literal`` is a choice; ``int``, ``float`` and
    ``bool`` (with or without ``None``) are themselves; anything else is the CLI's string
    spelling (``"resid_mid,mlp_post"``, ``"10-20"``), which the options parse."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        given = [h for h in typing.get_args(hint) if h is not type(None)]
        hint = given[0] if len(given) == 1 else str
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(v) for v in typing.get_args(hint)])
    return hint if hint in (int, float, bool) else str
