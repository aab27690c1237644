"""Reading a warehouse: a DuckDB snapshot of everything committed when it was taken.

The snapshot copies the catalog tables (they are small) and defines one view per fact table over
exactly the Parquet files the catalog lists. It never holds the catalog open, so it never blocks
a writer, and a commit that lands while a query runs is simply not part of that query.

User SQL may only read, and only the warehouse's committed files: the rule is enforced by DuckDB,
not by reading the SQL. The snapshot is built in a private temporary database file, which queries
then open read-only (no statement can write, not even a data-modifying CTE), with external access
off and ``allowed_paths`` set to exactly the committed files (no read_text('/etc/passwd'), no
relative path resolved against the working directory, no orphan, no glob, no URL), extension
install and load off, and the configuration locked so no query can undo any of it.

DuckDB is given absolute paths. It reads Hive partitions (``run=base/``) from the whole path, so
a warehouse whose own path holds a ``key=value`` folder is read through a link to it inside the
snapshot's private directory.
"""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
from duckdb.sqltypes import FLOAT, INTEGER, VARCHAR

from actwh.errors import ActwhError, BadInput, NotFound
from actwh.warehouse.arrays import from_blob
from actwh.warehouse.locks import retry_while_locked
from actwh.warehouse.schema import (
    VECTOR_TYPE,
    catalog_ddl,
    catalog_table_names,
    catalog_upgrades,
    fact_tables,
    sql_macros,
)
from actwh.warehouse.store import Store
from actwh.warehouse.vector_tokens import Readouts

