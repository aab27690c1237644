"""Architecture adapters: where each site lives in a model, and its MLP weights in TL shapes.

An adapter hides the module names of one family of HF models behind TransformerLens conventions:

* ``hook_point(site, layer)`` → the module and whether the site is its input or its output;
* ``W_out(layer)`` → value vectors, ``[d_mlp, d_model]`` (row i is MLP.v_i);
* ``W_in(layer)`` → key vectors, ``[d_model, d_mlp]`` (column i is MLP.k_i; for gated MLPs the
  linear "up" projection, the part that scales the coefficient linearly) — a view of the weight;
* ``write_vectors(layer)`` → what a unit coefficient adds to the residual stream: ``v_i``, or
  ``γ ⊙ v_i`` where a norm with gain γ follows the MLP (Gemma 2/3, OLMo 2; see below);
* ``final_norm``, ``W_U`` (``[d_model, d_vocab]``) and ``logits(x)`` (with the model's soft-cap)
  for the logit lens;
* ``gated``: whether a neuron's coefficient is signed (``act(gate) · up``: the neuron writes
  ``+v_i`` or ``−v_i``) or, as GPT-2's GELU, almost never below −0.17 (it writes ``+v_i``);
* ``through_final_norm(v)``: the part of a residual vector the unembedding sees, the final norm's
  linear part (gain, and centring for LayerNorm) — how a value vector's tokens can be read.

Sites follow the residual stream: ``attn_out`` and ``mlp_out`` are what each block adds to it (after
its post-norm where the model has one), so ``resid_mid = resid_pre + attn_out`` and
``resid_post = resid_mid + mlp_out`` in every sequential model. With parallel attention and MLP
(GPT-NeoX's ``use_parallel_residual``) there is no ``resid_mid``: the MLP reads ``ln2(resid_pre)``
and ``resid_post = resid_pre + attn_out + mlp_out``.

Where a norm follows the MLP, the residual stream receives ``γ ⊙ y / rms(y)`` with
``y = Σ m_i v_i`` the MLP's output: neuron i's share of that is ``m_i · (γ ⊙ v_i) / rms(y)``, a
direction fixed by the weights (``write_vectors``) and a scale shared by every neuron at a token.

Weights are the raw HF weights: no LayerNorm folding, no centring.
"""

from __future__ import annotations

from functools import reduce
from typing import Any, Literal, cast

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from actwh.errors import ActwhError, arg
from actwh.models.sites import SITES

Where = Literal["input", "output"]


def _in_out(linear: nn.Module) -> torch.Tensor:
    """A projection's weight as ``[in, out]`` (a view: edits reach the model)."""
    weight = cast(torch.Tensor, linear.weight)
    return weight if isinstance(linear, Conv1D) else weight.T


