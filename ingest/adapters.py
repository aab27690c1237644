"""Architecture adapters: where each site lives in a model, and its MLP weights in TL shapes.

An adapter hides the module names of one family of HF models behind TransformerLens conventions:

* ``hook_point(site, layer)`` → the module and whether the site is its input or its output;
* ``W_out(layer)`` → value vectors, ``[d_mlp, d_model]`` (row i is MLP.v_i);
* ``W_in(layer)`` → key vectors, ``[d_model, d_mlp]`` (column i is MLP.k_i; for gated MLPs the
  linear "up" projection W2, the part that scales the coefficient linearly);
* ``final_norm`` and ``W_U`` (``[d_model, d_vocab]``) for the logit lens;
* ``gated``: whether a neuron's coefficient is signed (``act(gate) · up``: the neuron writes
  ``+v_i`` or ``−v_i``) or, as GPT-2's GELU, almost never below −0.17 (it writes ``+v_i``);
* ``through_final_norm(v)``: the part of a residual vector the unembedding sees, the final norm's
  linear part (gain, and centring for LayerNorm) — how a value vector's tokens can be read.

Weights are the raw HF weights: no LayerNorm folding, no centring.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from actwh.errors import ActwhError

Where = Literal["input", "output"]


class Adapter:
    """Base class; subclasses name the modules of one architecture family."""

    model_types: tuple[str, ...] = ()
    gated: bool = False
    # How the vocabulary projection of a value vector is read by default: "raw" (W_U · v, the
    # paper's Table 1) or "final_norm" (W_U · through_final_norm(v)). See the README.
    default_unembed: str = "raw"

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    # -- structure (subclasses) --
    def layer(self, index: int) -> nn.Module:
        raise NotImplementedError

    def attn(self, index: int) -> nn.Module:
        raise NotImplementedError

    def mlp(self, index: int) -> nn.Module:
        raise NotImplementedError

    def mlp_norm(self, index: int) -> nn.Module:
        """The norm in front of the MLP: its input is resid_mid."""
        raise NotImplementedError

    def mlp_out_proj(self, index: int) -> nn.Module:
        """The MLP's output projection: its input is mlp_post."""
        raise NotImplementedError

    @property
    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    def W_out(self, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def W_in(self, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def through_final_norm(self, vectors: torch.Tensor) -> torch.Tensor:
        """``[n, d_model]`` → what the unembedding reads of each, up to the norm's scale."""
        raise NotImplementedError

    # -- shared --
    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def d_mlp(self) -> int:
        return self.W_out(0).shape[0]

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    @property
    def context_length(self) -> int:
        return self.config.max_position_embeddings

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding, ``[d_model, d_vocab]``."""
        return self.model.get_output_embeddings().weight.T

    def hook_point(self, site: str, layer: int) -> tuple[nn.Module, Where]:
        points = {
            "resid_pre": (self.layer, "input"),
            "resid_mid": (self.mlp_norm, "input"),
            "resid_post": (self.layer, "output"),
            "attn_out": (self.attn, "output"),
            "mlp_out": (self.mlp, "output"),
            "mlp_post": (self.mlp_out_proj, "input"),
        }
        module, where = points[site]
        return module(layer), where


class GPT2Adapter(Adapter):
    """GPT-2: Conv1D ``c_fc`` ([d_model, d_mlp]) and ``c_proj`` ([d_mlp, d_model])."""

    model_types = ("gpt2",)

    def layer(self, index):
        return self.model.transformer.h[index]

    def attn(self, index):
        return self.layer(index).attn

    def mlp(self, index):
        return self.layer(index).mlp

    def mlp_norm(self, index):
        return self.layer(index).ln_2

    def mlp_out_proj(self, index):
        return self.mlp(index).c_proj

    @property
    def n_layers(self):
        return self.config.n_layer

    @property
    def d_model(self):
        return self.config.n_embd

    @property
    def context_length(self):
        return self.config.n_positions

    @property
    def final_norm(self):
        return self.model.transformer.ln_f

    def W_out(self, layer):
        return self.mlp(layer).c_proj.weight  # Conv1D stores [in, out] = [d_mlp, d_model]

    def W_in(self, layer):
        return self.mlp(layer).c_fc.weight  # [d_model, d_mlp]

    def through_final_norm(self, vectors):
        # LayerNorm centres, then scales by its gain (the bias does not depend on the vector).
        centred = vectors - vectors.mean(dim=-1, keepdim=True)
        return centred * self.final_norm.weight


class LlamaAdapter(Adapter):
    """Llama family (also Mistral, Qwen2, Qwen3): gated MLP ``down(act(gate(x)) * up(x))``."""

    model_types = ("llama", "mistral", "qwen2", "qwen3")
    gated = True
    # RMSNorm does not centre: a vector's effect on the logits is W_U · (γ ⊙ v) / rms(x), so its
    # gain γ decides which tokens it promotes (SmolLM2's runs from −2.1 to 3.3).
    default_unembed = "final_norm"

    def layer(self, index):
        return self.model.model.layers[index]

    def attn(self, index):
        return self.layer(index).self_attn

    def mlp(self, index):
        return self.layer(index).mlp

    def mlp_norm(self, index):
        return self.layer(index).post_attention_layernorm

    def mlp_out_proj(self, index):
        return self.mlp(index).down_proj

    @property
    def final_norm(self):
        return self.model.model.norm

    def W_out(self, layer):
        return self.mlp(layer).down_proj.weight.T  # nn.Linear stores [out, in] = [d_model, d_mlp]

    def W_in(self, layer):
        return self.mlp(layer).up_proj.weight.T  # [d_model, d_mlp]

    def through_final_norm(self, vectors):
        return vectors * self.final_norm.weight


ADAPTERS: tuple[type[Adapter], ...] = (GPT2Adapter, LlamaAdapter)


def supported_architectures() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for(model: nn.Module) -> Adapter:
    model_type = getattr(model.config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            adapter = cls(model)
            try:
                adapter.W_out(0), adapter.hook_point("mlp_post", 0), adapter.final_norm
            except (AttributeError, IndexError, TypeError) as error:
                raise ActwhError(
                    f"model of type {model_type!r} does not have the expected "
                    f"{cls.__name__} structure ({error})"
                ) from error
            return adapter
    raise ActwhError(
        f"unsupported architecture {model_type!r} ({type(model).__name__}); "
        f"supported: {', '.join(supported_architectures())}"
    )
