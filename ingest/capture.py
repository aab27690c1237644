"""Forward hooks that capture sites during a batch, on the device, in one pass.

One :class:`Capture` registers one hook per (site, layer) it needs. Each forward call (the prompt,
then every generated token) appends the hook's results to buffers that stay on the device until
the batch ends; :meth:`Capture.collect` concatenates them along the sequence axis into
``[batch, pos, ...]`` tensors in the padded layout of the batch.

What a hooked site can keep, all computed on the device so only what is stored leaves it:

* ``vectors``: the full activation (``residuals`` / ``mlp_acts``), for sites in ``store``;
* ``dots`` / ``cosines``: projections on every direction, for residual sites in ``project``;
* ``coefficients``: every neuron's coefficient (``mlp_post``) at the layers of ``coefficients``,
  kept until the batch ends (the hook only holds on to the tensor the MLP made anyway): per-neuron
  statistics (``neuron_stats``), tracked neurons and stored ``mlp_post`` vectors all come from it;
* ``lens``: the logit lens (final norm, then unembedding) of residual sites in ``project``:
  top-k token ids and probabilities, and the probability of chosen target tokens — at one
  position per row (``lens_at="last"``: the last prompt token, whose prediction is the first
  generated token) or at every position (``"all"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from actwh.ingest.adapters import Adapter
from actwh.ingest.sites import LENS_SITES, NEURON_SITE, RESIDUAL_SITES

Key = tuple[str, int]  # (site, layer)


@dataclass
class Directions:
    """Directions in residual space: ``vectors`` is ``[n, d_model]``, on the model's device."""

    names: list[str]
    vectors: torch.Tensor
    norms: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.norms = self.vectors.norm(dim=-1)


@dataclass
class Lens:
    """Logit-lens settings: ``k`` top tokens, ``targets`` token ids, where to read it."""

    k: int
    targets: list[int]
    at: str = "last"  # "last" (last prompt token) or "all"


@dataclass
class Captured:
    """What one batch produced, in the padded layout.

    ``lens_*`` tensors are ``[batch, k]`` with ``lens_at == "last"`` (read at ``lens_columns``)
    and ``[batch, pos, k]`` with ``"all"``.
    """

    vectors: dict[Key, torch.Tensor] = field(default_factory=dict)
    dots: dict[Key, torch.Tensor] = field(default_factory=dict)
    cosines: dict[Key, torch.Tensor] = field(default_factory=dict)
    coefficients: dict[int, torch.Tensor] = field(default_factory=dict)  # [batch, pos, d_mlp]
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)  # layer → [batch, pos, n]
    lens_ids: dict[Key, torch.Tensor] = field(default_factory=dict)
    lens_probs: dict[Key, torch.Tensor] = field(default_factory=dict)
    target_probs: dict[Key, torch.Tensor] = field(default_factory=dict)


