"""``schema.sql``, parsed: catalog DDL and tables, and the shape of every Parquet fact table.

schema.sql is the only place tables are declared. This module reads it once, lets DuckDB parse
the DDL (into an in-memory database), and derives from that what the rest of the code needs:
SQLAlchemy tables for the catalog, Arrow schemas for the Parquet writer, and column lists and
Hive partition types for the reader's views.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import duckdb
import pyarrow as pa

_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "INTEGER": pa.int32(),
    "SMALLINT": pa.int16(),
    "BIGINT": pa.int64(),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR[]": pa.list_(pa.string()),
    "INTEGER[]": pa.list_(pa.int32()),
}


def arrow_type(sql_type: str) -> pa.DataType:
    """The Arrow type of a fact table's column type (``VARCHAR``, ``FLOAT``, ...)."""
    return _ARROW_TYPES[sql_type]


VECTOR_TYPE = "FLOAT[]"
VECTOR_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


@dataclass(frozen=True)
class FactTable:
    """A Parquet fact table as declared in schema.sql."""

    name: str
    columns: tuple[tuple[str, str], ...]  # (column, DuckDB type), in declared order
    partition: tuple[str, ...]  # Hive partition columns, outermost first
    # rows per row group, written with min/max statistics (a table read by point lookups);
    # None: the writer's size-based groups
    row_group_rows: int | None = None

    @property
    def data_columns(self) -> list[tuple[str, str]]:
        """Columns stored inside the Parquet files (the partition columns live in the path)."""
        return [(c, t) for c, t in self.columns if c not in self.partition]

    @property
    def vector_column(self) -> str | None:
        return next((c for c, t in self.columns if t == VECTOR_TYPE), None)

    @property
    def scale_column(self) -> str | None:
        """The column whose value times the stored vector is the vector (schema.sql), if any."""
        name = f"{self.vector_column}_scale"
        return name if self.vector_column and name in dict(self.columns) else None

    @property
    def read_columns(self) -> list[tuple[str, str]]:
        """What readers show: every column but the scale, which they apply to the vector."""
        return [(c, t) for c, t in self.columns if c != self.scale_column]

    def column_type(self, column: str) -> str:
        return dict(self.columns)[column]

    def arrow_schema(self, vector_size: int | None = None, dtype: str = "float32") -> pa.Schema:
        """Arrow schema of one file; a vector column becomes ``fixed_size_list<dtype>[size]``."""
        fields = []
        for column, type_ in self.data_columns:
            if type_ == VECTOR_TYPE:
                if vector_size is None:
                    raise ValueError(f"{self.name}.{column} needs a vector size")
                fields.append(pa.field(column, pa.list_(VECTOR_DTYPES[dtype], vector_size)))
            else:
                fields.append(pa.field(column, _ARROW_TYPES[type_]))
        return pa.schema(fields)


def schema_text() -> str:
    return (files("actwh") / "schema.sql").read_text()


