"""Interventions on a loaded model: steering hooks and the two edits of the paper.

* :func:`steer` — add a vector to the output of a layer (the residual stream) while generating.
  Used to make dispreferred continuations for DPO pairs.
* ``subtract`` (paper §3.3, Table 2) — subtract ``α · v`` from the output of layer L's MLP, at
  every position. Realised as a weight edit, ``bias -= α · v`` on the MLP's output projection, so
  the edited model is an ordinary model (for the last layer this equals the paper's hook; the
  paper's generation protocol edits only the newest position, which is the same thing there).
  Where a norm follows the MLP (Gemma 2/3, OLMo 2) a bias before it would be normalised away, so
  the shift is a hook on that norm's output: the same change of the residual stream.
* ``unalign`` (paper §6, Table 4) — scale the key vectors of chosen value vectors by ``s``:
  GPT-2 ``c_fc.weight[:, i] *= s`` (bias untouched, as in the paper's code); gated MLPs scale the
  linear "up" row (W2), which scales the neuron's coefficient by ``s`` (the paper's "SCALE W2";
  Phi-3's up half of ``gate_up_proj``). Where a norm follows the MLP, scaling ``m_i`` scales the
  neuron's share of the MLP's output, but the norm rescales the whole output (``/ rms(y)``), so
  its write into the residual stream changes by less than ``s`` and the others' by a little.
  The neurons are those whose write points most along the direction (:func:`unalign_keys`).
  Scaling multiplies ``m_i`` whatever its sign, so for a gated MLP that needs a run: a neuron
  whose value vector points along the direction but which mostly fires negatively writes
  *against* it, and amplifying it would do the opposite of un-aligning.
* a *control* (:func:`control_recipe`) scales as many keys, in the same layers, chosen at random
  with a fixed seed: what scaling keys does when they are not the toxic ones.

An edit is a JSON-able recipe (:func:`apply_edit`), so a variant registered in a warehouse is its
parent model plus the recipe, re-applied whenever the variant is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from actwh.errors import ActwhError
from actwh.ingest.models import LoadedModel
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.search import check_run, mean_coefficients
from actwh.warehouse.store import Store


@contextmanager
def steer(loaded: LoadedModel, layer: int, vector: torch.Tensor) -> Iterator[None]:
    """Add ``vector`` ([d_model]) to the output of decoder layer ``layer`` at every position."""
    vector = vector.to(loaded.device, next(loaded.model.parameters()).dtype)

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + vector, *output[1:])
        return output + vector

    handle = loaded.adapter.layer(layer).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def subtract(loaded: LoadedModel, layer: int, vector: torch.Tensor, scale: float) -> None:
    """Make what layer ``layer``'s MLP adds to the residual stream ``α · vector`` smaller, at
    every position: a bias on its output projection, or — where a norm follows the MLP, which
    would undo a shift before it — a hook on that norm's output."""
    adapter = loaded.adapter
    norm = adapter.post_mlp_norm(layer)
    proj = adapter.mlp_out_proj(layer)
    shift = (scale * vector).to(proj.weight.device, proj.weight.dtype)
    if norm is not None:
        norm.register_forward_hook(lambda module, args, output: output - shift)
        return
    if proj.bias is None:
        proj.bias = torch.nn.Parameter(torch.zeros_like(shift), requires_grad=False)
    proj.bias -= shift


@torch.no_grad()
def scale_keys(loaded: LoadedModel, keys: list[tuple[int, int]], scale: float) -> None:
    """Multiply the key vector of each ``(layer, neuron)`` by ``scale``."""
    adapter = loaded.adapter
    for layer, neuron in keys:
        adapter.W_in(layer)[:, neuron] *= scale  # a view of the weight: column i is MLP.k_i
        bias = adapter.up_bias(layer) if adapter.gated else None
        if bias is not None:  # m = act(gate) · up: all of up, so m × s
            bias[neuron] *= scale


def apply_edit(loaded: LoadedModel, edit: dict) -> None:
    """Apply a recipe made by :func:`subtract_recipe` or :func:`unalign_recipe`, in place."""
    if edit["kind"] == "subtract":
        vector = torch.tensor(edit["vector"], dtype=torch.float32)
        if vector.shape[0] != loaded.adapter.d_model:
            raise ActwhError(
                f"edit vector has size {vector.shape[0]}, model d_model {loaded.adapter.d_model}"
            )
        subtract(loaded, edit["layer"], vector, edit["scale"])
    elif edit["kind"] == "unalign":
        by_layer = edit.get("layer_scales")  # a control matched on the added write
        if by_layer is None:
            scale_keys(loaded, [tuple(k) for k in edit["keys"]], edit["scale"])
        else:
            for l, n in edit["keys"]:
                scale_keys(loaded, [(l, n)], by_layer[str(l)])
    else:
        raise ActwhError(f"unknown edit kind {edit['kind']!r}")


