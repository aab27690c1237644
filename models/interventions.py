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
from typing import Literal, TypedDict, cast

import numpy as np
import torch

from actwh.errors import ActwhError
from actwh.models.loading import LoadedModel
from actwh.models.value_vectors import top_value_vectors
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
    weight = cast(torch.Tensor, proj.weight)
    shift = (scale * vector).to(weight.device, weight.dtype)
    if norm is not None:
        norm.register_forward_hook(lambda module, args, output: output - shift)
        return
    if proj.bias is None:
        proj.bias = torch.nn.Parameter(torch.zeros_like(shift), requires_grad=False)
    cast(torch.Tensor, proj.bias).sub_(shift)


@torch.no_grad()
def scale_keys(loaded: LoadedModel, keys: list[tuple[int, int]], scale: float) -> None:
    """Multiply the key vector of each ``(layer, neuron)`` by ``scale``."""
    adapter = loaded.adapter
    for layer, neuron in keys:
        adapter.W_in(layer)[:, neuron] *= scale  # a view of the weight: column i is MLP.k_i
        bias = adapter.up_bias(layer) if adapter.gated else None
        if bias is not None:  # m = act(gate) · up: all of up, so m × s
            bias[neuron] *= scale


def scale_one_sided(
    loaded: LoadedModel, keys: list[tuple[int, int]], scales: list[float], signs: list[int]
) -> None:
    """Multiply the coefficient m_i of each ``(layer, neuron)`` by its scale only at the tokens
    where it writes along its sign's side of the direction (``sign · m_i > 0``): a hook on the
    input of the MLP's output projection (mlp_post), so the other tokens are untouched."""
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _) in enumerate(keys):
        by_layer.setdefault(layer, []).append(i)
    for layer, items in by_layer.items():
        proj = loaded.adapter.mlp_out_proj(layer)
        device = cast(torch.Tensor, proj.weight).device
        index = torch.tensor([keys[i][1] for i in items], device=device)
        sign = torch.tensor([float(signs[i]) for i in items], device=device)
        factor = torch.tensor([float(scales[i]) for i in items], device=device)

        def hook(module, args, index=index, sign=sign, factor=factor):
            m = args[0].clone()
            chosen = m[..., index]
            m[..., index] = torch.where(chosen * sign > 0, chosen * factor.to(m.dtype), chosen)
            return (m, *args[1:])

        proj.register_forward_pre_hook(hook)


class Edit(TypedDict, total=False):
    """A variant's edit, as stored in its model's ``config`` (``{"edit": ...}``) and read back by
    :func:`apply_edit`, the CLI and the SQL of ``toxicity_table``: the one declaration of its
    keys (a test checks the SQL reads only these)."""

    kind: Literal["subtract", "unalign"]
    direction: str | None  # the direction subtracted, or whose writers are un-aligned
    layer: int  # subtract: the layer whose MLP output is shifted
    vector: list[float]  # subtract: the direction's vector as subtracted
    scale: float  # subtract: α; unalign: the factor s on each key
    run: str | None  # unalign: the run whose mean writes chose the keys
    top_k: int
    keys: list[list[int]]  # unalign: [layer, neuron] of each key scaled
    chosen_by: str  # unalign: cosine, or selectivity:LABELS
    signs: list[int]  # a one-sided edit: each key's side of the direction
    control_of: str  # a control: the un-aligned variant it controls
    seed: int  # a control: its random keys' seed
    match: Literal["scale", "write"]  # a control: same s, or s per layer matching the write
    layer_scales: dict[str, float]  # match=write: s per layer
    added_write: dict[str, float]  # match=write: the write it adds per layer


def apply_edit(loaded: LoadedModel, edit: Edit) -> None:
    """Apply a recipe made by :func:`subtract_recipe`, :func:`unalign_recipe` or
    :func:`control_recipe`, in place."""
    if edit["kind"] == "subtract":
        vector = torch.tensor(edit["vector"], dtype=torch.float32)
        if vector.shape[0] != loaded.adapter.d_model:
            raise ActwhError(
                f"edit vector has size {vector.shape[0]}, model d_model {loaded.adapter.d_model}"
            )
        subtract(loaded, edit["layer"], vector, edit["scale"])
    elif edit["kind"] == "unalign":
        keys = [(int(l), int(n)) for l, n in edit["keys"]]
        by_layer = edit.get("layer_scales")  # a control matched on the added write
        scales = [edit["scale"] if by_layer is None else by_layer[str(l)] for l, _ in keys]
        if edit.get("signs") is not None:  # one-sided
            scale_one_sided(loaded, keys, scales, edit["signs"])
        else:
            for key, scale in zip(keys, scales, strict=True):
                scale_keys(loaded, [key], scale)
    else:
        raise ActwhError(f"unknown edit kind {edit['kind']!r}")


@torch.no_grad()
def key_signs(loaded: LoadedModel, keys: list[tuple[int, int]], direction) -> list[int]:
    """For each ``(layer, neuron)``: +1 where its value vector points along ``direction``, else
    −1 — the sign of m_i at which it writes toward the direction."""
    d = torch.as_tensor(np.asarray(direction), dtype=torch.float32)
    adapter = loaded.adapter
    return [1 if float(adapter.write_vectors(l)[n].float().cpu() @ d) > 0 else -1 for l, n in keys]


