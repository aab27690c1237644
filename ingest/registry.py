"""Models in a warehouse: register a loaded model, and load a registered one by name.

A registered model is loaded from its ``source``; a *variant* (``source`` ``variant:NAME``) is its
parent model with an edit recipe applied (see :mod:`actwh.models.interventions`).
"""

from __future__ import annotations

import json
from pathlib import Path

from actwh.errors import ActwhError, AlreadyExists
from actwh.models.interventions import Edit, apply_edit, edit_hash
from actwh.models.loading import LoadedModel, load_model
from actwh.warehouse.catalog import now, to_json
from actwh.warehouse.layout import check_name
from actwh.warehouse.registry import register_model
from actwh.warehouse.store import Store

VARIANT = "variant:"


def open_model(
    store: Store | None,
    spec: str | Path,
    *,
    device: str = "auto",
    dtype: str = "float32",
    name: str | None = None,
) -> tuple[LoadedModel, bool]:
    """Load ``spec``: a model registered in ``store`` by name, else a source (hub id, path, ...)
    registered as ``name`` when given.

    Returns the model and whether it was already registered.
    """
    spec = str(spec)  # a pathlib.Path names a local directory or .gguf file
    row = store.catalog.get("models", name=spec) if store is not None else None
    if row is None:
        return load_model(spec, device=device, dtype=dtype, name=name), False
    if row["source"].startswith(VARIANT):
        loaded, _ = open_model(store, row["parent"], device=device, dtype=dtype)
        edit = json.loads(row["config"])["edit"]
        apply_edit(loaded, edit)
        revision = f"{loaded.revision}+{edit_hash(edit)}"
        loaded.name, loaded.source = row["name"], row["source"]
    else:
        loaded = load_model(row["source"], device=device, dtype=dtype, name=row["name"])
        revision = loaded.revision
    loaded.revision = revision
    if revision != row["revision"]:
        raise ActwhError(
            f"model {spec!r} was registered from {row['source']} with revision {row['revision']}, "
            f"but that source now has {loaded.revision}"
        )
    return loaded, True


def ensure_registered(
    store: Store,
    loaded: LoadedModel,
    *,
    role: str = "base",
    parent: str | None = None,
    config: dict | None = None,
) -> bool:
    """Register ``loaded`` in ``store`` unless it is there (True if new)."""
    with store.catalog.begin() as conn:
        return register_model(
            conn, store.catalog, loaded.catalog_row(), role=role, parent=parent, config=config
        )


def register_variant(
    store: Store, name: str, parent: LoadedModel, edit: Edit, *, role: str = "intervened"
) -> dict:
    """Register ``parent`` + ``edit`` as model ``name`` (role ``intervened``, or ``control``)."""
    check_name("model", name)
    catalog = store.catalog
    with catalog.begin() as conn:
        register_model(conn, catalog, parent.catalog_row())
        if catalog.get("models", conn, name=name) is not None:
            raise AlreadyExists(f"a model named {name!r} already exists in this warehouse")
        row = {
            **parent.catalog_row(),
            "name": name,
            "source": VARIANT + name,
            "revision": f"{parent.revision}+{edit_hash(edit)}",
            "role": role,
            "parent": parent.name,
            "config": to_json({"edit": edit}),
            "created_at": now(),
        }
        catalog.insert(conn, "models", row)
    return row
