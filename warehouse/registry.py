"""What the catalog means: registered models and prompt sets, the run lifecycle, the one check
that two models share a residual space, and the one rule that resolves a direction.

Rules kept here and nowhere else:

* a name means one thing: a model name one set of weights and tokenizer, a prompt set name one
  content;
* a run goes ``running`` → ``complete`` (every prompt committed, no gaps left by a repair), or
  ``failed`` (with the reason) when its worker stops on an error after committing, or ``stale``
  when the run it replayed was repaired; an unfinished (running or failed) run is resumed only by
  the same work (model, prompt set, capture options); a new run that committed nothing before it
  failed is forgotten;
* two models are *compatible* (teacher forcing, weight diffs, a tuned model and its parent) when
  they share architecture, sizes and tokenizer;
* direction ``name`` for model ``M`` is ``M``'s own, else its parent's, else the parent's
  parent's, ... (the ``lineage``): :func:`directions_for` here, for the catalog; the SQL macro
  ``direction_of`` over a snapshot (``Warehouse.resolve_direction``) is the same rule.
"""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa

from actwh.errors import ActwhError, AlreadyExists, BadInput, NotFound, arg, natural_key
from actwh.warehouse.arrays import from_blob
from actwh.warehouse.catalog import Catalog, now, to_json
from actwh.warehouse.layout import check_name

SHAPE_KEYS = ("architecture", "n_layers", "d_model", "d_mlp", "vocab_size")


# ---- models -------------------------------------------------------------------------------------


def check_compatible(base: dict, tuned: dict, where: str) -> None:
    """``tuned`` must share ``base``'s architecture, sizes and tokenizer (catalog rows)."""
    if base["tokenizer_sha256"] != tuned["tokenizer_sha256"]:
        raise ActwhError(f"{where}: {tuned['name']}'s tokenizer differs from {base['name']}'s")
    if any(base[k] != tuned[k] for k in SHAPE_KEYS):
        show = lambda row: ", ".join(f"{k} {row[k]}" for k in SHAPE_KEYS)  # noqa: E731
        raise ActwhError(
            f"{where}: {tuned['name']} ({show(tuned)}) does not match {base['name']} ({show(base)})"
        )


def register_model(
    conn: sa.Connection,
    catalog: Catalog,
    row: dict,
    *,
    role: str = "base",
    parent: str | None = None,
    config: dict | None = None,
) -> bool:
    """Record the model described by ``row`` (True if new); a name must not mean other weights."""
    check_name("model", row["name"])
    if parent is not None:
        base = catalog.get("models", conn, name=parent)
        if base is not None:
            check_compatible(base, row, f"model {row['name']}")
    existing = catalog.get("models", conn, name=row["name"])
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
            f"a different model is already registered as {row['name']!r} "
            f"(from {existing['source']}); pass {arg('model_name')} to name this one"
        )
    return False


def adopt(conn: sa.Connection, catalog: Catalog, model: str, parent: str) -> None:
    """Record ``parent`` as the parent of registered ``model`` (``diff``: the tuned model of a
    base), unless it is already; refused, with the reason, where ``model`` has another parent
    or is an ancestor of ``parent`` (a cycle)."""
    row = catalog.get("models", conn, name=model)
    if row is None or row["parent"] == parent:
        return
    if row["parent"] is not None:
        raise BadInput(
            f"model {model!r} is registered as a child of {row['parent']!r}, not of {parent!r}; "
            f"compare it with its parent ({arg('base')} {row['parent']})"
        )
    if model in lineage(catalog, parent, conn):
        raise BadInput(
            f"model {model!r} is an ancestor of {parent!r}; swap {arg('base')} and {arg('tuned')}"
        )
    catalog.update(conn, "models", {"name": model}, parent=parent)


def model_row(catalog: Catalog, model: str) -> dict:
    row = catalog.get("models", name=model)
    if row is None:
        known = ", ".join(sorted((r["name"] for r in catalog.rows("models")), key=natural_key))
        known = known or "none"
        raise NotFound(f"no model {model!r} in this warehouse (models: {known})")
    return row


def lineage(catalog: Catalog, model: str, conn: sa.Connection | None = None) -> list[str]:
    """``model``, its parent, the parent's parent, ...: they share one residual space."""
    chain: list[str] = []
    current: str | None = model
    while current is not None and current not in chain:
        chain.append(current)
        row = catalog.get("models", conn, name=current)
        current = row["parent"] if row else None
    return chain