# User SQL may only read. DuckDB classifies DESCRIBE, SHOW, VALUES and WITH ... SELECT as SELECT.
_READ_ONLY = {"SELECT"}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Snapshot:
    """A read-only view of a warehouse.

    Attributes
    ----------
    con
        The read-only DuckDB connection; its tables are the catalog's, its views the fact tables.
    files
        For each fact table, the committed files (paths relative to the warehouse root).
    vector_sizes
        For each fact table with a vector column, the vector sizes present in its files.
    """

    def __init__(self, store: Store, views: bool = True):
        """``views=False``: the catalog only (what is committed, no fact-table views or
        macros), for listing files: it skips reading every committed file's footer."""
        self.store = store
        self.files: dict[str, list[str]] = defaultdict(list)
        self.vector_sizes: dict[str, set[int]] = defaultdict(set)
        self.broken: dict[str, str] = {}
        self.sizes: dict[str, int] = {}  # on an object store: each committed key's bytes
        self._dir = tempfile.TemporaryDirectory(prefix="actwh-snapshot-")
        # Where DuckDB opens files: the directory (or a link to it), or the object store's URLs
        # through its client, registered on each connection.
        self.read_root = None if store.remote else _read_root(store.root, Path(self._dir.name))
        path = str(Path(self._dir.name) / "snapshot.duckdb")
        self.con = self._connect(path)
        try:
            self._build(views)
        finally:
            self.con.close()
        self.con = self._connect(path, read_only=True)
        self.readouts = Readouts(
            self._readout_files(), self.read_paths("vocabulary"), store.local_copy
        )
        self.con.create_function(  # type: ignore[call-overload]  # (duckdb's stub: no "arrow" UDF)
            "vector_tokens",
            self.readouts.sql_function,
            [VARCHAR, duckdb.list_type(FLOAT), INTEGER, INTEGER],
            duckdb.list_type(VARCHAR),
            type="arrow",
            null_handling="special",  # NULL in, NULL out, row by row (not the whole call)
            side_effects=False,
        )
        readable = ", ".join(_quote(p) for t in self.files for p in self.read_paths(t))
        for setting in (
            f"SET allowed_paths = [{readable}]",
            "SET enable_external_access = false",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET enable_progress_bar = false",  # a long query must not draw on stdout
            "SET lock_configuration = true",
        ):
            self.con.execute(setting)

    def _connect(self, path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(path, read_only=read_only)
        if self.store.remote:
            con.register_filesystem(self.store.remote.fsspec(self.sizes))
            # committed files never change: their footers are read once per snapshot
            con.execute("SET parquet_metadata_cache = true")
        return con

    def _build(self, views: bool = True) -> None:
        """Catalog tables, fact-table views and macros, in the database being built."""
        self._copy_catalog()
        if not views:
            return
        self._decode_directions()
        # A table whose files DuckDB cannot read (damaged on disk) does not take the others down:
        # its view is left empty, and a query or a file listing that names it gets the reason.
        for spec in fact_tables().values():
            try:
                self.con.execute(f"CREATE VIEW {spec.name} AS {self._view_sql(spec.name)}")
            except duckdb.Error as error:
                self.broken[spec.name] = _first_line(error)
                self.con.execute(f"CREATE VIEW {spec.name} AS {self._view_sql(spec.name, [])}")
        for statement in sql_macros():  # they name the tables and views above
            self.con.execute(statement)

    def _copy_catalog(self) -> None:
        for statement in catalog_ddl():
            self.con.execute(statement)
        if self.store.catalog_file is not None:
            self._copy_duckdb_catalog(self.store.catalog_file)
        else:
            self._copy_sqlalchemy_catalog()
        # A catalog written by an older actwh reads as if upgraded (in this copy only).
        for statement in catalog_upgrades():
            self.con.execute(statement)
        for table, path, size, n_bytes in self.con.execute(
            "SELECT table_name, path, vector_size, n_bytes FROM commit_files ORDER BY path"
        ).fetchall():
            self.files[table].append(path)
            if size is not None:
                self.vector_sizes[table].add(size)
            if self.store.remote:
                self.sizes[self.store.remote.key(path)] = n_bytes

    def _copy_duckdb_catalog(self, path: Path) -> None:
        # Attached directly rather than through SQLAlchemy: `actwh sql` must start fast.
        attach = f"ATTACH {_quote(str(path))} AS stored_catalog (READ_ONLY)"
        try:
            retry_while_locked(lambda: self.con.execute(attach), f"the catalog {path}", 300.0)
        except duckdb.Error as error:  # unreadable for another reason (permissions, ...)
            raise ActwhError(f"the catalog {path} cannot be read: {_first_line(error)}") from error
        try:
            for name in catalog_table_names():
                self.con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM stored_catalog.{name}")
        finally:
            self.con.execute("DETACH stored_catalog")

    def _copy_sqlalchemy_catalog(self) -> None:
        import sqlalchemy as sa

        catalog = self.store.catalog
        with catalog.reading() as conn:
            # SELECT *, not the declared columns: an older catalog may lack some.
            contents = {
                name: conn.execute(sa.text(f"SELECT * FROM {name}")).fetchall()
                for name in catalog.tables
            }
        for name, rows in contents.items():
            if rows:
                marks = ", ".join("?" * len(rows[0]))
                columns = ", ".join(rows[0]._fields)
                self.con.executemany(
                    f"INSERT INTO {name} ({columns}) VALUES ({marks})", [tuple(r) for r in rows]
                )

    def _decode_directions(self) -> None:
        """Replace the stored float32 blob of each direction by ``vec FLOAT[d]``."""
        rows = [
            (model, name, from_blob(blob).tolist())
            for model, name, blob in self.con.execute(
                "SELECT model, name, vector FROM directions"
            ).fetchall()
        ]
        sizes = {len(vec) for _, _, vec in rows}
        cast = f"::FLOAT[{sizes.pop()}]" if len(sizes) == 1 else ""
        # Plain INSERTs, not a registered Arrow table: registering imports pandas (~0.3 s).
        self.con.execute(
            "CREATE TEMP TABLE direction_vectors (model VARCHAR, name VARCHAR, vec FLOAT[])"
        )
        if rows:
            self.con.executemany("INSERT INTO direction_vectors VALUES (?, ?, ?)", rows)
        self.con.execute(
            "CREATE OR REPLACE TABLE directions AS "
            f"SELECT d.* EXCLUDE (vector), v.vec{cast} AS vec FROM directions d "
            "JOIN direction_vectors v USING (model, name)"
        )
        self.con.execute("DROP TABLE direction_vectors")

    def _readout_files(self) -> dict[str, tuple[str, str]]:
        """Each model's readout file, relative, and its sha256 (see
        :mod:`actwh.warehouse.vector_tokens`)."""
        rows = self.con.execute(
            "SELECT model, readout, readout_sha256 FROM vector_indexes WHERE readout IS NOT NULL"
        ).fetchall()
        return {model: (path, sha256) for model, path, sha256 in rows}

    def read_paths(self, table: str) -> list[str]:
        """The committed files of ``table`` as a reader (DuckDB, polars) opens them: absolute
        paths (through the link when the warehouse's own path looks like a partition), or URLs
        on the object store."""
        if self.read_root is None:
            return [self.store.url(p) for p in self.files[table]]
        return [str(self.read_root / p) for p in self.files[table]]

    def _view_sql(self, table: str, paths: list[str] | None = None) -> str:
        spec = fact_tables()[table]
        paths = self.read_paths(table) if paths is None else paths
        sizes = self.vector_sizes[table]
        columns = []
        for column, type_ in spec.read_columns:
            if type_ == VECTOR_TYPE and len(sizes) == 1:
                type_ = f"FLOAT[{next(iter(sizes))}]"
            if not paths:
                columns.append(f"NULL::{type_} AS {column}")
            elif column == spec.vector_column and spec.scale_column:
                scale = spec.scale_column  # applied only where a row has one (see schema.sql)
                scaled = f"list_transform({column}, lambda x: x * {scale})"
                columns.append(
                    f"(CASE WHEN {scale} IS NULL THEN {column} ELSE {scaled} END)::{type_} "
                    f"AS {column}"
                )
            elif type_ != spec.column_type(column):
                columns.append(f"{column}::{type_} AS {column}")
            else:
                columns.append(column)
        if not paths:
            return f"SELECT {', '.join(columns)} WHERE false"
        files = ", ".join(_quote(p) for p in paths)
        hive = ", ".join(f"{_quote(c)}: {spec.column_type(c)}" for c in spec.partition)
        # A file written before a column was declared reads it as NULL: union_by_name fills it
        # in when another file has it, the empty row set of every declared column when none has.
        declared = ", ".join(f"NULL::{t} AS {c}" for c, t in spec.columns)
        return (
            f"SELECT {', '.join(columns)} FROM (SELECT {declared} WHERE false UNION ALL BY NAME "
            f"SELECT * FROM read_parquet([{files}], hive_partitioning = true, "
            f"hive_types = {{{hive}}}, union_by_name = true))"
        )

    def execute(self, query: str, params: dict | list | None = None) -> pa.Table:
        """Run one read-only SQL statement; return its result."""
        with _sql_errors():
            return self._relation(query, params).to_arrow_table()

    def stream(
        self, query: str, params: dict | list | None = None, rows: int = 65_536
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Run one read-only SQL statement; its result's schema, and its rows in record batches
        of at most ``rows`` (memory stays flat however large the result)."""
        with _sql_errors():
            reader = self._relation(query, params).to_arrow_reader(rows)

        def batches() -> Iterator[pa.RecordBatch]:
            with _sql_errors():
                yield from reader

        return reader.schema, batches()

    def _relation(self, query: str, params: dict | list | None) -> duckdb.DuckDBPyRelation:
        """One read-only statement as a DuckDB relation; refuses anything else."""
        try:
            statements = self.con.extract_statements(query)
        except duckdb.Error as error:
            raise ActwhError(f"SQL error: {_first_line(error)}") from error
        if not statements:
            raise ActwhError("no SQL statement given")
        for statement in statements:
            if statement.type.name not in _READ_ONLY:
                raise ActwhError(
                    f"refused: {statement.type.name} statement; SQL on a warehouse is read-only "
                    "(SELECT, WITH, DESCRIBE, SHOW)"
                )
        if len(statements) > 1:
            raise ActwhError(
                f"{len(statements)} SQL statements given; run one at a time (SQL on a warehouse "
                "only reads, so a statement before the last would change nothing)"
            )
        for table in self.broken:
            if re.search(rf"\b{table}\b", query, flags=re.I):
                self.check_readable(table)
        query = statements[0].query
        return self.con.sql(query, params=params) if params else self.con.sql(query)

    def check_readable(self, table: str) -> None:
        """Raise, naming ``actwh check``, when ``table``'s committed files cannot be read."""
        if table in self.broken:
            raise ActwhError(
                f"cannot read table {table}: {self.broken[table]} (run: actwh check WH)"
            )

    def close(self) -> None:
        self.con.close()
        self._dir.cleanup()


@contextmanager
def _sql_errors() -> Iterator[None]:
    """DuckDB's errors as one line each; a refused file access says why."""
    try:
        yield
    except duckdb.PermissionException as error:
        raise ActwhError(
            f"refused: {_first_line(error)}; SQL on a warehouse reads only its committed files"
        ) from error
    except duckdb.Error as error:
        if "read-only mode" in str(error):  # e.g. a data-modifying CTE, classed as SELECT
            raise ActwhError(
                "refused: the statement writes; SQL on a warehouse is read-only"
            ) from error
        line = _first_line(error)
        for prefix, kind in OWN_ERRORS.items():  # a macro's or named query's: the message is it
            if f"Error: {prefix}" in line:
                raise kind(line.split(f"Error: {prefix}", 1)[1]) from error
        raise ActwhError(f"SQL error: {line}") from error


# What SQL of actwh's own (schema.sql's macros, queries/) starts an error(...) message with, so
# that the message reaches the user as it is, not as DuckDB's "SQL error: Invalid Input Error",
# and of which kind: something the warehouse does not hold, or a parameter no query accepts.
OWN_ERRORS = {"actwh: ": NotFound, "actwh-input: ": BadInput}


def _read_root(root: Path, private: Path) -> Path:
    """The path DuckDB opens the warehouse by: ``root``, or a link to it in the snapshot's
    ``private`` directory when a folder of ``root`` looks like a Hive partition (``a=b``)."""
    if not any("=" in part for part in root.parts):
        return root
    link = private / "warehouse"
    if any("=" in part for part in link.parts):
        raise ActwhError(
            f"{root}: DuckDB would read the '=' in its path as a partition, and the temporary "
            f"directory {private.parent} has one too; set TMPDIR to a path without '='"
        )
    link.symlink_to(root, target_is_directory=True)
    return link


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
