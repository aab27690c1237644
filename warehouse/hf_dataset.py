"""Activations as a Hugging Face ``datasets`` dataset on disk (``save_to_disk``), e.g. to train a
sparse autoencoder on them.

Two layouts of one run's stored vectors (sites captured with ``capture``), float32, columns named
by TransformerLens hook (``blocks.19.hook_resid_mid``, ``blocks.19.mlp.hook_post``):

* ``tokens`` — one row per token: ``run``, ``prompt``, ``pos``, ``token_id``, and a column per
  (site, layer) holding that token's vector (``List(float32, length=d)``);
* ``saelens`` — SAELens's cached-activation layout: the run's tokens in (prompt, pos) order,
  packed into rows of ``context_size`` tokens, one ``Array2D(context_size, d)`` column per hook
  and ``token_ids`` (``List(int32, length=context_size)``); the last tokens that do not fill a row
  are left out. SAELens reads it with ``use_cached_activations=True``,
  ``cached_activations_path=OUT``, and the same ``hook_name``, ``context_size`` and ``d_in``.

Prompts are read a chunk at a time and each chunk saved as a shard; the shards are then joined
(memory-mapped) into the final dataset, so memory stays flat. The dataset is written into a
temporary directory renamed into place at the end: it is whole or absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from actwh.errors import ActwhError, NotFound, arg
from actwh.warehouse.arrays import column_to_numpy
from actwh.warehouse.layout import staged

LAYOUTS = ("tokens", "saelens")
CHUNK_PROMPTS = 64
HOOKS = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "mlp_post": "mlp.hook_post",
}


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens hook of a site: ``blocks.{layer}.hook_resid_mid``."""
    return f"blocks.{layer}.{HOOKS[site]}"


def export_dataset(
    sql,
    out: Path,
    run: str,
    points: list[tuple[str, int]],
    layout: str = "tokens",
    context_size: int = 128,
    progress: bool = True,
):
    """Write ``run``'s vectors at ``points`` (``(site, layer)`` pairs) to ``out``; returns the
    dataset (memory-mapped from ``out``). ``sql`` runs a query with parameters."""
    import datasets
    from datasets import concatenate_datasets, load_from_disk

    if layout not in LAYOUTS:
        raise ActwhError(f"{arg('layout')} {layout!r}: expected {' or '.join(LAYOUTS)}")
    if layout == "saelens" and context_size < 1:
        raise ActwhError(f"{arg('context_size')} must be >= 1")
    sizes = _vector_sizes(sql, run, points)
    prompts = sql("select distinct prompt from tokens where run = $r order by prompt", {"r": run})
    prompts = prompts["prompt"].to_list()
    datasets.disable_progress_bars()  # one bar, ours, over prompts
    try:
        with staged(out, "the dataset") as result:
            shards, carry = [], None
            chunks = range(0, len(prompts), CHUNK_PROMPTS)
            for i, start in enumerate(tqdm(chunks, desc=f"dataset {run}", disable=not progress)):
                chosen = prompts[start : start + CHUNK_PROMPTS]
                columns: dict | None = _chunk(sql, run, points, chosen[0], chosen[-1])
                if layout == "saelens" and columns is not None:
                    columns, carry = _pack(columns, carry, context_size)
                if columns is None:
                    continue
                shard = result.with_name(f"shard-{i:06d}")
                _dataset(columns, layout, run, points, sizes, context_size).save_to_disk(str(shard))
                shards.append(shard)
            if not shards:
                raise ActwhError(
                    f"nothing to export: run {run} has fewer than {context_size} tokens "
                    f"({arg('context_size')})"
                    if layout == "saelens"
                    else f"nothing to export: run {run} has no tokens"
                )
            joined = concatenate_datasets([load_from_disk(str(s)) for s in shards])
            joined.save_to_disk(str(result))
    finally:
        datasets.enable_progress_bars()
    return load_from_disk(str(out))


