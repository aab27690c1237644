"""``actwh compact``: merge each partition's small files into files of a target size.

A long ingest commits every 128 MB or 120 s, a file per table and partition per commit, so a run
at GPU speed leaves thousands of small files, and every query pays per file it opens. Compaction
takes, partition by partition, the files under half the target size, in commit order, and packs
them into files of about the target size: the rows as they were (same values, same vector dtype
and scale, commit order within the partition), so every query answers as before.

Each partition is one commit: its new files are written and checked first, then one catalog
transaction commits them and retires the files they replace (:mod:`actwh.warehouse.retired`) —
refused if another compaction retired one of them first. Retired files stay on disk for readers
that started before, until the grace period has passed; this command (when it ends), any later
write that commits files and ``actwh check --repair`` then delete them. The commit records the
commits it merged (``commit_sources``), so a repair of a damaged merged file redoes their
prompts.

A kill at any point loses nothing: before a partition's transaction its new files are orphans no
reader opens (deleted, as any orphan, once older than the grace period); after it, the old files
are retired. Rerunning compacts what is still small.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from actwh.arguments import names
from actwh.errors import ActwhError, arg
from actwh.warehouse import layout
from actwh.warehouse.faults import crash_point
from actwh.warehouse.schema import FactTable, fact_table, fact_tables

if TYPE_CHECKING:
    from actwh.warehouse.options import CompactOptions
    from actwh.warehouse.store import Store


@dataclass
class CompactReport:
    partitions: int = 0  # partitions compacted
    files_before: int = 0  # the files they merged
    files_after: int = 0  # the files that replaced them
    bytes: int = 0  # bytes read (and about as many written)
    rows: int = 0
    seconds: float = 0.0
    deleted: list[str] = field(default_factory=list)  # retired files deleted (their grace passed)


@dataclass
class _File:
    path: str
    commit_id: str
    n_rows: int
    n_bytes: int
    vector_size: int | None


def compact(store: Store, options: CompactOptions) -> CompactReport:
    """Compact ``store`` as ``options`` say; see the module's docstring."""
    if options.target_mb < 1:
        raise ActwhError(f"{arg('target_mb')} {options.target_mb}: give at least 1 (MB)")
    if options.grace < 0:
        raise ActwhError(f"{arg('grace')} {options.grace}: give 0 seconds or more")
    from tqdm.auto import tqdm

    target = options.target_mb << 20
    report = CompactReport()
    store.catalog.create()  # a catalog an older actwh wrote gets the partition columns first
    plan = _plan(store, _tables(options.tables), _runs(store, options.runs), target)
    started = time.perf_counter()
    for (table, partition), bins in tqdm(
        plan.items(), desc="compact", unit="partition", disable=not options.progress
    ):
        with store.commit_lock(exclusive=False):  # a repair waits: the new files are not orphans
            _compact_partition(store, fact_table(table), partition, bins, report)
    report.seconds = time.perf_counter() - started
    return report


def _tables(tables: str | Iterable[str] | None) -> list[str]:
    if tables is None:
        return list(fact_tables())
    chosen = names(tables)
    for table in chosen:
        if table not in fact_tables():
            known = ", ".join(fact_tables())
            raise ActwhError(f"{arg('tables')}: no table {table!r}; tables: {known}")
    return chosen


def _runs(store: Store, runs: str | Iterable[str] | None) -> list[str] | None:
    if runs is None:
        return None
    chosen = names(runs)
    known = {r["name"] for r in store.catalog.rows("runs")}
    for run in chosen:
        if run not in known:
            raise ActwhError(f"{arg('runs')}: no run {run!r}; runs: {', '.join(sorted(known))}")
    return chosen


