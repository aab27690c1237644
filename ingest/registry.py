"""Models in a warehouse: register a loaded model, and load a registered one by name.

A registered model is loaded from its ``source``; a *variant* (``source`` ``variant:NAME``) is its
parent model with an edit recipe applied (see :mod:`actwh.ingest.interventions`).
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from actwh.errors import ActwhError
from actwh.ingest.interventions import apply_edit, edit_hash
from actwh.ingest.models import LoadedModel, load_model
from actwh.warehouse.catalog import Catalog, now, to_json
from actwh.warehouse.layout import check_name
from actwh.warehouse.store import Store


def check_same_shape(base: dict, tuned: dict, where: str) -> None:
    """A tuned model must share its base's architecture and sizes (one residual space)."""
    keys = ("architecture", "n_layers", "d_model", "d_mlp", "vocab_size")
    if any(base[k] != tuned[k] for k in keys):
        show = lambda row: ", ".join(f"{k} {row[k]}" for k in keys)  # noqa: E731
        raise ActwhError(
            f"{where}: {tuned['name']} ({show(tuned)}) does not match {base['name']} ({show(base)})"
        )


def register_model(
    conn: sa.Connection,
    catalog: Catalog,
    loaded: LoadedModel,
    *,
    role: str = "base",
    parent: str | None = None,
    config: dict | None = None,
) -> bool:
    """Record ``loaded`` under its name (True if new); the same name must not mean different
    weights."""
    check_name("model", loaded.name)
    row = loaded.catalog_row()
    if parent is not None:
        base = catalog.get("models", conn, name=parent)
        if base is not None:
            check_same_shape(base, row, f"model {loaded.name}")
            if base["tokenizer_sha256"] != row["tokenizer_sha256"]:
                raise ActwhError(f"model {loaded.name}: its tokenizer differs from {parent}'s")
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
        return True
    if (existing["revision"], existing["tokenizer_sha256"]) != (
        row["revision"],
        row["tokenizer_sha256"],
    ):
        raise ActwhError(
            f"a different model is already registered as {loaded.name!r} "
            f"(from {existing['source']}); pass --model-name to name this one"
        )
    return False


VARIANT = "variant:"


def open_model(
    store: Store | None,
    spec: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    name: str | None = None,
) -> tuple[LoadedModel, bool]:
    """Load ``spec``: a model registered in ``store`` by name, else a source (hub id, path, ...)
    registered as ``name`` when given.

    Returns the model and whether it was already registered.
    """
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


def ensure_registered(store: Store, loaded: LoadedModel) -> None:
    with store.catalog.begin() as conn:
        register_model(conn, store.catalog, loaded)


def register_variant(
    store: Store, name: str, parent: LoadedModel, edit: dict, *, role: str = "intervened"
) -> dict:
    """Register ``parent`` + ``edit`` as model ``name`` (role ``intervened``, or ``control``)."""
    check_name("model", name)
    catalog = store.catalog
    with catalog.begin() as conn:
        register_model(conn, catalog, parent)
        if catalog.get("models", conn, name=name) is not None:
            raise ActwhError(f"a model named {name!r} already exists in this warehouse")
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