class Capture:
    """Hooks for the sites of one run.

    Parameters
    ----------
    adapter
        The model's architecture adapter.
    layers
        The layers to hook for ``store``, ``project`` and ``lens``.
    store
        Sites whose full vectors are kept.
    project
        Residual-space sites projected on ``directions`` and (with ``lens``) read by the lens.
    directions
        Directions to project on, or ``None``.
    neurons
        Tracked neurons: ``{layer: [neuron, ...]}``; their coefficients are kept.
    coefficients
        Layers whose every coefficient is kept for the batch (for ``neuron_stats``).
    lens
        Logit-lens settings, or ``None``.
    """

    def __init__(
        self,
        adapter: Adapter,
        layers: list[int],
        *,
        store: list[str] = (),
        project: list[str] = (),
        directions: Directions | None = None,
        neurons: dict[int, list[int]] | None = None,
        coefficients: list[int] = (),
        lens: Lens | None = None,
    ):
        self.adapter = adapter
        self.layers = list(layers)
        self.store = list(store)
        self.directions = directions if directions is not None and directions.names else None
        self.project = [s for s in project if s in RESIDUAL_SITES] if self.directions else []
        self.lens = lens
        self.lens_sites = [s for s in project if s in LENS_SITES] if lens else []
        device = adapter.W_U.device
        self.neurons = {
            layer: torch.tensor(sorted(ids), dtype=torch.long, device=device)
            for layer, ids in (neurons or {}).items()
        }
        keys = [(s, l) for s in dict.fromkeys([*self.store, *project]) for l in layers]
        keys += [(NEURON_SITE, l) for l in sorted({*self.neurons, *coefficients})]
        self.keys: list[Key] = list(dict.fromkeys(keys))
        self._handles = []
        self._lens_columns: torch.Tensor | None = None
        # Fixed for the life of the capture (the hooks hold on to these lists); emptied per batch.
        self._chunks: dict[str, dict[Key, list[torch.Tensor]]] = {
            kind: {}
            for kind in (
                "vectors",
                "dots",
                "norms",
                "coefficients",
                "lens_ids",
                "lens_probs",
                "targets",
            )
        }
        for key in self.keys:
            for kind in self._kinds(key):
                self._chunks[kind][key] = []

    def _kinds(self, key: Key) -> list[str]:
        site, layer = key
        if site == NEURON_SITE:  # full vectors and tracked neurons are read off the coefficients
            return ["coefficients"]
        kinds = []
        if site in self.store:
            kinds.append("vectors")
        if site in self.project:
            kinds += ["dots", "norms"]
        if site in self.lens_sites:
            kinds += ["lens_ids", "lens_probs", "targets"]
        return kinds

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
        kinds = self._kinds(key)
        buffers = {kind: self._chunks[kind][key] for kind in kinds}

        # Hooks run ~60 times per forward call: keep them to the few ops that must see x now.
        def hook(x: torch.Tensor) -> None:
            x = x.detach()
            if "coefficients" in buffers:
                # The MLP's own intermediate: nothing writes to it after the output projection.
                buffers["coefficients"].append(x)
            if "vectors" in buffers:
                buffers["vectors"].append(x.clone())
            if "dots" in buffers:
                x32 = x.float()
                buffers["dots"].append(x32 @ self.directions.vectors.T)
                buffers["norms"].append(torch.linalg.vector_norm(x32, dim=-1, keepdim=True))
            if "lens_ids" in buffers:
                self._lens(x, buffers)

        return hook

    @torch.no_grad()
    def _lens(self, x: torch.Tensor, buffers: dict) -> None:
        if self.lens.at == "last":
            if buffers["lens_ids"]:  # only the first forward call of a batch holds the prompt
                return
            rows = torch.arange(x.shape[0], device=x.device)
            x = x[rows, self._lens_columns.to(x.device)]  # [batch, d]
        logits = self.adapter.final_norm(x) @ self.adapter.W_U
        probs = torch.softmax(logits.float(), dim=-1)
        top = probs.topk(self.lens.k, dim=-1)
        buffers["lens_ids"].append(top.indices)
        buffers["lens_probs"].append(top.values)
        if self.lens.targets:
            buffers["targets"].append(probs[..., self.lens.targets])

    def start_batch(self, lens_columns: torch.Tensor | None = None) -> None:
        """Empty the buffers; ``lens_columns`` ([batch]) is where ``lens_at="last"`` reads."""
        for chunks in self._chunks.values():
            for parts in chunks.values():
                parts.clear()
        self._lens_columns = lens_columns

    def collect(self) -> Captured:
        """Concatenate this batch's chunks along the sequence axis and start a new batch."""
        last = self.lens is not None and self.lens.at == "last"
        joined = {}
        for kind, chunks in self._chunks.items():
            lens_kind = kind in ("lens_ids", "lens_probs", "targets")
            joined[kind] = {
                key: parts[0] if (lens_kind and last) else torch.cat(parts, dim=1)
                for key, parts in chunks.items()
                if parts
            }
        self.start_batch()
        cosines = {}
        if self.directions is not None:
            for key, dots in joined["dots"].items():
                norms = joined["norms"][key] * self.directions.norms
                cosines[key] = dots / norms.clamp_min(1e-12)
        coefficients = {layer: t for (_, layer), t in joined["coefficients"].items()}
        vectors = joined["vectors"]
        for layer, x in coefficients.items():
            if NEURON_SITE in self.store and layer in self.layers:
                vectors[(NEURON_SITE, layer)] = x
        return Captured(
            vectors=vectors,
            dots=joined["dots"],
            cosines=cosines,
            coefficients=coefficients,
            neurons={
                layer: coefficients[layer][..., ids].float() for layer, ids in self.neurons.items()
            },
            lens_ids=joined["lens_ids"],
            lens_probs=joined["lens_probs"],
            target_probs=joined["targets"],
        )


def site_table(site: str) -> str:
    """The fact table that holds a site's full vectors."""
    return "mlp_acts" if site == NEURON_SITE else "residuals"
