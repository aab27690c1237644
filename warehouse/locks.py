"""Waiting out a DuckDB file lock held by another process.

A DuckDB database file open read-write in one process cannot be opened at all by another, not
even read-only. Every opener of the catalog goes through :func:`retry_while_locked`, so several
workers and any number of readers share a warehouse without a lock error reaching the user.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from actwh.errors import Damaged, Locked

T = TypeVar("T")

# What DuckDB says when another process (or another configuration in this process) holds the
# file. These are waited out; anything else is a real error.
_LOCK_MESSAGES = ("Could not set lock", "Conflicting lock", "different configuration")


# What DuckDB says of a damaged database file.
_DAMAGE_MESSAGES = (
    "Corrupt database file",
    "not a valid DuckDB database file",
    "Could not read enough bytes",  # a truncated file
)


def is_lock_error(error: BaseException) -> bool:
    return any(m in str(error) for m in _LOCK_MESSAGES)


def damaged(error: BaseException, what: str) -> Damaged | None:
    """A one-line error for a damaged database file, or None if ``error`` is something else."""
    if not any(m in str(error) for m in _DAMAGE_MESSAGES):
        return None
    detail = next((line for line in str(error).splitlines() if line.strip()), "")
    detail = detail.split(") ", 1)[-1]  # SQLAlchemy's "(module.Error) " prefix
    return Damaged(
        f"{what} is damaged ({detail}); restore it from a backup: it alone says which files "
        "under data/ are committed"
    )


def retry_while_locked(open_: Callable[[], T], what: str, timeout: float) -> T:
    """Call ``open_`` until it stops failing with a lock error, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return open_()
        except Exception as error:
            if broken := damaged(error, what):
                raise broken from error
            if not is_lock_error(error):
                raise
            if time.monotonic() > deadline:
                raise Locked(
                    f"{what} stayed locked by another process for {timeout:.0f}s"
                ) from error
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.25)