def _plan(
    store: Store, tables: list[str], runs: list[str] | None, target: int
) -> dict[tuple[str, tuple], list[list[_File]]]:
    """Per (table, partition): bins of small files (in commit order) to merge, each of two
    files or more and at most ``target`` bytes."""
    import sqlalchemy as sa

    files = store.catalog.tables["commit_files"]
    commits = store.catalog.tables["commits"]
    query = (
        sa.select(
            files.c.table_name,
            files.c.run,
            files.c.model,
            files.c.layer,
            files.c.path,
            files.c.commit_id,
            files.c.n_rows,
            files.c.n_bytes,
            files.c.vector_size,
        )
        .join(commits, commits.c.id == files.c.commit_id)
        .where(files.c.table_name.in_(tables), files.c.n_bytes < target // 2)
        .order_by(commits.c.created_at, files.c.path)
    )
    if runs is not None:
        query = query.where(files.c.run.in_(runs))
    with store.catalog.reading() as conn:
        rows = conn.execute(query).fetchall()
    small: dict[tuple[str, tuple], list[_File]] = {}
    for table, run, model, layer, *rest in rows:
        partition = tuple((k, v) for k, v in (("run", run), ("model", model), ("layer", layer)))
        small.setdefault((table, partition), []).append(_File(*rest))
    plan = {}
    for key, candidates in small.items():
        bins: list[list[_File]] = [[]]
        for f in candidates:
            if bins[-1] and sum(g.n_bytes for g in bins[-1]) + f.n_bytes > target:
                bins.append([])
            bins[-1].append(f)
        if merged := [b for b in bins if len(b) > 1]:
            plan[key] = merged
    return plan


def _compact_partition(
    store: Store, spec: FactTable, partition: tuple, bins: list[list[_File]], report: CompactReport
) -> None:
    """Merge each bin into one new file, then commit them and retire the bins' files in one
    transaction."""
    from actwh.warehouse.writer import write_file

    commit_id = uuid.uuid4().hex[:16]
    values = {k: v for k, v in partition if k in spec.partition}
    folder = layout.partition_key(spec.name, values)
    written = []
    try:
        for i, group in enumerate(bins):
            tables = [_read(store, f.path) for f in group]
            relative = f"{folder}/{layout.file_name(f'c{i}', commit_id)}"
            row = write_file(store, spec.name, relative, _conform(spec, tables))
            written.append(row | {"commit_id": commit_id, "vector_size": group[0].vector_size})
            crash_point("compact.after_file")
        crash_point("compact.after_files")
        _record(store, spec, values, commit_id, written, [f for g in bins for f in g])
        crash_point("compact.after_record")
    except BaseException:
        store.delete_unrecorded([row["path"] for row in written])
        raise
    report.partitions += 1
    report.files_before += sum(len(g) for g in bins)
    report.files_after += len(written)
    report.bytes += sum(f.n_bytes for g in bins for f in g)
    report.rows += sum(f.n_rows for g in bins for f in g)


def _record(
    store: Store, spec: FactTable, values: dict, commit_id: str, written: list, merged: list
) -> None:
    """The partition's transaction: a commit of the new files, the merged ones retired, the
    commits they came from recorded."""
    import sqlalchemy as sa

    from actwh.warehouse.catalog import now
    from actwh.warehouse.retired import retire

    catalog = store.catalog
    sources = {f.commit_id for f in merged}
    with catalog.begin() as conn:
        earlier = catalog.tables["commit_sources"]
        found = conn.execute(
            sa.select(earlier.c.source_commit).where(earlier.c.commit_id.in_(sorted(sources)))
        )
        sources |= {source for (source,) in found}  # a compaction's own sources, transitively
        catalog.insert(
            conn,
            "commits",
            {
                "id": commit_id,
                "run": values.get("run"),
                "model": values.get("model"),
                "shard": "compact",
                "n_prompts": 0,
                "created_at": now(),
            },
        )
        retire(catalog, conn, [f.path for f in merged], commit_id)
        catalog.insert(conn, "commit_files", written)
        catalog.insert(
            conn,
            "commit_sources",
            [{"commit_id": commit_id, "source_commit": s} for s in sorted(sources)],
        )


def _read(store: Store, relative: str) -> pa.Table:
    with store.open_input(relative) as f:
        return pq.read_table(f)


def _conform(spec: FactTable, tables: list[pa.Table]) -> list[pa.Table]:
    """The files' rows in one schema: every column the table declares (NULL where an older
    file lacks one), vectors in the widest dtype among them (float16, unless one holds
    float32)."""
    vector = spec.vector_column
    dtypes = {t.schema.field(vector).type.value_type for t in tables if vector in t.column_names}
    dtype = "float32" if pa.float32() in dtypes else "float16"
    sizes = {t.schema.field(vector).type.list_size for t in tables if vector in t.column_names}
    if len(sizes) > 1:
        raise ActwhError(f"{spec.name}: files of one partition hold vectors of sizes {sizes}")
    schema = spec.arrow_schema(next(iter(sizes)) if sizes else None, dtype)
    return [
        pa.table(
            [
                t.column(f.name).cast(f.type)
                if f.name in t.column_names
                else pa.nulls(t.num_rows, f.type)
                for f in schema
            ],
            schema=schema,
        )
        for t in tables
    ]
