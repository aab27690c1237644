"""A fact table as DuckDB scans it: the committed files a query can need, chosen from the catalog.

DuckDB scans a registered pyarrow dataset by calling its ``scanner(columns=..., filter=...)``,
with the filter of that scan (``run = 'base' AND layer = 19``, data columns included) and the
columns it reads. :class:`CommittedFiles` answers that call from the catalog: the partition
values ``commit_files`` records for every committed file decide which files the filter can
match — pyarrow prunes one stand-in fragment per partition by those values, opening nothing — and
only those files are read, by pyarrow (a local file, or an object through pyarrow's S3 client,
whose size the catalog already knows; a small object is fetched whole, in one request). So
opening a warehouse reads no file, a query of one run and one layer reads that partition's files
and no other footer, and DuckDB itself opens no file at all: user SQL cannot name one.

A filter DuckDB cannot push into the scan (``run IN (SELECT ...)``, a join on ``run``) reads the
table's every file, as a plain scan would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from actwh.warehouse.layout import PARTITION_COLUMNS
from actwh.warehouse.schema import VECTOR_TYPE, FactTable, arrow_type

# On an object store, files up to this size are fetched whole, FETCHES_AT_ONCE at a time, as
# long as those a scan chose add up to no more than SMALL_FILES_AT_ONCE (they are held in memory).
SMALL_FILE = 1 << 20
SMALL_FILES_AT_ONCE = 256 << 20
FETCHES_AT_ONCE = 16


@dataclass(frozen=True)
class Partition:
    """One partition of a table as the catalog lists it: its values (``{"run": "base",
    "layer": 19}``) and its committed files (paths relative to the warehouse, and bytes)."""

    values: dict
    paths: list[str]
    sizes: list[int]


class CommittedFiles(ds.FileSystemDataset):
    """A fact table's committed files as a pyarrow dataset whose fragments are made per scan.

    Made by :func:`committed_files`; see the module's docstring."""

    spec: FactTable
    _partitions: Callable[[], list[Partition]]  # the catalog's partitions of the table
    _location: Callable[[str], str]  # a relative path as the file system opens it
    _index: tuple[ds.FileSystemDataset, dict[str, Partition]] | None
    _lock: threading.Lock

    def scanner(self, columns=None, filter=None, **options):  # noqa: A002 - pyarrow's keyword
        """The scan DuckDB asks for, over the files whose partition can match ``filter``."""
        files = [
            (self._location(path), size, _expression(partition.values, self.schema))
            for partition in self.choose(filter)
            for path, size in zip(partition.paths, partition.sizes, strict=True)
        ]
        fetched = self._fetch_small(files)
        fragments = [
            self.format.make_fragment(pa.BufferReader(fetched[where]), partition_expression=expr)
            if where in fetched
            else self.format.make_fragment(
                where, filesystem=self.filesystem, partition_expression=expr, file_size=size
            )
            for where, size, expr in files
        ]
        chosen = ds.FileSystemDataset(fragments, self.schema, self.format, self.filesystem)
        return chosen.scanner(columns=columns, filter=filter, **options)

    def _fetch_small(self, files: list[tuple[str, int, pc.Expression]]) -> dict[str, bytes]:
        """On an object store, the small files among ``files``, each fetched whole in one
        request (several at once): reading a file's footer and then its columns would fetch
        a small file twice. Not when they add up to more than :data:`SMALL_FILES_AT_ONCE`."""
        if isinstance(self.filesystem, pafs.LocalFileSystem):
            return {}
        small = [(where, size) for where, size, _ in files if size <= SMALL_FILE]
        if not small or sum(size for _, size in small) > SMALL_FILES_AT_ONCE:
            return {}

        def fetch(where: str) -> bytes:
            with self.filesystem.open_input_stream(where) as f:
                return f.read()

        with ThreadPoolExecutor(FETCHES_AT_ONCE) as pool:
            found = pool.map(fetch, [where for where, _ in small])
            return dict(zip((where for where, _ in small), found, strict=True))

    # What else reads a dataset (polars' scan_pyarrow_dataset calls to_batches) goes through
    # the same choice of files.

    def to_batches(self, columns=None, filter=None, **options):  # noqa: A002
        return self.scanner(columns=columns, filter=filter, **options).to_batches()

    def to_table(self, columns=None, filter=None, **options):  # noqa: A002
        return self.scanner(columns=columns, filter=filter, **options).to_table()

    def count_rows(self, filter=None, **options):  # noqa: A002
        return self.scanner(filter=filter, **options).count_rows()

    def head(self, num_rows, columns=None, filter=None, **options):  # noqa: A002
        return self.scanner(columns=columns, filter=filter, **options).head(num_rows)

    def choose(self, filter: pc.Expression | None = None) -> list[Partition]:  # noqa: A002
        """The partitions whose values can satisfy ``filter`` (all of them without one)."""
        index, by_path = self._partition_index()
        if filter is None:
            return list(by_path.values())
        return [by_path[f.path] for f in index.get_fragments(filter=filter)]

    def _partition_index(self) -> tuple[ds.FileSystemDataset, dict[str, Partition]]:
        """A dataset of one stand-in fragment per partition (never opened: only its partition
        expression is used), and each stand-in's partition. Made on the first scan."""
        with self._lock:
            if self._index is None:
                partitions = self._partitions()
                by_path = {self._location(p.paths[0]): p for p in partitions}
                stand_ins = [
                    self.format.make_fragment(
                        path,
                        filesystem=self.filesystem,
                        partition_expression=_expression(p.values, self.schema),
                    )
                    for path, p in by_path.items()
                ]
                index = ds.FileSystemDataset(stand_ins, self.schema, self.format, self.filesystem)
                self._index = (index, by_path)
            return self._index


