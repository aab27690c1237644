"""The exceptions users see: :class:`ActwhError` and its kinds.

Anything raised as :class:`ActwhError` is a problem with the user's input or environment that the
CLI prints as a single line (``error: ...``) before exiting with status 2. Anything else is a bug.
A caller that means to handle one case catches its kind: :class:`NotFound` (a run, model,
direction, table, file or warehouse that is not there), :class:`AlreadyExists` (a name or path
taken), :class:`Locked` (a catalog another process holds), :class:`BadInput` (a value no call
could accept), :class:`Damaged` (a file that cannot be read back).

A message names the argument at fault with :func:`arg`: the library shows the argument's Python
name (``teacher_force``), the CLI its flag (``--teacher-force``), so each reader sees the name
they typed.
"""

from __future__ import annotations

import re
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


class Terminated(BaseException):
    """A termination signal — SIGTERM (``kill``, ``timeout``, Slurm, Docker) or SIGHUP (a closed
    terminal) — raised where the process is, so the work in flight ends as any failure does: a
    run is marked failed with the reason, a commit not yet recorded leaves no files. Like
    KeyboardInterrupt it is not an Exception: nothing that handles errors swallows it."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")


class NotFound(ActwhError):
    """A name or path that is not there: a run, a model, a direction, a table, a file."""


class AlreadyExists(ActwhError):
    """A name or path already taken (pass ``replace``/``force`` where offered)."""


class Locked(ActwhError):
    """The catalog stayed locked by another process."""


class BadInput(ActwhError):
    """A value of the wrong type, out of range or in the wrong form."""


class Damaged(ActwhError):
    """A file of the warehouse that cannot be read back (restore it from a backup)."""


def natural_key(name: str) -> list:
    """Sort key that compares the numbers inside names as numbers: ``dx.2`` before ``dx.10``."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)
    ]


def unknown(what: str, value, known, *, argument: str | None = None, hint: str = "") -> NotFound:
    """One line for a name that is not there: the bad value, close matches, the known ones and
    (``hint``) how to make one. ``argument`` names the option the value came from."""
    import difflib

    known = sorted({str(k) for k in known}, key=natural_key)
    close = (
        difflib.get_close_matches(value, known, n=1, cutoff=0.6) if isinstance(value, str) else []
    )
    # a name with spaces at its ends (a token: " garbage") is quoted, so the space shows
    listed = [repr(k) if k != k.strip() else k for k in known]
    shown = ", ".join(listed[:12]) + (f", … ({len(known)} in all)" if len(known) > 12 else "")
    where = f"{arg(argument)} {value!r}" if argument else repr(value)
    near = f" (did you mean {close[0]!r}?)" if close else ""
    return NotFound(
        f"{where}: no such {what}{near}; known: {shown or 'none'}{'; ' + hint if hint else ''}"
    )


def from_os_error(error: OSError, doing: str = "") -> ActwhError:
    """One line for an I/O failure (a full disk, a read-only directory, a name too long): what
    was being done, on which file, and why."""
    where = f"{error.filename}: " if error.filename else ""
    return ActwhError(f"{doing}{where}{error.strerror or error}")


# Which extra of ``pip install actwh[...]`` brings a module the core does not have.
EXTRAS = {
    "torch": "models",
    "transformers": "models",
    "accelerate": "models",
    "gguf": "models",
    "trl": "train",
    "sklearn": "train",
    "profanity_check": "train",
    "better_profanity": "train",
    "datasets": "datasets",
    "altair": "report",
    "vl_convert": "report",
    "jinja2": "report",
    "starlette": "serve",
    "uvicorn": "serve",
    "threadpoolctl": "serve",
    "ray": "ray",
    "psycopg": "postgres",
}


def missing_extra(error: ModuleNotFoundError, doing: str) -> ActwhError | None:
    """One line for a module of an extra that is not installed: which extra to install for
    ``doing``; None for any other missing module (a bug, not the user's)."""
    extra = EXTRAS.get((error.name or "").split(".")[0])
    if extra is None:
        return None
    from pathlib import Path

    clone = Path(__file__).resolve().parent  # the repository root is the package
    target = f"'{clone}[{extra}]'" if (clone / "pyproject.toml").is_file() else f"'.[{extra}]'"
    torch_first = (
        "pip install torch --index-url https://download.pytorch.org/whl/cpu (a CPU build; a bare "
        "torch requirement pulls the multi-GB CUDA one), then "
        if extra in ("models", "train")
        else ""
    )
    return ActwhError(
        f"{doing} needs {error.name}, which is not installed: {torch_first}pip install -e {target}"
    )