@cache
def _sections() -> dict[str, str]:
    parts = re.split(r"^-- section: (\w+)\s*$", schema_text(), flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _statements(section: str) -> list[str]:
    """A section's statements, comments removed (they may contain semicolons)."""
    code = re.sub(r"--[^\n]*", "", _sections()[section])
    return [s.strip() for s in code.split(";") if s.strip()]


def catalog_ddl() -> list[str]:
    """The catalog's CREATE statements, in order, ready to execute one by one."""
    return _statements("catalog")


def snapshot_ddl() -> list[str]:
    """:func:`catalog_ddl` without primary keys, for a reader's copy of the catalog: its rows are
    unique already, and building the keys' indexes took two thirds of copying 20,000 files'
    rows."""
    return [
        re.sub(r",\s*PRIMARY KEY \([^)]*\)", "", statement).replace(" PRIMARY KEY", "")
        for statement in catalog_ddl()
    ]


def catalog_upgrades() -> list[str]:
    """Statements that fill what an older catalog lacks (after its missing columns are added)."""
    return _statements("upgrades")


def sql_macros() -> list[str]:
    """The rules the named queries share (``direction_of``, ``reach_cos``, ...): DuckDB macros."""
    return _statements("macros")


def _parsed(section: str) -> tuple[dict, dict]:
    """A section's tables: ({table: [(column, type, nullable)]}, {table: [pk columns]})."""
    columns, keys = _parse_all()
    tables = set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", _sections()[section]))
    return (
        {t: c for t, c in columns.items() if t in tables},
        {t: k for t, k in keys.items() if t in tables},
    )


@cache
def _parse_all() -> tuple[dict, dict]:
    """Let DuckDB parse every CREATE TABLE of schema.sql, in one in-memory database."""
    con = duckdb.connect()
    for section in ("catalog", "facts"):
        for statement in _statements(section):
            con.execute(statement)
    columns: dict[str, list[tuple[str, str, bool]]] = {}
    rows = con.execute(
        "SELECT table_name, column_name, data_type, is_nullable = 'YES' "
        "FROM information_schema.columns ORDER BY table_name, ordinal_position"
    ).fetchall()
    for table, column, type_, nullable in rows:
        columns.setdefault(table, []).append((column, type_, nullable))
    keys = {
        table: list(cols)
        for table, cols in con.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    }
    con.close()
    return columns, keys


def catalog_table_names() -> list[str]:
    """The catalog's tables, read off schema.sql's text (a snapshot asks at every start: no
    parse by DuckDB)."""
    return _table_names("catalog")


@cache
def fact_table_names() -> frozenset[str]:
    """The fact tables' names, read off schema.sql's text (which a query names is asked of
    every query: their columns are parsed only when one is read)."""
    return frozenset(_table_names("facts"))


def _table_names(section: str) -> list[str]:
    return sorted(set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", _sections()[section])))


@cache
def catalog_tables():
    """SQLAlchemy Core tables of the catalog, derived from schema.sql (no reflection needed)."""
    import sqlalchemy as sa  # not at module level: readers of a DuckDB catalog never need it

    sa_types = {
        "VARCHAR": sa.String,
        "INTEGER": sa.Integer,
        "SMALLINT": sa.SmallInteger,
        "BIGINT": sa.BigInteger,
        "FLOAT": sa.Float,
        "DOUBLE": sa.Float,
        "BOOLEAN": sa.Boolean,
        "BLOB": sa.LargeBinary,
        "TIMESTAMP": sa.DateTime,
    }
    columns, keys = _parsed("catalog")
    metadata = sa.MetaData()
    return {
        name: sa.Table(
            name,
            metadata,
            *(
                sa.Column(c, sa_types[t](), primary_key=c in keys.get(name, ()), nullable=n)
                for c, t, n in cols
            ),
        )
        for name, cols in columns.items()
    }


@cache
def fact_tables() -> dict[str, FactTable]:
    columns, _ = _parsed("facts")
    # The line right before each CREATE TABLE declares its partition columns.
    declared = re.findall(r"^-- partition: (.*)\nCREATE TABLE (\w+)", _sections()["facts"], re.M)
    partitions = {table: tuple(c.strip() for c in cols.split(",")) for cols, table in declared}
    # ... and the line before that, for a table read by point lookups, its row groups' rows
    grouped = re.findall(
        r"^-- row groups: (\d+) rows\n-- partition: .*\nCREATE TABLE (\w+)",
        _sections()["facts"],
        re.M,
    )
    rows = {table: int(n) for n, table in grouped}
    return {
        name: FactTable(
            name, tuple((c, t) for c, t, _ in cols), partitions.get(name, ()), rows.get(name)
        )
        for name, cols in columns.items()
    }


def fact_table(name: str) -> FactTable:
    try:
        return fact_tables()[name]
    except KeyError:
        known = ", ".join(sorted(fact_tables()))
        raise KeyError(f"no fact table {name!r}; known: {known}") from None
