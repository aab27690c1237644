"""The one exception type users see.

Anything raised as :class:`ActwhError` is a problem with the user's input or environment that the
CLI prints as a single line (``error: ...``) before exiting with status 2. Anything else is a bug.
"""


class ActwhError(Exception):
    """A user-facing error: bad input, a missing file, a locked catalog, an unsupported model."""


def from_os_error(error: OSError, doing: str = "") -> ActwhError:
    """One line for an I/O failure (a full disk, a read-only directory, a name too long): what
    was being done, on which file, and why."""
    where = f"{error.filename}: " if error.filename else ""
    return ActwhError(f"{doing}{where}{error.strerror or error}")