def committed_files(
    spec: FactTable,
    vector_sizes: set[int],
    filesystem: pafs.FileSystem,
    location: Callable[[str], str],
    partitions: Callable[[], list[Partition]],
) -> CommittedFiles:
    """The dataset DuckDB scans for the fact table ``spec``: its declared columns (vectors as
    float32 — pyarrow widens the stored float16 exactly; a column an older file lacks reads as
    NULL), its files at ``location(relative)`` on ``filesystem``, its partitions listed by
    ``partitions()`` when first scanned."""
    schema = dataset_schema(spec, vector_sizes)
    labels = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    parquet = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=labels))
    dataset = CommittedFiles([], schema, parquet, filesystem)
    dataset.spec = spec
    dataset._partitions = partitions
    dataset._location = location
    dataset._index = None
    dataset._lock = threading.Lock()
    return dataset


def dataset_schema(spec: FactTable, vector_sizes: set[int]) -> pa.Schema:
    """The Arrow schema readers see for ``spec``: its columns in declared order, vectors as
    ``fixed_size_list<float32>[d]`` when the table holds one size ``d`` (else variable lists),
    and strings other than the partition columns as dictionaries: pyarrow then keeps Parquet's
    dictionary pages instead of building every string (0.60 → 0.37 s over 10 M projection rows,
    BENCHMARKS.md (c)); DuckDB reads a dictionary column as VARCHAR."""
    fields = []
    for column, type_ in spec.columns:
        if type_ == VECTOR_TYPE:
            size = next(iter(vector_sizes)) if len(vector_sizes) == 1 else -1
            fields.append(pa.field(column, pa.list_(pa.float32(), size)))
        elif arrow_type(type_) == pa.string() and column not in PARTITION_COLUMNS:
            fields.append(pa.field(column, pa.dictionary(pa.int32(), pa.string())))
        else:
            fields.append(pa.field(column, arrow_type(type_)))
    return pa.schema(fields)


def _expression(values: dict, schema: pa.Schema) -> pc.Expression:
    """``values`` as the expression pyarrow keeps true for a partition's rows."""
    expression = pc.scalar(True)
    for column, value in values.items():
        if column in PARTITION_COLUMNS and column in schema.names:
            typed = pa.scalar(value, schema.field(column).type)
            expression = expression & (pc.field(column) == typed)
    return expression
