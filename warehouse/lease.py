"""A lease on one shard of one run: the one process that may write it now.

Workers of one run write side by side when their shards differ (``--shard 0/2`` and ``1/2``):
their files carry their shard's tag, and a resumed worker deletes the unrecorded files of its
own tag (a crash's leftovers). Two processes with the same tag — the same ``actwh ingest`` run
twice at once — would delete each other's files not yet recorded. So a writer takes the lease on
``(run, shard tag)`` in the catalog before it touches anything, renews it by a heartbeat and in
the transaction of every commit, and releases it when it stops:

* a second writer is refused while the lease is held, naming the holder (host, process);
* a lease is free once it has not been renewed for :data:`TTL` seconds (its holder was killed on
  another machine), or at once when its holder was a process of this machine that is gone;
* a commit records nothing unless its writer still holds the lease: a writer that lost it (a
  pause longer than :data:`TTL`, then another took over) stops without recording.

The catalog is the one place every writer sees, for a directory and a bucket alike.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import timedelta

import sqlalchemy as sa

from actwh.errors import Locked
from actwh.warehouse.catalog import Catalog, now

HEARTBEAT = 20.0  # seconds between renewals
TTL = 120.0  # a lease not renewed for this long is free


class Lease:
    """This process's lease on ``(run, shard)``; :meth:`take` it, :meth:`release` it."""

    def __init__(self, catalog: Catalog, run: str, shard: str):
        self.catalog, self.run, self.shard = catalog, run, shard
        self.holder = uuid.uuid4().hex
        self.lost: Locked | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @classmethod
    def take(cls, catalog: Catalog, run: str, shard: str) -> Lease:
        """The lease, or :class:`Locked` naming who holds it."""
        lease = cls(catalog, run, shard)
        table = catalog.tables["run_leases"]
        key = (table.c.run == run) & (table.c.shard == shard)
        try:
            with catalog.begin() as conn:
                held = conn.execute(sa.select(table).where(key)).mappings().first()
                if held is not None and not _free(dict(held)):
                    raise Locked(
                        f"run {run!r} (shard {shard}) is being written by process {held['pid']} "
                        f"on {held['host']}: two writers of one run would delete each other's "
                        "files. Wait for it to finish (or stop it); its lease lapses "
                        f"{TTL:.0f} s after its last sign of life"
                    )
                conn.execute(table.delete().where(key))
                conn.execute(table.insert().values(lease._row()))
        except sa.exc.IntegrityError:  # another writer took it between our read and insert
            raise Locked(f"run {run!r} (shard {shard}) was just taken by another writer") from None
        lease._beat = threading.Thread(target=lease._heartbeat, name="actwh-lease", daemon=True)
        lease._beat.start()
        return lease

    def renew(self, conn: sa.Connection) -> None:
        """In a transaction (a commit's): extend the lease, or raise :class:`Locked` if another
        writer has taken it, so that nothing of this writer is recorded."""
        if self.lost is not None:
            raise self.lost
        table = self.catalog.tables["run_leases"]
        mine = (
            (table.c.run == self.run)
            & (table.c.shard == self.shard)
            & (table.c.holder == self.holder)
        )
        renewed = conn.execute(table.update().where(mine).values(expires_at=_expiry()))
        if renewed.rowcount == 0:
            self.lost = Locked(
                f"run {self.run!r} (shard {self.shard}): this writer's lease lapsed and another "
                "writer took the run over; stopped without recording"
            )
            raise self.lost

    def release(self) -> None:
        """Stop renewing and free the lease (if it is still this writer's)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        table = self.catalog.tables["run_leases"]
        with self.catalog.begin() as conn:
            conn.execute(table.delete().where(table.c.holder == self.holder))

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                with self.catalog.begin() as conn:
                    self.renew(conn)
            except Locked:
                return  # lost: the next commit raises it
            except Exception:  # the catalog unreachable for a moment: the next beat retries
                continue

    def _row(self) -> dict:
        return {
            "run": self.run,
            "shard": self.shard,
            "holder": self.holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires_at": _expiry(),
        }


def _expiry():
    return now() + timedelta(seconds=TTL)


def _free(held: dict) -> bool:
    """Whether a recorded lease no longer binds: lapsed, or held by a process of this machine
    that is gone."""
    if held["expires_at"] < now():
        return True
    if held["host"] != socket.gethostname():
        return False
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
