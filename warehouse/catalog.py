"""The catalog: small relational tables (models, prompt sets, runs, commits), via SQLAlchemy.

By default the catalog is an embedded DuckDB file inside the warehouse; any SQLAlchemy URL works
(PostgreSQL for a team). A DuckDB file held open read-write by one process cannot be opened by any
other, so connections here are short-lived (no pool) and opening one retries while another
process holds the lock: several ingestion workers and any number of readers can share a warehouse
without a lock error ever reaching the user.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from actwh.errors import ActwhError
from actwh.warehouse.layout import FORMAT_VERSION, catalog_partition, shown_url
from actwh.warehouse.locks import damaged, retry_while_locked
from actwh.warehouse.schema import catalog_ddl, catalog_tables, catalog_upgrades


def _reason(error: BaseException) -> str:
    """The first line of what the database or driver said, without SQLAlchemy's wrapping."""
    text = str(getattr(error, "orig", None) or error).strip()
    line = next((l for l in text.splitlines() if l.strip()), type(error).__name__)
    return line.split("(Background on this error", 1)[0].strip()


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def to_json(value) -> str:
    return json.dumps(value, sort_keys=True)


class Catalog:
    """The catalog database of one warehouse.

    Parameters
    ----------
    url
        A SQLAlchemy URL, e.g. ``duckdb:////path/wh/catalog.duckdb`` or
        ``postgresql+psycopg://user@host/db``.
    lock_timeout
        Seconds to keep retrying while another process holds the catalog.
    """

    def __init__(self, url: str, *, lock_timeout: float = 300.0):
        self.url = url
        self.shown = shown_url(url)
        self.lock_timeout = lock_timeout
        self.tables = catalog_tables()
        self._upgraded = False  # see begin()
        self.is_duckdb = url.startswith("duckdb")
        try:
            self._engine = sa.create_engine(url, poolclass=NullPool)
            self._read_engine = (
                sa.create_engine(url, poolclass=NullPool, connect_args={"read_only": True})
                if self.is_duckdb
                else self._engine
            )
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as error:
            raise ActwhError(f"the catalog URL {self.shown}: {_reason(error)}") from error

    def _connect(self, engine: sa.Engine) -> sa.Connection:
        return retry_while_locked(engine.connect, f"the catalog {self.shown}", self.lock_timeout)

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A read-write transaction: committed when the block ends, rolled back on error. The
        first one brings a catalog written by an older actwh up to date (:meth:`create`)."""
        if not self._upgraded:
            self._upgraded = True
            self.create()
        with self._errors(), self._connect(self._engine) as conn, conn.begin():
            yield conn

    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """A read-only connection (on DuckDB, one that other readers can share)."""
        with self._errors(), self._connect(self._read_engine) as conn:
            yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A database that cannot be reached, read or written is one line naming the catalog
        (a server gone, a read-only or full disk, a damaged file); an integrity error (a race
        another writer won) is left to the caller."""
        try:
            yield
        except sa.exc.IntegrityError:
            raise
        except sa.exc.DBAPIError as error:
            if broken := damaged(error, f"the catalog {self.shown}"):
                raise broken from error
            raise ActwhError(f"the catalog {self.shown}: {_reason(error)}") from error

    def create(self, *, root: str | None = None, new_id: str | None = None) -> str | None:
        """Create any missing table or column (upgrades are additive) and stamp the format;
        for a new warehouse, stamp its id and directory too. Returns the catalog's id.

        Several workers may do this at once: losing a race to create or stamp is not an error
        (the id first stamped is the one every worker gets).
        """
        for attempt in range(3):
            try:
                with self.begin() as conn:
                    for statement in catalog_ddl():
                        conn.exec_driver_sql(statement)
                    self._add_missing_columns(conn)
                    for statement in catalog_upgrades():
                        conn.exec_driver_sql(statement)
                    self._fill_partitions(conn)
                    stamps: dict[str, str | None] = {"format": FORMAT_VERSION}
                    if new_id is not None:
                        stamps |= {"id": new_id, "root": root}
                    info = self.tables["warehouse_info"]
                    for key, value in stamps.items():
                        if conn.execute(sa.select(info).where(info.c.key == key)).first() is None:
                            conn.execute(info.insert().values(key=key, value=value))
                    return conn.execute(
                        sa.select(info.c.value).where(info.c.key == "id")
                    ).scalar_one_or_none()
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable: the third attempt returns or raises")

    def info(self, key: str) -> str | None:
        """A ``warehouse_info`` value (None before the catalog has the table or the key, or
        before a DuckDB catalog's file exists: a read-only connection cannot make it)."""
        if self.is_duckdb and not Path(self.url.removeprefix("duckdb:///")).exists():
            return None
        info = self.tables["warehouse_info"]
        with self.reading() as conn:
            if not sa.inspect(conn).has_table("warehouse_info"):
                return None
            row = conn.execute(sa.select(info.c.value).where(info.c.key == key)).first()
        return row[0] if row else None

    def set_info(self, key: str, value: str) -> None:
        """Set a ``warehouse_info`` value."""
        info = self.tables["warehouse_info"]
        with self.begin() as conn:
            conn.execute(info.delete().where(info.c.key == key))
            conn.execute(info.insert().values(key=key, value=value))

    def _add_missing_columns(self, conn: sa.Connection) -> None:
        """Columns a newer schema.sql declares and this catalog lacks (always nullable)."""
        for name, table in self.tables.items():
            present = set(conn.execute(sa.text(f"SELECT * FROM {name} WHERE 1 = 0")).keys())
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=conn.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column.name} {kind}")

    def _fill_partitions(self, conn: sa.Connection) -> None:
        """Files recorded by an actwh older than ``commit_files``' partition columns get them,
        from their paths (one rule: :func:`~actwh.warehouse.layout.catalog_partition`)."""
        files = self.tables["commit_files"]
        unfilled = sa.select(files.c.path).where(
            files.c.run.is_(None), files.c.model.is_(None), files.c.path.like("%=%")
        )
        for (path,) in conn.execute(unfilled).fetchall():
            conn.execute(
                files.update().where(files.c.path == path).values(**catalog_partition(path))
            )

    # Small helpers: rows are plain dicts, filters are equality on columns.

    def _where(self, table: sa.Table, filters: dict):
        return [table.c[k] == v for k, v in filters.items()]

    def rows(self, table: str, conn: sa.Connection | None = None, **filters) -> list[dict]:
        t = self.tables[table]
        query = sa.select(t).where(*self._where(t, filters))
        if conn is not None:
            return [dict(r._mapping) for r in conn.execute(query)]
        with self.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def get(self, table: str, conn: sa.Connection | None = None, **key) -> dict | None:
        found = self.rows(table, conn, **key)
        return found[0] if found else None

    def insert(self, conn: sa.Connection, table: str, rows: list[dict] | dict) -> None:
        rows = [rows] if isinstance(rows, dict) else rows
        if rows:
            conn.execute(self.tables[table].insert(), rows)

    def update(self, conn: sa.Connection, table: str, key: dict, **values) -> None:
        t = self.tables[table]
        conn.execute(t.update().where(*self._where(t, key)).values(**values))

    def delete(self, conn: sa.Connection, table: str, **filters) -> None:
        t = self.tables[table]
        conn.execute(t.delete().where(*self._where(t, filters)))