class Adapter:
    """One family of models, declared by the names of its modules.

    ``layers_path`` and ``final_path`` are attribute paths from the model; the other names are
    attributes of a decoder layer (attention, MLP, the norms) or of its MLP (``up_name``,
    ``out_name``). A norm name of ``None`` means the model has no such norm.
    """

    model_types: tuple[str, ...] = ()
    gated: bool = True
    layers_path = "model.layers"
    final_path = "model.norm"
    attn_name = "self_attn"
    mlp_name = "mlp"
    mlp_norm_name: str | None = "post_attention_layernorm"  # the norm the MLP reads through
    post_attn_norm_name: str | None = None  # a norm on the attention's output, before the residual
    post_mlp_norm_name: str | None = None  # a norm on the MLP's output, before the residual
    up_name = "up_proj"  # the linear part of the MLP's input projection: keys
    out_name = "down_proj"  # the MLP's output projection: its input is mlp_post, its rows v_i
    centred_norm = False  # LayerNorm (centres, then scales) rather than RMSNorm
    norm_offset = 0.0  # Gemma's RMSNorm multiplies by (1 + w)
    # How the vocabulary projection of a value vector is read by default: "raw" (W_U · v, the
    # paper's Table 1) or "final_norm" (W_U · through_final_norm(v)). RMSNorm does not centre:
    # a vector's effect on the logits is W_U · (γ ⊙ v) / rms(x), so its gain γ decides which
    # tokens it promotes (SmolLM2's runs from −2.1 to 3.3).
    default_unembed = "final_norm"

    def __init__(self, model: nn.Module):
        self.model: Any = model  # a transformers model: its config and modules by name
        self.config: Any = self.model.config

    # -- structure --
    def layer(self, index: int) -> nn.Module:
        return reduce(getattr, self.layers_path.split("."), self.model)[index]

    def _part(self, index: int, name: str | None) -> nn.Module | None:
        return None if name is None else getattr(self.layer(index), name)

    def attn(self, index: int) -> nn.Module:
        return getattr(self.layer(index), self.attn_name)

    def mlp(self, index: int) -> nn.Module:
        return getattr(self.layer(index), self.mlp_name)

    def mlp_norm(self, index: int) -> nn.Module | None:
        """The norm the MLP reads its input through (None: it reads the residual itself)."""
        return self._part(index, self.mlp_norm_name)

    def post_mlp_norm(self, index: int) -> nn.Module | None:
        return self._part(index, self.post_mlp_norm_name)

    def mlp_out_proj(self, index: int) -> nn.Module:
        """The MLP's output projection: its input is mlp_post."""
        return getattr(self.mlp(index), self.out_name)

    @property
    def final_norm(self) -> nn.Module:
        return reduce(getattr, self.final_path.split("."), self.model)

    @property
    def parallel(self) -> bool:
        """Attention and MLP read the same residual (GPT-NeoX): there is no resid_mid."""
        return False

    @property
    def mlp_reads(self) -> str:
        """The residual site the MLP reads (through its norm, if it has one)."""
        return "resid_pre" if self.parallel else "resid_mid"

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(s for s in SITES if not (s == "resid_mid" and self.parallel))

    def missing_site(self, site: str) -> str:
        """Why this model has no ``site``."""
        return (
            f"{self.config.model_type} runs attention and MLP in parallel, so it has no "
            f"{site} (its MLP reads its norm of resid_pre); use resid_pre or resid_post"
        )

    def hook_point(self, site: str, layer: int) -> tuple[nn.Module, Where]:
        if site not in self.sites:
            raise ActwhError(self.missing_site(site))
        block = self.layer(layer)
        points: dict[str, tuple[nn.Module, Where]] = {
            "resid_pre": (block, "input"),
            "resid_mid": (self.mlp_norm(layer) or self.mlp(layer), "input"),
            "resid_post": (block, "output"),
            "attn_out": (getattr(block, self.post_attn_norm_name or self.attn_name), "output"),
            # The output projection's output is the MLP's (GPT-2's dropout is the identity in
            # eval): its hook also serves mlp_post.
            "mlp_out": (self.post_mlp_norm(layer) or self.mlp_out_proj(layer), "output"),
            "mlp_post": (self.mlp_out_proj(layer), "input"),
        }
        return points[site]

    # -- weights --
    def W_out(self, layer: int) -> torch.Tensor:
        return _in_out(self.mlp_out_proj(layer))

    def W_in(self, layer: int) -> torch.Tensor:
        return _in_out(getattr(self.mlp(layer), self.up_name))

    def up_bias(self, layer: int) -> torch.Tensor | None:
        """The bias of the keys' projection (scaled with them when un-aligning a gated MLP)."""
        return getattr(self.mlp(layer), self.up_name).bias

    def gain(self, norm: nn.Module) -> torch.Tensor:
        """A norm's per-dimension gain as it multiplies (``w``, or ``1 + w`` for Gemma)."""
        return cast(torch.Tensor, norm.weight) + self.norm_offset

    def write_gain(self, layer: int) -> torch.Tensor | None:
        """The gain of the norm after the MLP (None where the MLP writes the residual directly)."""
        norm = self.post_mlp_norm(layer)
        return None if norm is None else self.gain(norm)

    def write_vectors(self, layer: int) -> torch.Tensor:
        """``[d_mlp, d_model]``: the direction each neuron writes into the residual stream."""
        gain = self.write_gain(layer)
        return self.W_out(layer) if gain is None else self.W_out(layer) * gain

    def through_final_norm(self, vectors: torch.Tensor) -> torch.Tensor:
        """``[n, d_model]`` → what the unembedding reads of each, up to the norm's scale."""
        if self.centred_norm:  # LayerNorm centres; its bias does not depend on the vector
            vectors = vectors - vectors.mean(dim=-1, keepdim=True)
        return vectors * self.gain(self.final_norm)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own next-token logits from a residual state (final norm, W_U, soft-cap)."""
        logits = self.final_norm(x) @ self.W_U
        cap = getattr(self.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap

    # -- sizes --
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


class GPT2Adapter(Adapter):
    """GPT-2: GELU MLP, Conv1D ``c_fc`` ([d_model, d_mlp]) and ``c_proj`` ([d_mlp, d_model])."""

    model_types = ("gpt2",)
    gated = False
    default_unembed = "raw"
    layers_path, final_path = "transformer.h", "transformer.ln_f"
    attn_name, mlp_norm_name, up_name, out_name = "attn", "ln_2", "c_fc", "c_proj"
    centred_norm = True

    @property
    def n_layers(self):
        return self.config.n_layer

    @property
    def d_model(self):
        return self.config.n_embd

    @property
    def context_length(self):
        return self.config.n_positions


class GPTNeoXAdapter(Adapter):
    """GPT-NeoX (Pythia): GELU MLP; attention and MLP in parallel when ``use_parallel_residual``."""

    model_types = ("gpt_neox",)
    gated = False
    default_unembed = "raw"
    layers_path, final_path = "gpt_neox.layers", "gpt_neox.final_layer_norm"
    attn_name, up_name, out_name = "attention", "dense_h_to_4h", "dense_4h_to_h"
    centred_norm = True

    @property
    def parallel(self):
        return bool(self.config.use_parallel_residual)


class LlamaAdapter(Adapter):
    """Llama family (also Mistral, Qwen2, Qwen3): gated MLP ``down(act(gate(x)) * up(x))``."""

    model_types = ("llama", "mistral", "qwen2", "qwen3")


class GemmaAdapter(Adapter):
    """Gemma: GeGLU MLP; RMSNorm multiplies by ``1 + w``; embeddings scaled by √d_model."""

    model_types: tuple[str, ...] = ("gemma",)
    norm_offset = 1.0


class Gemma2Adapter(GemmaAdapter):
    """Gemma 2 and Gemma 3 (text): norms before and after attention and MLP; logit soft-cap."""

    model_types = ("gemma2", "gemma3_text")
    mlp_norm_name = "pre_feedforward_layernorm"
    post_attn_norm_name = "post_attention_layernorm"
    post_mlp_norm_name = "post_feedforward_layernorm"


class Phi3Adapter(Adapter):
    """Phi-3: gated MLP with one fused ``gate_up_proj`` (gate rows first, then up)."""

    model_types = ("phi3",)
    up_name = "gate_up_proj"

    def W_in(self, layer):
        return _in_out(self.mlp(layer).gate_up_proj)[:, self.d_mlp :]

    def up_bias(self, layer):
        bias = self.mlp(layer).gate_up_proj.bias
        return None if bias is None else bias[self.d_mlp :]


class Olmo2Adapter(Adapter):
    """OLMo 2: no norm before attention or MLP; a norm after each, before the residual."""

    model_types = ("olmo2",)
    mlp_norm_name = None
    post_attn_norm_name = "post_attention_layernorm"
    post_mlp_norm_name = "post_feedforward_layernorm"


ADAPTERS: tuple[type[Adapter], ...] = (
    GPT2Adapter,
    GPTNeoXAdapter,
    LlamaAdapter,
    GemmaAdapter,
    Gemma2Adapter,
    Phi3Adapter,
    Olmo2Adapter,
)
REFUSED = {
    "gemma3": "Gemma 3 with vision: load its text model (model_type gemma3_text, e.g. "
    "google/gemma-3-1b-it, or Gemma3ForCausalLM)",
}


def supported_architectures() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for(model: nn.Module) -> Adapter:
    model_type = getattr(model.config, "model_type", None)
    supported = f"supported: {', '.join(supported_architectures())}"
    if model_type in REFUSED:
        raise ActwhError(f"{arg('model')}: {REFUSED[model_type]}; {supported}")
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            adapter = cls(model)
            try:
                adapter.W_out(0), adapter.W_in(0), adapter.final_norm
                adapter.hook_point("mlp_post", 0), adapter.hook_point("mlp_out", 0)
            except (AttributeError, IndexError, TypeError) as error:
                raise ActwhError(
                    f"model of type {model_type!r} does not have the expected "
                    f"{cls.__name__} structure ({error})"
                ) from error
            return adapter
    raise ActwhError(
        f"unsupported architecture {model_type!r} ({type(model).__name__}); {supported}"
    )