def _vector_sizes(sql, run: str, points: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Each point's vector size; refuses a point the run did not store."""
    sizes = {}
    for site, layer in points:
        table, where = _source(site)
        found = sql(
            f"select len(vec) as d from {table} where run = $r and layer = $l {where} limit 1",
            {"r": run, "l": layer, **({"s": site} if where else {})},
        )
        if found.is_empty():
            raise NotFound(
                f"run {run} has no stored {site} vectors at layer {layer} (ingest it with "
                f"{arg('capture')} {site})"
            )
        sizes[(site, layer)] = int(found["d"][0])
    return sizes


def _source(site: str) -> tuple[str, str]:
    """The table holding a site's vectors, and the condition that picks the site there."""
    if site not in HOOKS:
        raise ActwhError(f"{arg('sites')}: unknown site {site!r}; valid: {', '.join(HOOKS)}")
    return ("mlp_acts", "") if site == "mlp_post" else ("residuals", "and site = $s")


def _chunk(sql, run: str, points, first: int, last: int) -> dict[str, np.ndarray]:
    """Keys, token ids and every point's vectors of prompts ``first..last``, in (prompt, pos)
    order."""
    params = {"r": run, "a": first, "b": last}
    keys = sql(
        "select prompt, pos, token_id from tokens where run = $r and prompt between $a and $b "
        "order by prompt, pos",
        params,
    )
    columns = {name: keys[name].to_numpy() for name in ("prompt", "pos", "token_id")}
    for site, layer in points:
        table, where = _source(site)
        frame = sql(
            f"select prompt, pos, vec from {table} where run = $r and layer = $l {where} "
            "and prompt between $a and $b order by prompt, pos",
            {**params, "l": layer, **({"s": site} if where else {})},
        )
        same = (
            frame.height == keys.height
            and (frame["prompt"].to_numpy() == columns["prompt"]).all()
            and (frame["pos"].to_numpy() == columns["pos"]).all()
        )
        if not same:
            raise ActwhError(
                f"run {run}: {site} at layer {layer} does not cover every token of prompts "
                f"{first}-{last} (a run stored in part; see actwh check)"
            )
        vectors = column_to_numpy(frame["vec"].to_arrow()).astype(np.float32, copy=False)
        columns[hook_name(site, layer)] = vectors
    return columns


def _pack(columns: dict, carry: dict | None, context_size: int) -> tuple[dict | None, dict]:
    """Tokens carried over from the last chunk, then this chunk's, cut into whole rows of
    ``context_size``; the rest is carried to the next chunk."""
    if carry is not None:
        columns = {k: np.concatenate([carry[k], v]) for k, v in columns.items()}
    n = len(columns["token_id"]) // context_size * context_size
    rest = {k: v[n:] for k, v in columns.items()}
    if n == 0:
        return None, rest
    rows = {
        k: v[:n].reshape(n // context_size, context_size, *v.shape[1:]) for k, v in columns.items()
    }
    return rows, rest


def _dataset(columns: dict, layout: str, run: str, points, sizes: dict, context_size: int):
    from datasets import Array2D, Dataset, Features, List, Value

    hooks = {hook_name(s, l): sizes[(s, l)] for s, l in points}
    if layout == "tokens":
        features = Features(
            {
                "run": Value("string"),
                "prompt": Value("int32"),
                "pos": Value("int32"),
                "token_id": Value("int32"),
                **{h: List(Value("float32"), length=d) for h, d in hooks.items()},
            }
        )
        data = {"run": [run] * len(columns["token_id"]), **columns}
    else:
        features = Features(
            {
                **{h: Array2D(shape=(context_size, d), dtype="float32") for h, d in hooks.items()},
                "token_ids": List(Value("int32"), length=context_size),
            }
        )
        data = {h: columns[h] for h in hooks} | {"token_ids": columns["token_id"]}
    return Dataset.from_dict(data, features=features)
