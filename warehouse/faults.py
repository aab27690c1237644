"""Crash points for testing crash safety: the process kills itself (SIGKILL) at a named point.

``ACTWH_CRASH_AT=commit.after_files:3`` kills the process the 3rd time it reaches the point
``commit.after_files``; ``ACTWH_CRASH_SIGNAL=SIGTERM`` (or ``SIGHUP``, ``SIGINT``) sends that
signal instead, as ``kill``, ``timeout`` or Slurm would; ``ACTWH_PAUSE_WHILE=FILE`` makes the
thread that reaches it wait there while FILE exists (a slow step, with the process alive). Unset
(always, outside tests), a crash point costs one dict lookup.

Points: ``commit.before_files`` (nothing written yet), ``commit.after_files`` (files renamed into
place, not yet recorded: orphans), ``commit.after_record`` (recorded, the run not yet updated
further), ``batch.done`` (a batch buffered, not committed).
"""

from __future__ import annotations

import os
import signal
import time

_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("ACTWH_CRASH_AT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] < int(count or 1):
        return
    if paused := os.environ.get("ACTWH_PAUSE_WHILE"):
        while os.path.exists(paused):
            time.sleep(0.05)
        return
    os.kill(os.getpid(), signal.Signals[os.environ.get("ACTWH_CRASH_SIGNAL", "SIGKILL")])
