"""A warehouse — a local directory, or an object-store prefix such as ``s3://bucket/wh`` (see
:mod:`actwh.warehouse.object_store`): create it, recognise it, hand out its catalog and files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import nullcontext, suppress
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from actwh.errors import (
    ActwhError,
    AlreadyExists,
    BadInput,
    Damaged,
    NotFound,
    arg,
    from_os_error,
)
from actwh.warehouse import layout
from actwh.warehouse.layout import FORMAT_VERSION, shown_url
from actwh.warehouse.object_store import NoAnswer, ObjectStore, location, within

# Catalog URLs that are files, which cannot serve a warehouse on an object store.
_FILE_CATALOGS = ("duckdb:", "sqlite:")


class Store:
    """An existing warehouse on disk.

    Use :meth:`open` for a warehouse that must exist and :meth:`create` to make one (or open it if
    it is already there). Neither imports torch.
    """

    def __init__(
        self,
        root: Path | ObjectStore,
        catalog_url: str,
        warehouse_id: str | None = None,
    ):
        self.remote = root if isinstance(root, ObjectStore) else None
        self._root = root if isinstance(root, Path) else None
        self.catalog_url = catalog_url
        self.warehouse_id = warehouse_id  # also in the catalog: one catalog, one directory

    @property
    def location(self) -> str:
        """Where the warehouse is: its directory, or its object store URI."""
        return self.remote.uri if self.remote else str(self._root)

    @property
    def root(self) -> Path:
        """The local directory. A warehouse on an object store has none: what needs one (an
        operation not yet ported to object stores) says so."""
        if self._root is None:
            raise ActwhError(
                f"{self.location} is on an object store, where this operation is not supported "
                "yet; run it on a local warehouse"
            )
        return self._root

    def url(self, relative: str) -> str:
        """What a reader (DuckDB, polars, pyarrow) opens for a file of the warehouse: an
        absolute path, or a URL on the object store."""
        return self.remote.url(relative) if self.remote else str(self.root / relative)

    def addresses(self, relatives: list[str]) -> list[Path] | list[str]:
        """Files of the warehouse as another engine is given them: absolute paths, or URLs on
        the object store."""
        if self.remote:
            return [self.remote.url(p) for p in relatives]
        return [self.root / p for p in relatives]

    def uri(self, relative: str) -> str:
        """A file's URI: ``file:///...`` (percent-encoded), or ``s3://...``."""
        return self.url(relative) if self.remote else (self.root / relative).as_uri()

    def filesystem(self) -> tuple[pafs.FileSystem, Callable[[str], str]]:
        """The pyarrow file system the files are on, and each file's path on it."""
        if self.remote:
            return self.remote.fs, self.remote.key
        return pafs.LocalFileSystem(), lambda relative: str(self.root / relative)

    def local_copy(self, relative: str, sha256: str | None = None) -> Path:
        """A file as a local path, for libraries that open files (FAISS, numpy's memory map):
        the file itself, or a copy of the object cached by its content hash (``sha256``, as
        the catalog records it) or else by its size and modification time."""
        if self.remote:
            return self.remote.local_copy(relative, sha256)
        return self.root / relative

    def commit_lock(self, *, exclusive: bool):
        """Writers committing (shared) and a repair (exclusive) exclude each other on a local
        disk; an object store has no locks, and a repair leaves keys younger than its grace
        period alone instead."""
        if self.remote:
            return nullcontext()
        return layout.commit_lock(self.root, exclusive=exclusive)

    @cached_property
    def catalog(self):
        """The :class:`~actwh.warehouse.catalog.Catalog` (SQLAlchemy is imported on first use).

        A catalog outside the directory (PostgreSQL, a DuckDB or SQLite file elsewhere) must be
        this warehouse's own — the id in its ``warehouse.json`` and this location — since two
        directories on one catalog would see, and repair, each other's commits. The catalog
        inside the directory moves and copies with it, and is always its own.
        """
        from actwh.warehouse.catalog import Catalog

        catalog = Catalog(self.catalog_url)
        if not self.embedded_catalog:
            owner, home = catalog.info("id"), catalog.info("root")
            if owner is not None and self.warehouse_id is None:
                raise ActwhError(
                    f"{self.location}: its {layout.MARKER} names the catalog {catalog.shown} but "
                    f"no warehouse id, and that catalog belongs to the warehouse {home}; one "
                    "catalog serves one warehouse"
                )
            if owner is not None and owner != self.warehouse_id:
                raise ActwhError(
                    f"the catalog {catalog.shown} belongs to another warehouse ({home}), "
                    f"not to {self.root}"
                )
            if home is not None and home != self.location:
                raise ActwhError(
                    f"the catalog {catalog.shown} serves the warehouse directory {home}, and "
                    f"{self.location} is a copy of it or was moved from there: one catalog "
                    f"serves one directory. If it was moved, make this its home: actwh rehome "
                    f"{self.location}"
                )
        return catalog

    def rehome(self, *, force: bool = False) -> str | None:
        """Make this directory the one its (server) catalog serves, after a move; returns the
        directory it served before. Refused while that directory still holds this warehouse
        (a copy must get a catalog of its own), unless ``force``."""
        if self.embedded_catalog:
            raise NotFound(f"{self.root}: its catalog is a file inside it; it has no other home")
        from actwh.warehouse.catalog import Catalog

        catalog = Catalog(self.catalog_url)
        owner, home = catalog.info("id"), catalog.info("root")
        if owner != self.warehouse_id:
            raise ActwhError(
                f"the catalog {catalog.shown} belongs to another warehouse ({home}), "
                f"not to {self.root}"
            )
        marker = Path(home or "") / layout.MARKER
        if home and home != str(self.root) and marker.is_file() and not force:
            raise ActwhError(
                f"{home} still holds this warehouse: {self.root} is a copy, and a copy needs a "
                "catalog of its own (actwh init NEW --catalog OTHER_URL, then ingest); pass "
                f"{arg('force')} to move the catalog here anyway"
            )
        catalog.set_info("root", str(self.root))
        self.__dict__.pop("catalog", None)  # the cached catalog checked the old home
        return home

    @property
    def embedded_catalog(self) -> bool:
        """Whether the catalog is the DuckDB file inside the warehouse's directory."""
        return self._root is not None and self.catalog_url == (
            f"duckdb:///{self._root / layout.CATALOG_FILE}"
        )

    @property
    def catalog_file(self) -> Path | None:
        """The catalog's DuckDB file, when the catalog is one."""
        prefix = "duckdb:///"
        return (
            Path(self.catalog_url[len(prefix) :]) if self.catalog_url.startswith(prefix) else None
        )

    @classmethod
    def open(cls, path: str | Path) -> Store:
        root = location(path)
        if isinstance(root, str):
            return cls._open_remote(root)
        marker = root / layout.MARKER
        if not root.exists():
            raise NotFound(f"no warehouse at {path}: the directory does not exist")
        if not marker.is_file():
            raise NotFound(f"{path} is not an actwh warehouse (it has no {layout.MARKER})")
        info = _marker(marker.read_bytes(), str(marker), str(path))
        catalog = info["catalog"]
        url = f"duckdb:///{root / layout.CATALOG_FILE}" if catalog == "duckdb" else catalog
        return cls(root, url, info.get("id"))

    @classmethod
    def _open_remote(cls, uri: str) -> Store:
        remote = ObjectStore(uri)
        try:  # one request when all is well
            text = within(lambda: remote.read_bytes(layout.MARKER), uri)
        except NotFound:
            remote.check_reachable()  # a missing bucket says so
            raise NotFound(f"{uri} is not an actwh warehouse (it has no {layout.MARKER})") from None
        except NoAnswer:
            raise
        except ActwhError:
            remote.check_reachable()  # credentials or the endpoint: said of the URI itself
            raise
        info = _marker(text, remote.url(layout.MARKER), uri)
        return cls(remote, info["catalog"], info.get("id"))

    @classmethod
    def existing(cls, path: str | Path) -> Store | None:
        """The warehouse at ``path``, or None where there is none yet; a damaged or
        unreachable one raises."""
        root = location(path)
        if isinstance(root, str):
            try:
                return cls._open_remote(root)
            except NotFound:
                return None
        return cls.open(root) if (root / layout.MARKER).exists() else None

    def check_catalog(self, catalog_url: str | None) -> None:
        """A catalog asked for (``--catalog``) must be the one this warehouse uses."""
        if catalog_url and catalog_url != self.catalog_url:
            raise ActwhError(
                f"{self.location} already uses the catalog {shown_url(self.catalog_url)}"
            )

    def _check_catalog_free(self) -> None:
        """A catalog given (``--catalog``) may already hold another warehouse (by its stamp; one
        made before stamps has a format and no root). Asked of the catalog itself: this
        warehouse has no id yet, so :attr:`catalog`'s own check does not apply."""
        from actwh.warehouse.catalog import Catalog

        catalog = Catalog(self.catalog_url)
        if catalog.info("format") is not None:
            owner = catalog.info("root")
            if owner != self.location:
                raise ActwhError(
                    f"the catalog {shown_url(self.catalog_url)} already serves the warehouse "
                    f"{owner or 'of another directory'}; one catalog serves one warehouse "
                    "(use another database)"
                )

    def _check_catalog_ours(self) -> None:
        """A ``catalog.duckdb`` already in a directory being made a warehouse is adopted only if
        actwh made it (an interrupted creation: no tables yet, or actwh's stamp): never a user's
        own database, whose tables creation would alter."""
        import duckdb

        path = self.root / layout.CATALOG_FILE
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                tables = {
                    t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
                }
                stamped = "warehouse_info" in tables and con.execute(
                    "SELECT count(*) FROM warehouse_info WHERE key = 'format'"
                ).fetchone() != (0,)
        except duckdb.Error as error:
            reason = str(error).splitlines()[0]
            raise AlreadyExists(
                f"{path} exists and is not a catalog actwh can read ({reason}); move it away, "
                "or choose a new directory"
            ) from error
        if tables and not stamped:
            raise AlreadyExists(
                f"{path} is a DuckDB database actwh did not make; move it away, or choose a new "
                "directory"
            )

    @classmethod
    def _create_remote(cls, uri: str, catalog_url: str | None) -> Store:
        """A new warehouse under an object store prefix; its catalog must be a server's."""
        if not catalog_url or catalog_url.startswith(_FILE_CATALOGS):
            raise BadInput(
                f"{uri}: a warehouse on an object store needs a server catalog (--catalog "
                "postgresql+psycopg://...): a catalog file cannot live on an object store, "
                "and commits need its transactions"
            )
        remote = ObjectStore(uri)
        remote.check_reachable()
        if remote.listing():
            raise AlreadyExists(
                f"{uri} holds objects and is not an actwh warehouse; choose a new prefix"
            )
        store = cls(remote, catalog_url)
        store._check_catalog_free()
        store.warehouse_id = store.catalog.create(root=uri, new_id=uuid.uuid4().hex)
        marker = {"format": FORMAT_VERSION, "catalog": catalog_url, "id": store.warehouse_id}
        remote.put(layout.MARKER, (json.dumps(marker, indent=2) + "\n").encode())
        return store

    @classmethod
    def create(cls, path: str | Path, catalog_url: str | None = None) -> Store:
        """Open the warehouse at ``path``, creating it (and its catalog) if it does not exist."""
        store = cls.existing(path)
        if store is not None:
            store.check_catalog(catalog_url)
            store.catalog.create()  # adds tables a newer actwh declares
            return store
        root = location(path)
        if isinstance(root, str):
            return cls._create_remote(root, catalog_url)

        # What an interrupted (or concurrent) creation leaves: a catalog, a marker being written.
        def leftover(name: str) -> bool:
            return name.startswith((layout.CATALOG_FILE, layout.MARKER))

        if root.exists() and not all(leftover(p.name) for p in root.iterdir()):
            raise AlreadyExists(
                f"{path} exists, is not empty and is not an actwh warehouse; choose a new directory"
            )
        store = cls(root, catalog_url or f"duckdb:///{root / layout.CATALOG_FILE}")
        if catalog_url:
            store._check_catalog_free()
        elif (root / layout.CATALOG_FILE).exists():
            store._check_catalog_ours()
        made = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
            store.warehouse_id = store.catalog.create(root=str(root), new_id=uuid.uuid4().hex)
            marker = {
                "format": FORMAT_VERSION,
                "catalog": catalog_url or "duckdb",
                "id": store.warehouse_id,
            }
            tmp = root / f"{layout.MARKER}.{os.getpid()}{layout.TMP_SUFFIX}"
            tmp.write_text(json.dumps(marker, indent=2) + "\n")
            tmp.replace(root / layout.MARKER)  # the marker comes last: a half-made one has none
        except OSError as error:  # a full disk, a read-only parent, a name too long
            if made:
                shutil.rmtree(root, ignore_errors=True)
            raise from_os_error(error, f"cannot create the warehouse {path}: ") from error
        return store

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def exists(self, relative: str) -> bool:
        """Whether the warehouse holds the file ``relative``."""
        return self.remote.exists(relative) if self.remote else (self.root / relative).is_file()

    def data_files(self) -> list[tuple[str, float]]:
        """Every Parquet file under ``data/`` — finished or not, actwh's or not — relative, with
        its modification time (epoch seconds)."""
        suffixes = (".parquet", ".parquet" + layout.TMP_SUFFIX)
        if self.remote:
            listed = self.remote.listing(layout.DATA_DIR)
            return [(path, mtime) for path, mtime, _ in listed if path.endswith(suffixes)]
        found = []
        for path in layout.all_files(self.root):
            with suppress(FileNotFoundError):  # gone since the listing (a writer's rename)
                found.append((self.relative(path), path.stat().st_mtime))
        return found

    def index_files(self) -> list[tuple[str, float]]:
        """Every file under ``index/`` (FAISS indexes, readouts, unfinished writes), relative,
        with its modification time."""
        if self.remote:
            return [(p, mtime) for p, mtime, _ in self.remote.listing(layout.INDEX_DIR)]
        folder = self.root / layout.INDEX_DIR
        found = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            with suppress(FileNotFoundError):
                found.append((self.relative(path), path.stat().st_mtime))
        return found

    def open_input(self, relative: str) -> pa.NativeFile:
        """A file of the warehouse opened for random access (a Parquet footer, a checksum)."""
        try:
            if self.remote:
                return self.remote.fs.open_input_file(self.remote.key(relative))
            return pa.OSFile(str(self.root / relative))
        except FileNotFoundError as error:
            raise NotFound(f"{self.url(relative)}: no such file") from error

    def sha256(self, relative: str) -> str:
        digest = hashlib.sha256()
        with self.open_input(relative) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def names(self, folder: str) -> list[str]:
        """The names of the files directly in ``folder`` (none if there is no such folder)."""
        if self.remote:
            return [p.rsplit("/", 1)[-1] for p, _, _ in self.remote.listing(folder)]
        where = self.root / folder
        return [p.name for p in where.iterdir()] if where.is_dir() else []

    def write(self, relative: str, write: Callable[[Path | io.BytesIO], None]) -> tuple[str, int]:
        """Make the new file ``relative`` as ``write(target)`` writes it, never seen in part:
        written beside it, fsynced and renamed into place, or uploaded whole under its final
        key. Returns its sha256 and size."""
        if self.remote:
            buffer = io.BytesIO()
            write(buffer)
            blob = buffer.getvalue()
            self.remote.put(relative, blob)
            return hashlib.sha256(blob).hexdigest(), len(blob)
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = layout.tmp_path(final)
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(final)
        _fsync_dir(final.parent)
        return self.sha256(relative), final.stat().st_size

    def vanished(self, relatives: list[str]) -> list[str]:
        """Of files just written, those gone before their commit was recorded (deleted by a
        repair: a directory has no lock a repair must wait for). On an object store a repair
        leaves young keys alone, so none; and no request per file is made."""
        return [] if self.remote else [p for p in relatives if not self.exists(p)]

    def delete_unrecorded(self, relatives: list[str]) -> None:
        """Delete files a failed commit wrote. On an object store, whose failure this may be,
        they are left to the resume or to a repair's grace period rather than retried here."""
        if not self.remote:
            for relative in relatives:
                self.delete(relative)

    def discard(self) -> bool:
        """Remove a warehouse this process created and nothing was committed to, if it is a
        directory; a warehouse on an object store (its catalog a server's) stays. Whether it
        went."""
        if self.remote:
            return False
        shutil.rmtree(self.root, ignore_errors=True)
        return True

    def put(self, relative: str, data: bytes) -> None:
        """Write a whole file (an index, a readout): renamed into place, or one upload."""
        if self.remote:
            self.remote.put(relative, data)
            return
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}{layout.TMP_SUFFIX}")
        tmp.write_bytes(data)
        tmp.replace(final)

    def delete(self, relative: str) -> None:
        if self.remote:
            self.remote.delete(relative)
        else:
            (self.root / relative).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _marker(text: bytes, where: str, warehouse: str) -> dict:
    """The marker's contents (format, catalog, id), checked: damaged, or of another format."""
    try:
        info = json.loads(text)
    except ValueError as error:  # not JSON (UnicodeDecodeError is one)
        raise Damaged(f"{where} is damaged: {error}") from error
    if not (
        isinstance(info, dict)
        and "format" in info
        and isinstance(info.get("catalog"), str)
        and isinstance(info.get("id", ""), str)
    ):
        raise Damaged(
            f"{where} is damaged: expected an object with a format, a catalog (a string) and an "
            "id (a string)"
        )
    version = info["format"]
    if str(version) != FORMAT_VERSION:
        raise ActwhError(
            f"{warehouse} has warehouse format {version}; this actwh reads {FORMAT_VERSION}"
        )
    return info
