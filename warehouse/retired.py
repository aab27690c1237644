"""Files that leave the warehouse: retired in a commit, deleted once no reader can need them.

A compaction, or a rebuild of a model's value vectors, replaces files. In the transaction that
commits the new ones, the old ones are *retired* (:func:`retire`): their ``commit_files`` rows
move to ``retired_files``, so no reader that starts afterwards opens them, while a reader that
started before (a snapshot taken earlier, a Spark job following the previous commit log) still
finds them on disk. They are deleted once retired longer than a grace period
(:func:`delete_retired`, run by ``actwh compact``, ``actwh check --repair`` and at the end of
every write that commits files), after the Spark log has been brought up to date.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

import sqlalchemy as sa

from actwh.errors import ActwhError
from actwh.warehouse.catalog import now
from actwh.warehouse.layout import RETIRED_GRACE
from actwh.warehouse.schema import fact_tables
from actwh.warehouse.store import Store


def retire(catalog, conn, paths: Sequence[str], commit_id: str) -> None:
    """In the transaction ``conn``: ``paths`` leave the warehouse (their ``commit_files`` rows
    move to ``retired_files``). Raises, rolling the transaction back, when one of them is no
    longer committed (another compaction or rebuild retired it first)."""
    files = catalog.tables["commit_files"]
    at = now()
    for chunk in _chunks(sorted(set(paths))):
        found = conn.execute(
            sa.select(files.c.path, files.c.table_name).where(files.c.path.in_(chunk))
        )
        tables = dict(found.fetchall())
        if len(tables) != len(chunk):
            gone = sorted(set(chunk) - set(tables))
            raise ActwhError(f"{gone[0]} is no longer committed (another writer retired it first)")
        conn.execute(files.delete().where(files.c.path.in_(chunk)))
        catalog.insert(
            conn,
            "retired_files",
            [
                {"path": p, "table_name": tables[p], "commit_id": commit_id, "retired_at": at}
                for p in chunk
            ],
        )


def retire_index(catalog, conn, paths: Sequence[str], commit_id: str) -> None:
    """In the transaction ``conn``: a model's FAISS index and readout, replaced by a rebuild,
    leave the warehouse as retired files (``vector_indexes`` named them, not ``commit_files``)."""
    at = now()
    rows = [
        {"path": p, "table_name": "vector_indexes", "commit_id": commit_id, "retired_at": at}
        for p in sorted({p for p in paths if p})
    ]
    catalog.insert(conn, "retired_files", rows)


def delete_retired(store: Store, grace: float = RETIRED_GRACE) -> list[str]:
    """Delete the files retired more than ``grace`` seconds ago, then forget them; returns
    them. The Spark log is published first, so that it no longer lists them."""
    from actwh.warehouse.spark_log import publish

    catalog = store.catalog
    table = catalog.tables["retired_files"]
    cutoff = now() - timedelta(seconds=grace)
    with catalog.reading() as conn:
        old = sa.select(table.c.path, table.c.table_name).where(table.c.retired_at < cutoff)
        due = conn.execute(old).fetchall()
    if not due:
        return []
    publish(store, sorted({t for _, t in due} & set(fact_tables())))  # (an index has no log)
    for path, _ in due:
        store.delete(path)
    with catalog.begin() as conn:
        for chunk in _chunks([path for path, _ in due]):
            conn.execute(table.delete().where(table.c.path.in_(chunk)))
    return [path for path, _ in due]


def listed_files(catalog) -> set[str]:
    """Every file the catalog knows: committed, or retired and waiting for its grace period."""
    return {r["path"] for r in catalog.rows("commit_files")} | {
        r["path"] for r in catalog.rows("retired_files")
    }


def _chunks(items: list, size: int = 1000) -> Iterator[list]:
    """``items`` in lists of at most ``size`` (an IN list per statement stays small)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
