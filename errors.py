"""The one exception type users see.

Anything raised as :class:`ActwhError` is a problem with the user's input or environment that the
CLI prints as a single line (``error: ...``) before exiting with status 2. Anything else is a bug.

A message names the argument at fault with :func:`arg`: the library shows the argument's Python
name (``teacher_force``), the CLI its flag (``--teacher-force``), so each reader sees the name
they typed.
"""

from __future__ import annotations

from collections.abc import Callable

_MARK = "\x1f"  # around an argument's name inside a message; never in user text


def arg(name: str) -> str:
    """``name`` as an argument reference inside an error message (see :class:`ActwhError`)."""
    return f"{_MARK}{name}{_MARK}"


def render(template: str, name_of: Callable[[str], str] = lambda name: name) -> str:
    """``template`` with each argument reference shown as ``name_of(argument)``."""
    parts = template.split(_MARK)
    parts[1::2] = [name_of(name) for name in parts[1::2]]
    return "".join(parts)


class Notice:
    """A message for the user that is not an error (a warning about this invocation); it names
    arguments like :class:`ActwhError` does."""

    def __init__(self, template: str):
        self.template = template

    def render(self, name_of: Callable[[str], str] = lambda name: name) -> str:
        return render(self.template, name_of)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return repr(str(self))


class ActwhError(Exception):
    """A user-facing error: bad input, a missing file, a locked catalog, an unsupported model."""

    @property
    def template(self) -> str:
        """The message with its argument references unresolved (to wrap it in another)."""
        return str(self.args[0]) if self.args else ""

    def render(self, name_of: Callable[[str], str] = lambda name: name) -> str:
        """The message with each argument reference shown as ``name_of(argument)``."""
        return render(self.template, name_of)

    def __str__(self) -> str:
        return self.render()


def unknown(what: str, value, known, *, argument: str | None = None, hint: str = "") -> ActwhError:
    """One line for a name that is not there: the bad value, close matches, the known ones and
    (``hint``) how to make one. ``argument`` names the option the value came from."""
    import difflib

    from actwh.warehouse.layout import natural_key

    known = sorted({str(k) for k in known}, key=natural_key)
    close = difflib.get_close_matches(str(value), known, n=1, cutoff=0.6)
    shown = ", ".join(known[:12]) + (f", … ({len(known)} in all)" if len(known) > 12 else "")
    where = f"{arg(argument)} {value!r}" if argument else repr(value)
    near = f" (did you mean {close[0]!r}?)" if close else ""
    return ActwhError(
        f"{where}: no such {what}{near}; known: {shown or 'none'}{'; ' + hint if hint else ''}"
    )


def from_os_error(error: OSError, doing: str = "") -> ActwhError:
    """One line for an I/O failure (a full disk, a read-only directory, a name too long): what
    was being done, on which file, and why."""
    where = f"{error.filename}: " if error.filename else ""
    return ActwhError(f"{doing}{where}{error.strerror or error}")
