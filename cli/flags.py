"""The CLI's flags made from an options dataclass (see ``option`` in :mod:`actwh.arguments`): one
``--field-name`` per field, its type, choices, default and help from the declaration, so a field
added there is a flag here with nothing else to edit.

One convention for every command: a flag is named as the keyword it sets (``--progress/
--no-progress`` for a switch that is on by default), and a flag that takes several values (sites,
runs, layers, neurons ...) takes a comma list and may be repeated to add more: ``--capture
resid_mid,mlp_post`` is ``--capture resid_mid --capture mlp_post`` (:func:`list_option`)."""

from __future__ import annotations

import collections.abc
import types
import typing
from collections.abc import Callable

import click

from actwh.arguments import bounds_text, option_fields


def options_of(cls: type, *, exclude: tuple[str, ...] = ()) -> Callable:
    """Command decorator: a click option for each field of ``cls`` that is on the command line
    (``option(..., cli=False)`` is not), in declaration order."""

    def decorate(command: Callable) -> Callable:
        for f, hint in reversed(option_fields(cls)):
            if f.metadata.get("cli", True) and f.name not in exclude:
                command = _flag(f, hint)(command)
        return command

    return decorate


def list_option(*names: str, help: str, default: str | None = None, **more) -> Callable:
    """A flag that takes several values: a comma list, and repeating the flag adds more. The
    command receives one comma list (``"a,b,c"``), or ``default`` when the flag is not given."""

    def joined(ctx, param, values: tuple[str, ...]) -> str | None:
        return ",".join(values) if values else default

    help = help.rstrip() + " A comma list, or repeat the flag."
    if default:
        help += f"  [default: {default}]"
    return click.option(*names, multiple=True, callback=joined, help=help, **more)


def _flag(f, hint) -> Callable:
    meta = f.metadata
    long = f"--{f.name.replace('_', '-')}"
    names = [long, *meta.get("aliases", ()), f.name]
    required = meta.get("required", False)
    if _takes_several(hint) and meta.get("nargs", 1) == 1:
        more = {"metavar": meta.get("metavar")} if meta.get("metavar") else {}
        return list_option(
            *names, help=meta.get("help", ""), default=f.default, required=required, **more
        )
    kind = _click_type(hint)
    if kind is bool and f.default is True:
        names[0] = f"{long}/--no-{long[2:]}"
        return click.option(*names, default=True, show_default=True, help=meta.get("help"))
    if kind is bool:
        return click.option(*names, is_flag=True, default=f.default, help=meta.get("help"))
    shown = not (f.default is None or f.default is False or f.default == "")
    help = meta.get("help", "")
    if meta.get("range"):
        help = f"{help.rstrip()} ({bounds_text(meta['range'])})"
    return click.option(
        *names,
        type=kind,
        default=f.default,
        show_default=shown,
        required=required,
        nargs=meta.get("nargs", 1),
        metavar=meta.get("metavar"),
        help=help,
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


def _takes_several(hint) -> bool:
    """Whether an annotation lets the option take a list (``str | Iterable[str]``)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if union else ()
    return any(typing.get_origin(a) is collections.abc.Iterable for a in args)