def edit_hash(edit: Edit) -> str:
    return hashlib.sha256(json.dumps(edit, sort_keys=True).encode()).hexdigest()[:16]


def subtract_recipe(direction: str, vector, layer: int, scale: float) -> Edit:
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
    direction: str,
    keys: list[tuple[int, int]],
    scale: float,
    run: str | None = None,
    *,
    chosen_by: str = "cosine",
    signs: list[int] | None = None,
) -> Edit:
    """``chosen_by``: how the keys were picked (``cosine``, or ``selectivity:LABELS``);
    ``signs``: a one-sided edit (:func:`scale_one_sided`), else every token's m_i is scaled."""
    recipe: Edit = {
        "kind": "unalign",
        "direction": direction,
        "run": run,
        "top_k": len(keys),
        "scale": scale,
        "keys": [[int(l), int(n)] for l, n in keys],
        "chosen_by": chosen_by,
    }
    if signs is not None:
        recipe["signs"] = [int(x) for x in signs]
    return recipe


def added_sizes(sizes: tuple[np.ndarray, np.ndarray], keys, signs: list[int] | None) -> list[float]:
    """What scaling each key by s adds to the write, over s − 1: its mean |m|·‖v‖, or for a
    one-sided edit the mean of the side it scales. ``sizes``: ``[n_layers, d_mlp]`` mean
    max(m, 0)·‖v‖ and mean max(−m, 0)·‖v‖ in the run."""
    pos, neg = sizes
    if signs is None:
        return [pos[l, n] + neg[l, n] for l, n in keys]
    return [(pos if s > 0 else neg)[l, n] for (l, n), s in zip(keys, signs, strict=True)]


def scaling(edit: Edit) -> str:
    """How an un-aligning edit or its control scales its keys, in words."""
    scales = edit.get("layer_scales")
    how = f"scaled by {edit['scale']:g}"
    if scales is not None:
        how = "scaled to add the edit's write: " + ", ".join(
            f"×{v:.3g} in layer {k}" for k, v in scales.items()
        )
    return how + (" where they write along the direction" if edit.get("signs") else "")


def unaligning(edit: Edit | None, variant: str) -> Edit:
    """``variant``'s edit, if it is an un-aligning one (not a control); else an error."""
    if not edit or edit.get("kind") != "unalign" or "control_of" in edit:
        raise ActwhError(f"{variant!r} is not an un-aligned variant (actwh variant --unalign)")
    return edit


def control_recipe(
    edit: Edit | None,
    variant: str,
    d_mlp: int,
    seed: int,
    sizes: tuple[np.ndarray, np.ndarray] | None = None,
    signs_of=None,
) -> Edit:
    """As many keys as the un-aligning ``edit`` of ``variant`` scales, in the same layers, chosen
    at random (``seed``) among the other neurons of those layers; scaled by the same factor, or,
    given ``sizes`` (:func:`added_sizes`'s, in the edit's run), by a factor per layer that makes
    the write they add, (s − 1)·Σ mean|m|·‖v‖, the edit's there. A one-sided edit's control is
    one-sided too: ``signs_of(keys)`` gives its keys' signs along the edit's direction.
    Scaling a key multiplies m exactly in a gated MLP, and about so in a GELU one."""
    edit = unaligning(edit, variant)
    rng = np.random.default_rng(seed)
    chosen = [tuple(k) for k in edit["keys"]]
    keys = []
    for layer in sorted({l for l, _ in chosen}):
        count = sum(1 for l, _ in chosen if l == layer)
        others = [n for n in range(d_mlp) if (layer, n) not in chosen]
        keys += [(layer, int(n)) for n in sorted(rng.choice(others, size=count, replace=False))]
    signs = signs_of(keys) if edit.get("signs") is not None else None
    recipe: Edit = {
        "kind": "unalign",
        "direction": None,
        "control_of": variant,
        "seed": seed,
        "top_k": len(keys),
        "scale": edit["scale"],
        "keys": [[l, n] for l, n in keys],
        "match": "scale",
    }
    if signs is not None:
        recipe["signs"] = signs
    if sizes is None:
        return recipe
    edit_sizes = added_sizes(sizes, chosen, edit.get("signs"))
    own_sizes = added_sizes(sizes, keys, signs)
    added: dict[str, float] = {}
    scales: dict[str, float] = {}
    for layer in sorted({l for l, _ in chosen}):
        target = (edit["scale"] - 1) * sum(
            x for (l, _), x in zip(chosen, edit_sizes, strict=True) if l == layer
        )
        own = sum(x for (l, _), x in zip(keys, own_sizes, strict=True) if l == layer)
        if not own > 0:
            raise ActwhError(
                f"the control's keys in layer {layer} never fire in run {edit['run']!r}: no "
                "scale matches the edit's added write (try another seed)"
            )
        scales[str(layer)] = float(1 + target / own)
        added[str(layer)] = float(target)
    recipe["match"], recipe["layer_scales"], recipe["added_write"] = "write", scales, added
    return recipe
