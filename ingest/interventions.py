"""Interventions on a loaded model: steering hooks and the two edits of the paper.

* :func:`steer` — add a vector to the output of a layer (the residual stream) while generating.
  Used to make dispreferred continuations for DPO pairs.
* ``subtract`` (paper §3.3, Table 2) — subtract ``α · v`` from the output of layer L's MLP, at
  every position. Realised as a weight edit, ``bias -= α · v`` on the MLP's output projection, so
  the edited model is an ordinary model (for the last layer this equals the paper's hook; the
  paper's generation protocol edits only the newest position, which is the same thing there).
* ``unalign`` (paper §6, Table 4) — scale the key vectors of chosen value vectors by ``s``:
  GPT-2 ``c_fc.weight[:, i] *= s`` (bias untouched, as in the paper's code); gated MLPs scale the
  linear "up" row (W2), which scales the neuron's coefficient by ``s`` (the paper's "SCALE W2").

An edit is a JSON-able recipe (:func:`apply_edit`), so a variant registered in a warehouse is its
parent model plus the recipe, re-applied whenever the variant is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from actwh.errors import ActwhError
from actwh.ingest.adapters import GPT2Adapter
from actwh.ingest.models import LoadedModel


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
    """Make layer ``layer``'s MLP output ``α · vector`` smaller, at every position."""
    proj = loaded.adapter.mlp_out_proj(layer)
    shift = (scale * vector).to(proj.weight.device, proj.weight.dtype)
    if proj.bias is None:
        proj.bias = torch.nn.Parameter(torch.zeros_like(shift), requires_grad=False)
    proj.bias -= shift


@torch.no_grad()
def scale_keys(loaded: LoadedModel, keys: list[tuple[int, int]], scale: float) -> None:
    """Multiply the key vector of each ``(layer, neuron)`` by ``scale``."""
    adapter = loaded.adapter
    for layer, neuron in keys:
        mlp = adapter.mlp(layer)
        if isinstance(adapter, GPT2Adapter):
            mlp.c_fc.weight[:, neuron] *= scale
        else:
            mlp.up_proj.weight[neuron, :] *= scale


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
        scale_keys(loaded, [tuple(k) for k in edit["keys"]], edit["scale"])
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


def unalign_recipe(direction: str, keys: list[tuple[int, int]], scale: float) -> dict:
    return {
        "kind": "unalign",
        "direction": direction,
        "top_k": len(keys),
        "scale": scale,
        "keys": [[int(l), int(n)] for l, n in keys],
    }