# ---- directions ---------------------------------------------------------------------------------


def directions_for(catalog: Catalog, model: str) -> dict[str, np.ndarray]:
    """Every direction ``model`` can use, by the lineage rule: its own, then its ancestors'."""
    found: dict[str, np.ndarray] = {}
    for owner in lineage(catalog, model):
        for row in catalog.rows("directions", model=owner):
            found.setdefault(row["name"], from_blob(row["vector"]))
    return found


def unknown_direction(name: str, model: str, known) -> ActwhError:
    return NotFound(
        f"no direction {name!r} for model {model!r} "
        f"(it has: {', '.join(sorted(known, key=natural_key)) or 'none'})"
    )


# ---- prompt sets --------------------------------------------------------------------------------


def register_prompt_set(
    conn: sa.Connection, catalog: Catalog, prompt_set: dict, prompts: list[dict]
) -> bool:
    """Record a prompt set (``name, sha256, source``) and its prompts (True if new); a name
    means one content."""
    existing = catalog.get("prompt_sets", conn, name=prompt_set["name"])
    if existing is None:
        catalog.insert(
            conn,
            "prompt_sets",
            {**prompt_set, "n_prompts": len(prompts), "created_at": now()},
        )
        catalog.insert(conn, "prompts", prompts)
        return True
    if existing["sha256"] != prompt_set["sha256"]:
        raise ActwhError(
            f"a different prompt set is already registered as {prompt_set['name']!r} "
            f"(from {existing['source']}); pass {arg('prompt_set')} to name this one"
        )
    return False


# ---- the run lifecycle --------------------------------------------------------------------------


def check_resumable(previous: dict, model: str, prompt_set: str, config: dict, keys) -> None:
    """An existing run may be resumed only by the same work: model, prompt set and ``keys`` of
    its options."""
    run = previous["name"]
    if previous["status"] == "complete":
        raise AlreadyExists(
            f"run {run!r} already exists and is complete; choose another {arg('name')}"
        )
    if previous["status"] == "stale":
        raise ActwhError(
            f"run {run!r} is stale: the run it replayed was repaired after it was made; "
            f"ingest it again under another {arg('name')}"
        )
    if previous["prompt_set"] != prompt_set:
        raise ActwhError(
            f"run {run!r} exists (unfinished) over prompt set {previous['prompt_set']!r}, not "
            f"{prompt_set!r}; resume it with the same prompts or choose another {arg('name')}"
        )
    old = json.loads(previous["config"])
    if previous["model"] != model or any(old.get(k) != config.get(k) for k in keys):
        raise ActwhError(
            f"run {run!r} exists (unfinished) with another model or other capture options; "
            f"resume it with the same options or choose another {arg('name')}"
        )


def start_run(conn: sa.Connection, catalog: Catalog, run: dict) -> None:
    """Record a new run (``name, model, prompt_set, mode, source_run, config, n_prompts``)."""
    catalog.insert(conn, "runs", {**run, "status": "running", "n_tokens": 0, "created_at": now()})


def fail_run(catalog: Catalog, run: str, reason: str) -> None:
    """Mark ``run`` failed with ``reason``; the same ingest command resumes it."""
    with catalog.begin() as conn:
        catalog.update(conn, "runs", {"name": run}, status="failed", error=reason[:2000])


def finish_run(catalog: Catalog, run: str, warnings: list[str]) -> bool:
    """Mark ``run`` complete when every prompt is committed and no repair gap is left."""
    with catalog.begin() as conn:
        committed = catalog.rows("commit_prompts", conn, run=run)
        row = catalog.get("runs", conn, name=run)
        gaps = catalog.rows("commit_gaps", conn, run=run)
        if row is None or len(committed) != row["n_prompts"] or gaps:
            return False
        catalog.update(
            conn,
            "runs",
            {"name": run},
            status="complete",
            error=None,
            finished_at=now(),
            warnings=to_json(warnings) if warnings else None,
        )
        return True


def forget_run(
    catalog: Catalog,
    run: str,
    *,
    prompt_set: str | None = None,
    model: str | None = None,
) -> None:
    """Undo a new run that committed nothing, with the prompt set and model it registered."""
    with catalog.begin() as conn:
        catalog.delete(conn, "runs", name=run)
        if prompt_set is not None:
            catalog.delete(conn, "prompts", prompt_set=prompt_set)
            catalog.delete(conn, "prompt_sets", name=prompt_set)
        if model is not None:
            catalog.delete(conn, "models", name=model)
