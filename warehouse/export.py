"""Other engines read the warehouse: the committed files of a table, and exports as plain Parquet.

A table's directory may hold files no commit lists: an orphan left by a crash between rename and
record, a leftover ``_part-*.parquet.tmp``. actwh's own readers open only the files the catalog
lists; :func:`committed_files` gives that list to engines that take one (Spark, Trino, DuckDB).

:func:`export_table` writes a table, or a filtered part of it, as Parquet that any engine reads
without special settings: only committed rows, vectors as float32 (Spark refuses Parquet's FLOAT16,
the warehouse's default), every file with every declared column, Hive-partitioned like the
warehouse (``OUT/run=base/layer=3/part-*.parquet``), and ``OUT/_manifest.json`` listing the files.
It streams record batch by record batch (memory stays flat) into a temporary directory renamed
into place at the end, so an export is whole or absent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from actwh.errors import ActwhError, NotFound, arg
from actwh.warehouse.arrays import column_to_numpy, vectors_to_column
from actwh.warehouse.layout import staged
from actwh.warehouse.schema import VECTOR_TYPE, FactTable, arrow_type, fact_tables
from actwh.warehouse.store import Store

MANIFEST = "_manifest.json"
BATCH_ROWS = 16_384


def table_spec(table: str) -> FactTable:
    spec = fact_tables().get(table)
    if spec is None:
        raise NotFound(f"{arg('table')} {table}: no such table; tables: {', '.join(fact_tables())}")
    return spec


def check_filters(spec: FactTable, filters: dict[str, list], names: dict[str, str]) -> None:
    """Refuse a filter on a column the table lacks; ``names`` maps columns to argument names."""
    columns = {c for c, _ in spec.read_columns}
    for column in filters:
        if column not in columns:
            raise ActwhError(
                f"{arg(names.get(column, column))}: table {spec.name} has no column {column}; "
                f"its columns: {', '.join(c for c, _ in spec.read_columns)}"
            )


def readable(store: Store, table: str, paths: list[str]) -> None:
    """Raise, naming ``actwh check``, when a listed file of ``table`` cannot be read (its
    Parquet footer): what a query of it would say."""
    for path in paths:
        try:
            with store.open_input(path) as f:
                pq.read_metadata(f)
        except (OSError, pa.ArrowException) as error:
            raise ActwhError(
                f"cannot read table {table}: {Path(path).name}: {error} (run: actwh check WH)"
            ) from None


def committed_files(snapshot, table: str, filters: dict[str, list]) -> list[str]:
    """The committed files of ``table`` (paths relative to the warehouse), keeping those whose
    partition values pass ``filters`` (filters on other columns do not narrow files)."""
    spec = table_spec(table)
    return snapshot.files(table, **{c: v for c, v in filters.items() if c in spec.partition})


def export_table(
    snapshot, table: str, out: Path, filters: dict[str, list], progress: bool = True
) -> dict:
    """Write the committed rows of ``table`` that pass ``filters`` under ``out`` (which must not
    exist) with a manifest; returns the manifest."""
    spec = table_spec(table)
    files = committed_files(snapshot, table, filters)
    readable(snapshot.store, table, files)  # a damaged file is an error before anything is written
    if not files:
        raise ActwhError(f"nothing to export: no committed files of {table} match the filters")
    row_filters = {c: v for c, v in filters.items() if c not in spec.partition}
    schema = pa.schema(
        [
            (c, pa.list_(pa.float32()) if t == VECTOR_TYPE else arrow_type(t))
            for c, t in spec.data_columns
            if c != spec.scale_column  # applied to the vectors (see schema.sql)
        ]
    )
    written = []
    with staged(out, "the export") as result:
        for relative in tqdm(files, desc=f"export {table}", unit="file", disable=not progress):
            target = result / Path(relative).relative_to(Path("data") / table)
            with snapshot.store.open_input(relative) as source:
                rows = _copy(source, target, schema, row_filters, spec.scale_column)
            if rows:
                written.append(
                    {
                        "path": str(target.relative_to(result)),
                        "rows": rows,
                        "bytes": target.stat().st_size,
                        "source": relative,
                    }
                )
        if not written:
            raise ActwhError(f"nothing to export: no rows of {table} match the filters")
        manifest = {
            "table": table,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "warehouse": snapshot.store.location,
            "filters": {c: list(v) for c, v in filters.items()},
            "partition_columns": [{"name": c, "type": spec.column_type(c)} for c in spec.partition],
            "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
            "rows": sum(f["rows"] for f in written),
            "files": written,
        }
        (result / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _copy(
    source: pa.NativeFile,
    target: Path,
    schema: pa.Schema,
    row_filters: dict[str, list],
    scale: str | None,
) -> int:
    """Stream ``source``'s rows that pass ``row_filters`` into ``target`` in ``schema``, its
    vectors times their ``scale`` column where a row has one."""
    rows = 0
    writer = None
    try:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=BATCH_ROWS):
            for column, values in row_filters.items():
                batch = batch.filter(pc.is_in(batch.column(column), pa.array(values)))
            if not batch.num_rows:
                continue
            if writer is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(target, schema, compression="zstd")
            writer.write_table(_conform(batch, schema, scale))
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def _conform(batch: pa.RecordBatch, schema: pa.Schema, scale: str | None) -> pa.Table:
    """A batch with every column of ``schema`` (NULL where an older file lacks one), vectors as
    float32 lists, scaled."""
    columns = []
    for field in schema:
        if field.name not in batch.schema.names:
            columns.append(pa.nulls(batch.num_rows, field.type))
        elif pa.types.is_list(field.type):
            vectors = column_to_numpy(batch.column(field.name)).astype(np.float32, copy=False)
            if scale in batch.schema.names:
                factor = batch.column(scale).to_numpy(zero_copy_only=False)
                vectors = vectors * np.nan_to_num(factor, nan=1.0)[:, None].astype(np.float32)
            columns.append(vectors_to_column(vectors).cast(field.type))
        else:
            columns.append(batch.column(field.name).cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)