def edit_hash(edit: dict) -> str:
    return hashlib.sha256(json.dumps(edit, sort_keys=True).encode()).hexdigest()[:16]


def subtract_recipe(direction: str, vector, layer: int, scale: float) -> dict:
    return {
        "kind": "subtract",
        "direction": direction,
        "layer": layer,
        "scale": scale,
        "vector": [float(x) for x in vector],
    }


def unalign_keys(
    store: Store,
    loaded: LoadedModel,
    direction: np.ndarray,
    top_k: int,
    *,
    per_layer: int | None = 100,
    run: str | None = None,
) -> list[tuple[int, int]]:
    """The ``top_k`` neurons of ``loaded`` whose write points most along ``direction``.

    Ranked by the cosine of the mean write ``m̄·v`` with the direction, ``m̄`` the neuron's mean
    coefficient in ``run`` (a run of this model or a related one); without a run, by the cosine
    of ``v`` — the paper's rule, right for GELU (``m ≥ −0.17``) and refused for a gated MLP.
    """
    # Imported here: value_vectors imports the registry, which imports this module.
    from actwh.ingest.value_vectors import top_value_vectors

    means = None
    if run is not None:
        snapshot = Snapshot(store)
        try:
            check_run(snapshot, run, loaded.name)
            a = loaded.adapter
            means = np.nan_to_num(mean_coefficients(snapshot, run, a.n_layers, a.d_mlp))
        finally:
            snapshot.close()
    elif loaded.adapter.gated:
        raise ActwhError(
            f"{loaded.name} has a gated MLP: a neuron's coefficient is signed, so the keys to "
            "scale are those whose mean write points along the direction in a run; pass "
            "run=... (--run RUN), e.g. a run of this model with the same prompts"
        )
    hits = top_value_vectors(loaded.adapter, direction, top_k, per_layer, mean_coefficients=means)
    return [(layer, neuron) for _, layer, neuron in hits]


def unalign_recipe(
    direction: str, keys: list[tuple[int, int]], scale: float, run: str | None = None
) -> dict:
    return {
        "kind": "unalign",
        "direction": direction,
        "run": run,
        "top_k": len(keys),
        "scale": scale,
        "keys": [[int(l), int(n)] for l, n in keys],
    }


def scaling(edit: dict) -> str:
    """How an un-aligning edit or its control scales its keys, in words."""
    scales = edit.get("layer_scales")
    if scales is None:
        return f"scaled by {edit['scale']:g}"
    return "scaled to add the edit's write: " + ", ".join(
        f"×{v:.3g} in layer {k}" for k, v in scales.items()
    )


def unaligning(edit: dict | None, variant: str) -> dict:
    """``variant``'s edit, if it is an un-aligning one (not a control); else an error."""
    if not edit or edit.get("kind") != "unalign" or "control_of" in edit:
        raise ActwhError(f"{variant!r} is not an un-aligned variant (actwh variant --unalign)")
    return edit


def control_recipe(
    edit: dict | None, variant: str, d_mlp: int, seed: int, sizes: np.ndarray | None = None
) -> dict:
    """As many keys as the un-aligning ``edit`` of ``variant`` scales, in the same layers, chosen
    at random (``seed``) among the other neurons of those layers; scaled by the same factor, or,
    given ``sizes`` (``[n_layers, d_mlp]``: each neuron's mean |m|·‖v‖ in the edit's run), by a
    factor per layer that makes the write they add, (s − 1)·Σ mean|m|·‖v‖, the edit's there.
    Scaling a key multiplies m exactly in a gated MLP, and about so in a GELU one."""
    edit = unaligning(edit, variant)
    rng = np.random.default_rng(seed)
    chosen = {tuple(k) for k in edit["keys"]}
    keys = []
    for layer in sorted({l for l, _ in chosen}):
        count = sum(1 for l, _ in chosen if l == layer)
        others = [n for n in range(d_mlp) if (layer, n) not in chosen]
        keys += [(layer, int(n)) for n in sorted(rng.choice(others, size=count, replace=False))]
    recipe = {
        "kind": "unalign",
        "direction": None,
        "control_of": variant,
        "seed": seed,
        "top_k": len(keys),
        "scale": edit["scale"],
        "keys": [[l, n] for l, n in keys],
        "match": "scale",
    }
    if sizes is None:
        return recipe
    added, scales = {}, {}
    for layer in sorted({l for l, _ in chosen}):
        target = (edit["scale"] - 1) * sum(sizes[l, n] for l, n in chosen if l == layer)
        own = sum(sizes[l, n] for l, n in keys if l == layer)
        if not own > 0:
            raise ActwhError(
                f"the control's keys in layer {layer} never fire in run {edit['run']!r}: no "
                "scale matches the edit's added write (try another seed)"
            )
        scales[str(layer)] = float(1 + target / own)
        added[str(layer)] = float(target)
    return recipe | {"match": "write", "layer_scales": scales, "added_write": added}
