"""The commit log Spark follows, so that ``spark.read.parquet("WH/data/TABLE")`` reads exactly
the committed files of a table, in place.

Spark's file sink keeps a log of the files a streaming query committed in the folder it writes,
``_spark_metadata/``; Spark's batch reader, given a folder that holds such a log, reads the files
the log lists and nothing else there (an orphan a crash left, a file being written). actwh writes
that log from the catalog, in the format Spark reads (version 1: a line ``v1``, then one JSON
object per file: its absolute URL, size, and ``"action": "add"``).

Every publication of a table is a complete listing, written as the *compaction batch*
``data/TABLE/_spark_metadata/<version>.compact``, where ``version`` counts the table's
publications in the catalog (``spark_logs``, bumped in the transaction that reads the listing,
so a higher version never lists less than a lower one). Spark derives the interval between
compaction batches from the two latest files, so the one before is kept (written again if a
crash lost it): with consecutive versions, Spark reads the latest listing alone. Older versions
are deleted.

A table's log is published when a write that commits files ends (ingest, index-vectors,
evaluate, score, diff, compact) and by ``actwh check --repair``; it is skipped when the listing
is unchanged. Between publications Spark sees the warehouse as of the last one: never a file
that was not committed, and files retired since stay on disk for the retired files' grace period.
A log holds absolute URLs: after moving or copying a warehouse, ``actwh check --repair`` writes
it again.
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa

from actwh.warehouse import layout
from actwh.warehouse.catalog import now
from actwh.warehouse.schema import fact_tables
from actwh.warehouse.store import Store

LOG_DIR = "_spark_metadata"
KEEP = 3  # versions kept: the latest, the one Spark needs beside it, and one a reader may hold


def log_path(table: str, version: int) -> str:
    """The log file of ``table``'s publication ``version``, relative to the warehouse."""
    return f"{layout.DATA_DIR}/{table}/{LOG_DIR}/{version}.compact"


def publish(store: Store, tables: list[str] | None = None) -> list[str]:
    """Bring the Spark logs of ``tables`` (default: every fact table) up to date with the
    catalog; returns the tables whose log was written."""
    written = []
    for table in tables if tables is not None else list(fact_tables()):
        if _publish(store, table):
            written.append(table)
    return written


def _publish(store: Store, table: str) -> bool:
    for attempt in range(5):
        try:
            version, listing, changed = _bump(store, table)
            break
        except (sa.exc.IntegrityError, _Taken):  # another publisher took the version: again
            if attempt == 4:
                raise
    if version is None:
        return False
    if not changed and store.exists(log_path(table, version)):
        return False
    text = _log_text(store, listing)
    if version > 0 and not store.exists(log_path(table, version - 1)):
        store.put(log_path(table, version - 1), text)  # Spark needs the one before, too
    store.put(log_path(table, version), text)
    for old, path in _versions(store, table):
        if old <= version - KEEP:
            store.delete(path)
    return True


class _Taken(Exception):
    """Another publisher bumped the version between this one's read and its update."""


def _bump(store: Store, table: str) -> tuple[int | None, list[tuple[str, int]], bool]:
    """In one transaction: the table's committed files, and its log version — a new one when
    the listing changed. Returns (version, listing, changed); version None: no file and no log
    yet."""
    catalog = store.catalog
    files, logs = catalog.tables["commit_files"], catalog.tables["spark_logs"]
    with catalog.begin() as conn:
        listing = [
            (path, n_bytes)
            for path, n_bytes in conn.execute(
                sa.select(files.c.path, files.c.n_bytes)
                .where(files.c.table_name == table)
                .order_by(files.c.path)
            )
        ]
        # Of the URLs, not the paths: a copied or moved warehouse's log must be written again.
        urls = [(store.uri(path), n_bytes) for path, n_bytes in listing]
        digest = hashlib.sha256(json.dumps(urls).encode()).hexdigest()
        row = conn.execute(sa.select(logs).where(logs.c.table_name == table)).first()
        if row is None and not listing:
            return None, listing, False
        if row is not None and row.digest == digest:
            return row.version, listing, False
        values = {"digest": digest, "published_at": now()}
        if row is None:
            conn.execute(logs.insert().values(table_name=table, version=0, **values))
            return 0, listing, True
        updated = conn.execute(
            logs.update()
            .where(logs.c.table_name == table, logs.c.version == row.version)
            .values(version=row.version + 1, **values)
        )
        if updated.rowcount != 1:
            raise _Taken(table)
        return row.version + 1, listing, True


def _log_text(store: Store, listing: list[tuple[str, int]]) -> bytes:
    lines = ["v1"]
    for relative, n_bytes in listing:
        entry = {
            "path": store.uri(relative),
            "size": n_bytes,
            "isDir": False,
            "modificationTime": 0,
            "blockReplication": 1,
            "blockSize": 33554432,
            "action": "add",
        }
        lines.append(json.dumps(entry))
    return "\n".join(lines).encode()


def _versions(store: Store, table: str) -> list[tuple[int, str]]:
    """The log files of ``table`` there are: (version, relative path)."""
    folder = f"{layout.DATA_DIR}/{table}/{LOG_DIR}"
    names = store.names(folder)
    return sorted(
        (int(n.removesuffix(".compact")), f"{folder}/{n}")
        for n in names
        if n.endswith(".compact") and n.removesuffix(".compact").isdigit()
    )


def is_current(store: Store, table: str, committed: list[tuple[str, int]]) -> bool:
    """Whether the latest log of ``table`` lists exactly ``committed`` (relative path, bytes)
    at this warehouse's location (a moved or copied warehouse's log points elsewhere). A table
    with no file and no log is current."""
    versions = _versions(store, table)
    if not versions:
        return not committed
    with store.open_input(versions[-1][1]) as f:
        lines = f.read().decode().splitlines()[1:]
    listed = sorted((e["path"], e["size"]) for e in map(json.loads, lines))
    return listed == sorted((store.uri(p), n) for p, n in committed)
