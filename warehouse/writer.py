"""Writing fact tables: Parquet files that become visible all at once, or not at all.

A :class:`CommitWriter` buffers Arrow tables per (table, partition). :meth:`CommitWriter.commit`
writes each buffer to ``_*.parquet.tmp``, fsyncs it, renames it into place, and only then records
the commit in the catalog, in one transaction together with the prompts it covers. Inside
:meth:`CommitWriter.in_background`, commits run in a background thread, one at a time and in
order, while the caller buffers the next one (polars, hashing and fsync release the GIL).
Readers list files from the catalog, so a crash at any point leaves nothing half-visible: files
renamed before a crash but never recorded are orphans, which
:meth:`CommitWriter.remove_orphans` (run when a writer resumes) and ``actwh check --repair``
delete.

A commit that replaces files (a rebuild of a model's value vectors) retires them in its
transaction (:mod:`actwh.warehouse.retired`).
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import cast

import polars as pl
import pyarrow as pa
import sqlalchemy as sa

from actwh.errors import ActwhError
from actwh.warehouse import layout
from actwh.warehouse.catalog import now
from actwh.warehouse.faults import crash_point
from actwh.warehouse.lease import Lease
from actwh.warehouse.retired import listed_files, retire
from actwh.warehouse.schema import VECTOR_DTYPES, fact_table
from actwh.warehouse.store import Store

ROW_GROUP_BYTES = 64 << 20
NULL_COUNTS_ONLY = {"min": False, "max": False, "distinct_count": False, "null_count": True}
WRITE_THREADS = min(8, os.cpu_count() or 1)  # files of one commit written at once


def _os_error(error: Exception, path: object) -> Exception:
    """The OSError behind a polars write error ("... (os error 28)"), naming ``path``; else
    ``error`` itself."""
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found is None:
        return error
    code = int(found[1])
    return OSError(code, os.strerror(code), str(path))


def shard_tag(shard: tuple[int, int]) -> str:
    index, count = shard
    return f"s{index}of{count}"


class CommitWriter:
    """Buffers rows for one run (or one model) and commits them atomically.

    Parameters
    ----------
    store
        The warehouse.
    run, model
        What the commits belong to: a run's captures, or a model's value vectors.
    shard
        ``(i, N)`` of the worker; files carry it in their names so that concurrent workers of one
        run never touch each other's files.
    lease
        The writer's lease on its run and shard (:mod:`~actwh.warehouse.lease`): every commit
        renews it in its transaction, and records nothing once another writer has it.
    """

    def __init__(
        self,
        store: Store,
        *,
        run: str | None = None,
        model: str | None = None,
        shard: tuple[int, int] = (0, 1),
        lease: Lease | None = None,
    ):
        if (run is None) == (model is None):
            raise ValueError("a writer belongs to exactly one run or one model")
        self.store = store
        self.run = run
        self.model = model
        self.shard = shard
        self.tag = shard_tag(shard)
        self.lease = lease
        self._buffers: dict[tuple[str, tuple], list[pa.Table]] = {}
        self._vector_sizes: dict[tuple[str, tuple], int | None] = {}
        self.buffered_bytes = 0  # of the rows buffered since the last commit
        # When set, only rows for these partition directories are kept: a repair's gaps.
        self.only: set[str] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    @contextmanager
    def in_background(self) -> Iterator[CommitWriter]:
        """Commits made inside run in a background thread, one at a time and in order; a
        commit waits for the one before it, so at most two commits' rows are held at once.
        Leaving waits for the last commit and raises its error, if any."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="actwh-commit")
        try:
            yield self
        except BaseException:
            # The commit in flight lands whole or not at all; the error that got us here is the
            # one to see.
            with suppress(BaseException):
                self.wait()
            raise
        else:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    def wait(self) -> None:
        """Wait for the commit in flight (background only); raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def add(
        self,
        table: str,
        partition: Mapping[str, object],
        data: pa.Table,
        *,
        vector_size: int | None = None,
        dtype: str = "float32",
    ) -> None:
        """Buffer ``data`` for ``table`` under ``partition`` (e.g. ``{"run": r, "layer": 3}``)."""
        spec = fact_table(table)
        if tuple(partition) != spec.partition:
            raise ValueError(f"{table} is partitioned by {spec.partition}, got {tuple(partition)}")
        if self.only is not None and layout.partition_key(table, partition) not in self.only:
            return
        expected = spec.arrow_schema(vector_size, dtype)
        if spec.scale_column and spec.scale_column not in data.column_names:  # none is scaled
            data = data.append_column(spec.scale_column, pa.nulls(data.num_rows, pa.float32()))
        if data.schema != expected:
            data = data.select(expected.names).cast(expected)
        key = (table, tuple(partition.items()))
        self._buffers.setdefault(key, []).append(data)
        self.buffered_bytes += data.nbytes
        self._vector_sizes[key] = vector_size

    def _write(self, table: str, partition: tuple, tables: list[pa.Table], commit_id: str):
        """One file of a commit, under its final name; returns its ``commit_files`` row (less
        the commit id and the vector size)."""
        relative = (
            layout.partition_key(table, dict(partition))
            + "/"
            + layout.file_name(self.tag, commit_id)
        )
        return write_file(self.store, table, relative, tables)

    def commit(
        self,
        *,
        prompts: Sequence[int] = (),
        n_tokens: int = 0,
        replace_tables: tuple[str, ...] = (),
        filled: Sequence[str] = (),
        also: Callable[[sa.Connection, str], None] | None = None,
    ) -> str | None:
        """Write everything buffered and record it, with ``prompts``, as one commit.

        ``replace_tables``: earlier files of these tables in this writer's scope (its run or
        model) stop being part of the warehouse in the same transaction, then are deleted.
        ``filled``: the repair gaps (paths) this commit redoes; their rows go in the same
        transaction. ``also(conn, commit_id)``: more catalog rows the commit records, in its
        transaction (a model's FAISS index). Returns the commit id, or ``None`` if there was
        nothing to record.
        """
        if not self._buffers and not prompts and not filled:
            return None
        commit_id = uuid.uuid4().hex[:16]
        buffers, sizes = self._buffers, self._vector_sizes
        self._buffers, self._vector_sizes, self.buffered_bytes = {}, {}, 0
        args = (
            commit_id,
            buffers,
            sizes,
            list(prompts),
            n_tokens,
            replace_tables,
            list(filled),
            also,
        )
        if self._executor is None:
            self._commit(*args)
        else:
            self.wait()
            self._pending = self._executor.submit(self._commit, *args)
        return commit_id

    def _commit(self, *args) -> None:
        """One commit (arguments: see :meth:`_commit_locked`), holding the commit lock shared:
        a repair waits until the commit is recorded."""
        with self.store.commit_lock(exclusive=False):
            self._commit_locked(*args)

    def _commit_locked(
        self,
        commit_id: str,
        buffers: dict,
        sizes: dict,
        prompts: list[int],
        n_tokens: int,
        replace_tables: tuple[str, ...],
        filled: list[str],
        also: Callable[[sa.Connection, str], None] | None,
    ) -> None:
        """Write the buffered files, check they are there, record them: one commit."""
        written: list[str] = []
        files = []
        crash_point("commit.before_files")
        try:
            # One file per partition, several at a time: polars, hashing and fsync release the
            # GIL, and one column chunk is written by one core (see bench/writer.py).
            with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="actwh-file") as pool:
                jobs = {
                    key: pool.submit(self._write, key[0], key[1], tables, commit_id)
                    for key, tables in buffers.items()
                }
                for job in as_completed(jobs.values()):  # the first failure stops the rest
                    if job.exception() is not None:
                        pool.shutdown(cancel_futures=True)
                        break
            # Leaving the pool waited for every file started: keep what was written, to delete
            # it if any other failed.
            done = [job for job in jobs.values() if not job.cancelled()]
            written = [job.result()["path"] for job in done if job.exception() is None]
            for job in done:
                if (failed := job.exception()) is not None:
                    raise failed
            for key, job in jobs.items():
                files.append(job.result() | {"commit_id": commit_id, "vector_size": sizes[key]})
            crash_point("commit.after_files")
            gone = self.store.vanished([f["path"] for f in files])
            if gone:
                raise ActwhError(f"{gone[0]} vanished before its commit was recorded")
            self._record(commit_id, files, prompts, n_tokens, replace_tables, filled, also)
            crash_point("commit.after_record")
        except BaseException:
            self.store.delete_unrecorded(written)
            raise

    def _scope(self) -> str:
        """The partition directory name every file of this writer lives under."""
        return f"run={self.run}" if self.run is not None else f"model={self.model}"

    def _record(
        self,
        commit_id: str,
        files: list[dict],
        prompts: Sequence[int],
        n_tokens: int,
        replace_tables: tuple[str, ...] = (),
        filled: Sequence[str] = (),
        also: Callable[[sa.Connection, str], None] | None = None,
    ) -> None:
        """The catalog transaction of a commit: the earlier files of ``replace_tables`` in this
        writer's scope are retired in it, and ``also`` records what else the commit holds."""
        catalog = self.store.catalog
        try:
            with catalog.begin() as conn:
                if self.lease is not None:
                    self.lease.renew(conn)
                replaced = [
                    row["path"]
                    for table in replace_tables
                    for row in catalog.rows("commit_files", conn, table_name=table)
                    if self._scope() in row["path"].split("/")
                ]
                retire(catalog, conn, replaced, commit_id)
                catalog.insert(
                    conn,
                    "commits",
                    {
                        "id": commit_id,
                        "run": self.run,
                        "model": self.model,
                        "shard": f"{self.shard[0]}/{self.shard[1]}",
                        "n_prompts": len(prompts),
                        "created_at": now(),
                    },
                )
                catalog.insert(conn, "commit_files", files)
                for path in filled:
                    catalog.delete(conn, "commit_gaps", path=path)
                catalog.insert(
                    conn,
                    "commit_prompts",
                    [{"run": self.run, "prompt": p, "commit_id": commit_id} for p in prompts],
                )
                if self.run is not None:
                    runs = catalog.tables["runs"]
                    catalog.update(
                        conn, "runs", {"name": self.run}, n_tokens=runs.c.n_tokens + n_tokens
                    )
                if also is not None:
                    also(conn, commit_id)
        except sa.exc.IntegrityError as error:
            raise ActwhError(
                f"run {self.run}: some of these prompts were already committed by another "
                "writer; nothing from this batch was kept"
            ) from error

    def remove_orphans(self) -> list[str]:
        """Delete this writer's files that no commit records (left by a crash). Returns them."""
        removed = [path for path in self._uncommitted() if self._is_mine(path)]
        for path in removed:
            self.store.delete(path)
        return removed

    def others_orphans(self) -> list[str]:
        """Files in this writer's scope that no commit records, written by workers of another
        shard layout (killed ones, or ones writing right now: not ours to delete)."""
        return [path for path in self._uncommitted() if not self._is_mine(path)]

    def _is_mine(self, path: str) -> bool:
        """Whether this writer's tag wrote ``path`` (final, or unfinished with or without the
        ``_`` prefix)."""
        return (
            path.rsplit("/", 1)[-1].removeprefix(layout.TMP_PREFIX).startswith(f"part-{self.tag}-")
        )

    def _uncommitted(self) -> list[str]:
        """Files under this writer's scope (its run's or model's folders) that no commit lists
        and none retired, relative to the warehouse."""
        known = listed_files(self.store.catalog)
        return [
            path
            for path, _ in self.store.data_files()
            if self._scope() in path.split("/") and path not in known
        ]


def write_file(store: Store, table: str, relative: str, tables: list[pa.Table]) -> dict:
    """Write ``tables`` (one schema, or float16 next to a float32 fallback) as the file
    ``relative`` of ``table``: renamed into place after an fsync, or uploaded whole under its
    final key. Returns its ``commit_files`` row less ``commit_id`` and ``vector_size``."""
    if len({t.schema for t in tables}) > 1:  # float16 next to a float32 fallback: widen all
        widest = next(t.schema for t in tables if pa.float32() in _value_types(t.schema))
        tables = [t.cast(widest) for t in tables]
    value_types = _value_types(tables[0].schema)
    # a Table gives a DataFrame (from_arrow's type says DataFrame | Series); vectors not copied
    data = cast(pl.DataFrame, pl.from_arrow(pa.concat_tables(tables), rechunk=False))
    # Files with vectors: no compression (zstd saves ~8% of float data for 2× the time), and
    # null counts but no min/max (polars takes float16 min/max element by element at a sixth
    # of the write speed; a selective query is as fast without them). Measured in
    # bench/writer.py.
    # A table read by point lookups (schema.sql's `-- row groups:`) has small row groups with
    # min/max statistics, which pyarrow's scan uses to skip all but the group a filter needs: one
    # value vector reads 128 rows of its layer's file (1.3 vs 6.0 ms here; 2 MB, not 235 MB, at
    # d_model 4096 and d_mlp 14336).
    lookups = fact_table(table).row_group_rows
    row_group_size = lookups or max(
        1, int(ROW_GROUP_BYTES * data.height // max(1, data.estimated_size()))
    )

    def write(target: Path | io.BytesIO) -> None:
        try:
            data.write_parquet(
                target,
                compression="uncompressed" if value_types else "zstd",
                statistics=NULL_COUNTS_ONLY if value_types and not lookups else True,
                row_group_size=row_group_size,
            )
        except pl.exceptions.ComputeError as error:  # polars wraps a failed write (a full disk)
            raise _os_error(error, target) from error

    row = {
        "path": relative,
        "table_name": table,
        "n_rows": sum(t.num_rows for t in tables),
        "vector_dtype": _DTYPE_NAMES[value_types[0]] if value_types else None,
        **layout.catalog_partition(relative),
    }
    sha256, n_bytes = store.write(relative, write)
    return row | {"sha256": sha256, "n_bytes": n_bytes}


_DTYPE_NAMES = {arrow: name for name, arrow in VECTOR_DTYPES.items()}


def _value_types(schema: pa.Schema) -> list[pa.DataType]:
    return [f.type.value_type for f in schema if pa.types.is_fixed_size_list(f.type)]
