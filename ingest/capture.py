"""Forward hooks that capture sites during a batch, on the device, in one pass.

One :class:`Capture` registers one hook per (site, layer) it needs. Each forward call (the prompt,
then every generated token) appends the hook's slice to a buffer that stays on the device until
the batch ends; :meth:`Capture.collect` concatenates the buffers along the sequence axis into
``[batch, pos, d]`` tensors in the padded layout of the batch.

What is kept per hooked site:

* ``vectors``: the full activation (for ``residuals`` / ``mlp_acts``), for sites in ``store``;
* ``projections``: dot product and cosine with every direction, for residual-space sites — computed
  here so only ``[batch, pos, n_directions]`` ever leaves the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from actwh.ingest.adapters import NEURON_SITE, RESIDUAL_SITES, Adapter

Key = tuple[str, int]  # (site, layer)


@dataclass
class Directions:
    """Unit-agnostic directions in residual space: ``vectors`` is ``[n, d_model]``."""

    names: list[str]
    vectors: torch.Tensor
    norms: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.norms = self.vectors.norm(dim=-1)


@dataclass
class Captured:
    """What one batch produced, in the padded ``[batch, pos]`` layout."""

    vectors: dict[Key, torch.Tensor]  # [batch, pos, d]
    dots: dict[Key, torch.Tensor]  # [batch, pos, n_directions]
    cosines: dict[Key, torch.Tensor]


class Capture:
    """Hooks for the sites of one run.

    Parameters
    ----------
    adapter
        The model's architecture adapter.
    layers
        The layers to hook.
    store
        Sites whose full vectors are kept.
    project
        Residual-space sites whose projections on ``directions`` are kept.
    directions
        The directions to project on, on the model's device, or ``None``.
    """

    def __init__(
        self,
        adapter: Adapter,
        layers: list[int],
        *,
        store: list[str] = (),
        project: list[str] = (),
        directions: Directions | None = None,
    ):
        self.adapter = adapter
        self.layers = list(layers)
        self.store = list(store)
        self.project = [s for s in project if s in RESIDUAL_SITES] if directions else []
        self.directions = directions
        sites = dict.fromkeys([*self.store, *self.project])
        self.keys: list[Key] = [(s, layer) for s in sites for layer in self.layers]
        self._handles = []
        # Fixed for the life of the capture (the hooks hold on to these lists); emptied per batch.
        self._chunks: dict[str, dict[Key, list[torch.Tensor]]] = {
            "vectors": {k: [] for k in self.keys if k[0] in self.store},
            "dots": {k: [] for k in self.keys if k[0] in self.project},
            "cosines": {k: [] for k in self.keys if k[0] in self.project},
        }

    def __enter__(self) -> Capture:
        for site, layer in self.keys:
            module, where = self.adapter.hook_point(site, layer)
            hook = self._hook((site, layer))
            if where == "input":
                handle = module.register_forward_pre_hook(
                    lambda mod, args, kwargs, hook=hook: hook(
                        args[0] if args else kwargs["hidden_states"]
                    ),
                    with_kwargs=True,
                )
            else:
                handle = module.register_forward_hook(
                    lambda mod, args, output, hook=hook: hook(
                        output[0] if isinstance(output, tuple) else output
                    )
                )
            self._handles.append(handle)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, key: Key):
        site = key[0]
        store = site in self.store
        project = site in self.project
        chunks = self._chunks
        directions = self.directions

        def hook(x: torch.Tensor) -> None:
            x = x.detach()
            if store:
                chunks["vectors"][key].append(x.clone())
            if project:
                x32 = x.float()
                dots = x32 @ directions.vectors.T
                norms = x32.norm(dim=-1, keepdim=True) * directions.norms
                chunks["dots"][key].append(dots)
                chunks["cosines"][key].append(dots / norms.clamp_min(1e-12))

        return hook

    def start_batch(self) -> None:
        for chunks in self._chunks.values():
            for parts in chunks.values():
                parts.clear()

    def collect(self) -> Captured:
        """Concatenate this batch's chunks along the sequence axis and start a new batch."""
        joined = {
            kind: {k: torch.cat(parts, dim=1) for k, parts in chunks.items()}
            for kind, chunks in self._chunks.items()
        }
        self.start_batch()
        return Captured(joined["vectors"], joined["dots"], joined["cosines"])


def site_table(site: str) -> str:
    """The fact table that holds a site's full vectors."""
    return "mlp_acts" if site == NEURON_SITE else "residuals"
