"""Reading a warehouse: a DuckDB snapshot of everything committed when it was taken.

The snapshot copies the catalog tables (they are small, and a copy is what makes it a snapshot:
a commit that lands while a query runs is simply not part of that query) into a private temporary
DuckDB file, which queries then open read-only. It never holds the catalog open, so it never
blocks a writer. Opening reads the catalog and nothing else: every fact table is a view over a
:class:`~actwh.warehouse.pruning.CommittedFiles` dataset, which chooses, when a query scans it,
the committed files whose partition values the scan's filter can match, and reads those.

User SQL may only read, and only the warehouse's committed files: the rule is enforced by DuckDB
and the catalog, not by reading the SQL. The connection is read-only (no statement can write, not
even a data-modifying CTE) and has external access off — DuckDB opens no file, no URL and no
extension; the only data outside the catalog copy it can reach is what the fact tables' datasets
read, which is what the catalog lists — and its configuration is locked so no query can undo any
of it.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa
from duckdb.sqltypes import FLOAT, INTEGER, VARCHAR

from actwh.arguments import check_text
from actwh.errors import ActwhError, BadInput, Damaged, NotFound
from actwh.warehouse.arrays import from_blob
from actwh.warehouse.layout import catalog_partition
from actwh.warehouse.locks import retry_while_locked
from actwh.warehouse.schema import (
    catalog_table_names,
    catalog_upgrades,
    fact_table_names,
    fact_tables,
    snapshot_ddl,
    sql_macros,
)
from actwh.warehouse.store import Store
from actwh.warehouse.vector_tokens import Readouts

if TYPE_CHECKING:  # pyarrow.dataset imports pandas (0.2 s): only when a fact table is read
    from actwh.warehouse.pruning import CommittedFiles, Partition

# User SQL may only read. DuckDB classifies DESCRIBE, SHOW, VALUES and WITH ... SELECT as SELECT.
_READ_ONLY = {"SELECT"}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


T = TypeVar("T")


class Snapshot:
    """A read-only view of a warehouse.

    Attributes
    ----------
    con
        The read-only DuckDB connection; its tables are the catalog's, its views the fact tables.
    datasets
        Each fact table's :class:`~actwh.warehouse.pruning.CommittedFiles`, which its view scans.
    """

    def __init__(self, store: Store):
        self.store = store
        self._dir = tempfile.TemporaryDirectory(prefix="actwh-snapshot-")
        path = str(Path(self._dir.name) / "snapshot.duckdb")
        self.con = duckdb.connect(path)
        try:
            # The copy stays in the write-ahead log, which the read-only connection replays:
            # writing it out at close cost a third of opening 10^5 files' catalog.
            self.con.execute("SET checkpoint_threshold = '1TB'")
            self.con.execute("PRAGMA disable_checkpoint_on_shutdown")
            self._copy_catalog()
            self._decode_directions()
        finally:
            self.con.close()
        self.con = duckdb.connect(path, read_only=True)
        # The catalog copy, for what the datasets look up while a query runs on self.con (the
        # scans of one query may ask at once, from DuckDB's threads: one at a time).
        self._catalog = self.con.cursor()
        self._catalog_lock = threading.Lock()
        # A fact table's view is made when a query first names it, or names a macro that reads
        # it; a macro, when a query first names it (or a macro that calls it).
        self.datasets: dict[str, CommittedFiles] = {}
        self._macros: set[str] = set()
        self._views_lock = threading.Lock()
        self._kept: dict[Hashable, Any] = {}  # what once() computed
        self.readouts = Readouts(
            self._readout_files(),
            lambda model: self.files("vocabulary", model=model),
            store.local_copy,
            store.open_input,
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
        for setting in (
            "SET enable_external_access = false",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET enable_progress_bar = false",  # a long query must not draw on stdout
            "SET lock_configuration = true",
        ):
            self.con.execute(setting)

    def _copy_catalog(self) -> None:
        for statement in snapshot_ddl():
            self.con.execute(statement)
        if self.store.catalog_file is not None:
            self._copy_duckdb_catalog(self.store.catalog_file)
        else:
            self._copy_sqlalchemy_catalog()
        # A catalog written by an older actwh reads as if upgraded (in this copy only).
        for statement in catalog_upgrades():
            self.con.execute(statement)
        unfilled = self.con.execute(
            "SELECT path FROM commit_files WHERE run IS NULL AND model IS NULL AND path LIKE '%=%'"
        ).fetchall()
        if unfilled:  # files recorded by an older actwh: their partition values, from paths
            values = [catalog_partition(path) for (path,) in unfilled]
            self.con.execute(
                "UPDATE commit_files SET run = v.run, model = v.model, layer = v.layer FROM "
                "(SELECT unnest($path) AS path, unnest($run) AS run, unnest($model) AS model, "
                "unnest($layer) AS layer) v WHERE commit_files.path = v.path",
                {
                    "path": [path for (path,) in unfilled],
                    **{c: [v[c] for v in values] for c in ("run", "model", "layer")},
                },
            )

    def _copy_duckdb_catalog(self, path: Path) -> None:
        # Attached directly rather than through SQLAlchemy: `actwh sql` must start fast.
        attach = f"ATTACH {_quote(str(path))} AS stored_catalog (READ_ONLY)"
        try:
            retry_while_locked(lambda: self.con.execute(attach), f"the catalog {path}", 300.0)
        except duckdb.Error as error:  # unreadable for another reason (permissions, ...)
            raise ActwhError(f"the catalog {path} cannot be read: {_first_line(error)}") from error
        try:
            # The columns this actwh knows that the stored catalog has: an older catalog lacks
            # some tables and columns (they read as empty and NULL), a newer one may have more.
            stored = self.con.execute(
                "SELECT table_name, list(column_name) FROM duckdb_columns() "
                "WHERE database_name = 'stored_catalog' GROUP BY table_name"
            ).fetchall()
            present = {table: set(columns) for table, columns in stored}
            declared = dict(
                self.con.execute(
                    "SELECT table_name, list(column_name ORDER BY column_index) "
                    "FROM duckdb_columns() WHERE database_name = current_database() GROUP BY 1"
                ).fetchall()
            )
            for name in catalog_table_names():
                known = declared[name]
                columns = ", ".join(c for c in known if c in present.get(name, ()))
                if columns:
                    copy = f"SELECT {columns} FROM stored_catalog.{name}"
                    self.con.execute(f"INSERT INTO {name} ({columns}) {copy}")
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
            if rows:  # one statement a table, its columns as lists: rows one by one are slow
                # the columns this actwh knows: a newer actwh's, or a user's, are left out
                known = set(catalog.tables[name].columns.keys())
                fields = [(i, f) for i, f in enumerate(rows[0]._fields) if f in known]
                columns = ", ".join(f for _, f in fields)
                lists = ", ".join(f"unnest($c{i})" for i, _ in fields)
                values = {f"c{i}": [r[i] for r in rows] for i, _ in fields}
                self.con.execute(f"INSERT INTO {name} ({columns}) SELECT {lists}", values)

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

    # ---- the fact tables' files ----------------------------------------------------------------

    def files(self, table: str, **partition) -> list[str]:
        """The committed files of ``table`` (relative to the warehouse), in path order; with
        ``run=``, ``model=`` or ``layer=`` (a value or a list of values), only those of these
        partitions."""
        where: list[str] = ["table_name = $table"]
        params: dict[str, object] = {"table": table}
        for column, values in partition.items():
            values = values if isinstance(values, list | tuple | set) else [values]
            where.append(f"{column} IN (SELECT unnest(${column}))")
            params[column] = [str(v) if column != "layer" else int(v) for v in values]
        query = f"SELECT path FROM commit_files WHERE {' AND '.join(where)} ORDER BY path"
        return [path for (path,) in self._lookup(query, params)]

    def read_paths(self, table: str) -> list[str]:
        """The committed files of ``table`` as another reader (polars) opens them: absolute
        paths, or URLs on the object store."""
        return [self.store.url(p) for p in self.files(table)]

    def vector_sizes(self, table: str) -> set[int]:
        """The vector sizes of ``table``'s committed files (empty for a table without vectors)."""
        rows = self._lookup(
            "SELECT DISTINCT vector_size FROM commit_files "
            "WHERE table_name = $table AND vector_size IS NOT NULL",
            {"table": table},
        )
        return {size for (size,) in rows}

    def _lookup(self, query: str, params: dict) -> list[tuple]:
        """Rows of a query of the catalog copy, from any thread, even while a query runs."""
        with self._catalog_lock:
            return self._catalog.execute(query, params).fetchall()

    def _partitions(self, table: str) -> list[Partition]:
        """``table``'s partitions and their files, from the catalog copy."""
        from actwh.warehouse.pruning import Partition

        spec = fact_tables()[table]
        rows = self._lookup(
            "SELECT run, model, layer, list(path ORDER BY path), list(n_bytes ORDER BY path) "
            "FROM commit_files WHERE table_name = $table GROUP BY ALL",
            {"table": table},
        )
        return [
            Partition(
                {
                    c: v
                    for c, v in zip(("run", "model", "layer"), values, strict=True)
                    if c in spec.partition
                },
                paths,
                sizes,
            )
            for *values, paths, sizes in rows
        ]

    def dataset(self, table: str) -> CommittedFiles:
        """The dataset of the fact table ``table`` (and its view, made on first use)."""
        self._ensure_views(table)
        return self.datasets[table]

    def _ensure_views(self, query: str) -> None:
        """Make the views of the fact tables ``query`` can read, and the macros it can call,
        that are not made yet (macros after the views they read, in schema.sql's order)."""
        tables, macros = named(query)
        with self._views_lock:
            for table in sorted(tables - set(self.datasets)):
                self.datasets[table] = self._dataset(fact_tables()[table])
                self.con.register(f"_files_{table}", self.datasets[table])
                self.con.execute(f"CREATE TEMP VIEW {table} AS {self._view_sql(table)}")
            for macro, statement in _macros().items():
                if macro in macros and macro not in self._macros:
                    self.con.execute(statement.replace("CREATE MACRO", "CREATE TEMP MACRO", 1))
                    self._macros.add(macro)

    def _dataset(self, spec) -> CommittedFiles:
        from actwh.warehouse.pruning import committed_files

        fs, path = self.store.filesystem()
        return committed_files(
            spec, self.vector_sizes(spec.name), fs, path, lambda: self._partitions(spec.name)
        )

    def _view_sql(self, table: str) -> str:
        """The view of ``table``: its dataset's columns, less the vectors' scale, which it
        applies (see schema.sql)."""
        spec = fact_tables()[table]
        columns = []
        for column, _ in spec.read_columns:
            if column == spec.vector_column and spec.scale_column:
                stored = self.datasets[table].schema.field(column).type
                fixed = pa.types.is_fixed_size_list(stored)
                vector_type = f"FLOAT[{stored.list_size}]" if fixed else "FLOAT[]"
                scale = spec.scale_column  # applied only where a row has one (see schema.sql)
                scaled = f"list_transform({column}, lambda x: x * {scale})"
                columns.append(
                    f"(CASE WHEN {scale} IS NULL THEN {column} ELSE {scaled} END)::{vector_type} "
                    f"AS {column}"
                )
            else:
                columns.append(column)
        return f"SELECT {', '.join(columns)} FROM _files_{table}"

    def once(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()``, computed on first use of ``key`` and kept with this snapshot: a
        snapshot never changes, so neither does what is derived from it (the server's catalog
        answers, the selectivity analyses' shared numbers)."""
        if key not in self._kept:
            self._kept[key] = compute()
        return self._kept[key]

    def models(self) -> dict[str, dict]:
        """The catalog's models, each row by name, read once and kept (a search and every page
        ask for a shape)."""
        return self._by_name("models")

    def runs(self) -> dict[str, dict]:
        """The catalog's runs, each row by name, read once and kept (a named query checks its
        runs, a page reads a run's model and config)."""
        return self._by_name("runs")

    def model(self, name: str) -> dict:
        """The catalog's row of model ``name``; empty where there is none (a name not there
        adds nothing to what the snapshot keeps)."""
        return self.models().get(name, {})

    def _by_name(self, table: str) -> dict[str, dict]:
        def read() -> dict[str, dict]:
            rows = self.execute(f"select * from {table}").to_pylist()  # noqa: S608 - ours
            return {row["name"]: row for row in rows}

        return self.once((table, "by name"), read)

    def execute(self, query: str, params: dict | list | None = None) -> pa.Table:
        """Run one read-only SQL statement; return its result."""
        with _sql_errors():
            return self.relation(query, params).to_arrow_table()

    def stream(
        self, query: str, params: dict | list | None = None, rows: int = 65_536
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Run one read-only SQL statement; its result's schema, and its rows in record batches
        of at most ``rows`` (memory stays flat however large the result)."""
        with _sql_errors():
            reader = self.relation(query, params).to_arrow_reader(rows)

        def batches() -> Iterator[pa.RecordBatch]:
            with _sql_errors():
                yield from reader

        return reader.schema, batches()

    def relation(self, query: str, params: dict | list | None = None) -> duckdb.DuckDBPyRelation:
        """One read-only statement as a DuckDB relation; refuses anything else."""
        if not isinstance(query, str) or not query.isascii():
            check_text("the SQL", query)
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
        query = statements[0].query
        self._ensure_views(query)
        return self.con.sql(query, params=params) if params else self.con.sql(query)

    def close(self) -> None:
        self._catalog.close()
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
        unreadable = re.search(r"registered as '_files_(\w+)' failed: (?:\w+: )?(.*)", line)
        if unreadable:  # a committed file pyarrow could not read: damaged, or deleted since
            table, reason = unreadable.groups()
            reason = re.sub(r"'([^']*/)?([^'/]+\.parquet)'", r"\2", reason)
            raise Damaged(f"cannot read table {table}: {reason} (run: actwh check WH)") from error
        for prefix, kind in OWN_ERRORS.items():  # a macro's or named query's: the message is it
            if f"Error: {prefix}" in line:
                raise kind(line.split(f"Error: {prefix}", 1)[1]) from error
        raise ActwhError(f"SQL error: {line}") from error


# What SQL of actwh's own (schema.sql's macros, queries/) starts an error(...) message with, so
# that the message reaches the user as it is, not as DuckDB's "SQL error: Invalid Input Error",
# and of which kind: something the warehouse does not hold, or a parameter no query accepts.
OWN_ERRORS = {"actwh: ": NotFound, "actwh-input: ": BadInput}


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def named(query: str) -> tuple[set[str], set[str]]:
    """The fact tables ``query`` can read and the macros it can call: those it names, and those
    the macros it names call and read (a word match: a word that only looks like a table's name
    costs an unused view)."""
    words = set(re.findall(r"\w+", query.lower()))
    macros, reads = set(), set(words & fact_table_names())
    for macro, (calls, tables) in _macro_uses().items():
        if macro in words:
            macros |= {macro, *calls}
            reads |= tables
    return reads, macros


@cache
def _macros() -> dict[str, str]:
    """schema.sql's macros by name, in its order (a macro comes after those it calls)."""
    return {
        match[1].lower(): statement
        for statement in sql_macros()
        if (match := re.match(r"CREATE MACRO (\w+)", statement))
    }


@cache
def _macro_uses() -> dict[str, tuple[set[str], set[str]]]:
    """Each macro's (macros it calls, fact tables it reads), through the macros it calls."""
    words = {
        name: set(re.findall(r"\w+", s.lower().split(" as ", 1)[-1]))
        for name, s in _macros().items()
    }
    uses: dict[str, tuple[set[str], set[str]]] = {}
    for name in _macros():  # in order: the macros it calls are done
        calls = {m for m in words[name] & set(uses) if m != name}
        tables = words[name] & fact_table_names()
        for callee in set(calls):
            calls |= uses[callee][0]
            tables |= uses[callee][1]
        uses[name] = (calls, tables)
    return uses
