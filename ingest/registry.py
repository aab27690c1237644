"""Models in a warehouse: register a loaded model, and load a registered one by name."""

from __future__ import annotations

import sqlalchemy as sa

from actwh.errors import ActwhError
from actwh.ingest.models import LoadedModel, load_model
from actwh.warehouse.catalog import Catalog, now, to_json
from actwh.warehouse.layout import check_name
from actwh.warehouse.store import Store


def register_model(
    conn: sa.Connection,
    catalog: Catalog,
    loaded: LoadedModel,
    *,
    role: str = "base",
    parent: str | None = None,
    config: dict | None = None,
) -> None:
    """Record ``loaded`` under its name; the same name must not mean different weights."""
    check_name("model", loaded.name)
    row = loaded.catalog_row()
    existing = catalog.get("models", conn, name=loaded.name)
    if existing is None:
        catalog.insert(
            conn,
            "models",
            {
                **row,
                "role": role,
                "parent": parent,
                "config": to_json(config) if config else None,
                "created_at": now(),
            },
        )
    elif (existing["revision"], existing["tokenizer_sha256"]) != (
        row["revision"],
        row["tokenizer_sha256"],
    ):
        raise ActwhError(
            f"a different model is already registered as {loaded.name!r} "
            f"(from {existing['source']}); pass --model-name to name this one"
        )


def open_model(
    store: Store | None, spec: str, *, device: str = "auto", dtype: str = "float32"
) -> tuple[LoadedModel, bool]:
    """Load ``spec``: a model registered in ``store`` by name, else a source (hub id, path, ...).

    Returns the model and whether it was already registered.
    """
    row = store.catalog.get("models", name=spec) if store is not None else None
    if row is None:
        return load_model(spec, device=device, dtype=dtype), False
    loaded = load_model(row["source"], device=device, dtype=dtype, name=row["name"])
    if loaded.revision != row["revision"]:
        raise ActwhError(
            f"model {spec!r} was registered from {row['source']} with revision {row['revision']}, "
            f"but that source now has {loaded.revision}"
        )
    return loaded, True


def ensure_registered(store: Store, loaded: LoadedModel) -> None:
    with store.catalog.begin() as conn:
        register_model(conn, store.catalog, loaded)
