"""A warehouse directory: create it, recognise it, and hand out its catalog, writers and readers."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from functools import cached_property
from pathlib import Path

from actwh.errors import ActwhError, AlreadyExists, NotFound, arg, from_os_error
from actwh.warehouse import layout
from actwh.warehouse.layout import FORMAT_VERSION, shown_url


class Store:
    """An existing warehouse on disk.

    Use :meth:`open` for a warehouse that must exist and :meth:`create` to make one (or open it if
    it is already there). Neither imports torch.
    """

    def __init__(self, root: Path, catalog_url: str, warehouse_id: str | None = None):
        self.root = root
        self.catalog_url = catalog_url
        self.warehouse_id = warehouse_id  # also in the catalog: one catalog, one directory

    @cached_property
    def catalog(self):
        """The :class:`~actwh.warehouse.catalog.Catalog` (SQLAlchemy is imported on first use).

        A catalog outside the directory (PostgreSQL, ...) must be this warehouse's own: two
        directories on one catalog would see, and repair, each other's commits.
        """
        from actwh.warehouse.catalog import Catalog

        catalog = Catalog(self.catalog_url)
        if self.catalog_file is None and self.warehouse_id is not None:
            owner, home = catalog.info("id"), catalog.info("root")
            if owner is not None and owner != self.warehouse_id:
                raise ActwhError(
                    f"the catalog {catalog.shown} belongs to another warehouse ({home}), "
                    f"not to {self.root}"
                )
            if home is not None and home != str(self.root):
                raise ActwhError(
                    f"the catalog {catalog.shown} serves the warehouse directory {home}, and "
                    f"{self.root} is a copy of it or was moved from there: one catalog serves "
                    f"one directory. If it was moved, make this its home: actwh rehome "
                    f"{self.root}"
                )
        return catalog

    def rehome(self, *, force: bool = False) -> str | None:
        """Make this directory the one its (server) catalog serves, after a move; returns the
        directory it served before. Refused while that directory still holds this warehouse
        (a copy must get a catalog of its own), unless ``force``."""
        if self.catalog_file is not None:
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
    def catalog_file(self) -> Path | None:
        """The catalog's DuckDB file, when the catalog is one."""
        prefix = "duckdb:///"
        return (
            Path(self.catalog_url[len(prefix) :]) if self.catalog_url.startswith(prefix) else None
        )

    @classmethod
    def open(cls, path: str | Path) -> Store:
        root = Path(path).expanduser().resolve()
        marker = root / layout.MARKER
        if not root.exists():
            raise NotFound(f"no warehouse at {path}: the directory does not exist")
        if not marker.is_file():
            raise NotFound(f"{path} is not an actwh warehouse (it has no {layout.MARKER})")
        try:
            info = json.loads(marker.read_text())
            version, catalog = info["format"], info["catalog"]
        except (ValueError, KeyError) as error:
            raise ActwhError(f"{marker} is damaged: {error}") from error
        if str(version) != FORMAT_VERSION:
            raise ActwhError(
                f"{path} has warehouse format {version}; this actwh reads {FORMAT_VERSION}"
            )
        url = f"duckdb:///{root / layout.CATALOG_FILE}" if catalog == "duckdb" else catalog
        return cls(root, url, info.get("id"))

    @classmethod
    def create(cls, path: str | Path, catalog_url: str | None = None) -> Store:
        """Open the warehouse at ``path``, creating it (and its catalog) if it does not exist."""
        root = Path(path).expanduser().resolve()
        if (root / layout.MARKER).exists():
            store = cls.open(root)
            if catalog_url and catalog_url != store.catalog_url:
                raise ActwhError(f"{path} already uses the catalog {shown_url(store.catalog_url)}")
            store.catalog.create()  # adds tables a newer actwh declares
            return store

        # What an interrupted (or concurrent) creation leaves: a catalog, a marker being written.
        def leftover(name: str) -> bool:
            return name.startswith((layout.CATALOG_FILE, layout.MARKER))

        if root.exists() and not all(leftover(p.name) for p in root.iterdir()):
            raise AlreadyExists(
                f"{path} exists, is not empty and is not an actwh warehouse; choose a new directory"
            )
        store = cls(root, catalog_url or f"duckdb:///{root / layout.CATALOG_FILE}")
        # A catalog outside the directory may already hold another warehouse (by its stamp;
        # one made before stamps has a format and no root).
        if catalog_url and store.catalog.info("format") is not None:
            owner = store.catalog.info("root")
            if owner != str(root):
                raise ActwhError(
                    f"the catalog {shown_url(catalog_url)} already serves the warehouse "
                    f"{owner or 'of another directory'}; one catalog serves one warehouse "
                    "directory (use another database)"
                )
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
