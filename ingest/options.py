"""Options of an ingestion run, and the parsing of ``--layers`` and ``--capture``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from actwh.errors import ActwhError
from actwh.ingest.adapters import RESIDUAL_SITES, SITES

STORE_DTYPES = ("float16", "float32")
OVERFLOW = ("fallback", "error")


@dataclass
class IngestOptions:
    """Everything that shapes a run. Fields in :data:`RESUME_KEYS` must match to resume one."""

    name: str | None = None
    model_name: str | None = None
    prompt_set: str | None = None
    generate: int = 20
    capture: str = ""  # sites whose full vectors are stored
    project: str = "resid_mid,resid_post"  # sites projected on the model's directions
    layers: str = "all"
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "float32"
    store_dtype: str = "float16"
    overflow: str = "fallback"
    max_prompt_tokens: int | None = None
    commit_mb: int = 256  # commit when this much is buffered ...
    commit_seconds: float = 120.0  # ... or this long after the last commit
    progress: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


# What must be equal for a resumed run to continue exactly where the first one stopped.
RESUME_KEYS = (
    "generate",
    "capture",
    "project",
    "layers",
    "batch_size",
    "dtype",
    "store_dtype",
    "max_prompt_tokens",
)


def parse_sites(spec: str, option: str = "--capture", allowed=SITES) -> list[str]:
    sites = [s.strip() for s in (spec or "").split(",") if s.strip()]
    for site in sites:
        if site not in allowed:
            raise ActwhError(f"{option}: unknown site {site!r}; valid: {', '.join(allowed)}")
    return list(dict.fromkeys(sites))


def parse_project(spec: str) -> list[str]:
    return parse_sites(spec, "--project", RESIDUAL_SITES)


def parse_layers(spec: str, n_layers: int, option: str = "--layers") -> list[int]:
    """``all``, ``19``, ``10-20`` (inclusive) or a comma list of those; 0-based."""
    spec = (spec or "all").strip()
    if spec == "all":
        return list(range(n_layers))
    layers: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                layers.extend(range(lo, hi + 1))
            else:
                layers.append(int(part))
        except ValueError:
            raise ActwhError(
                f"{option} {spec!r}: expected 'all', a layer like 19, a range like 10-20, "
                "or a comma list of those"
            ) from None
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise ActwhError(
                f"{option}: layer {layer} is out of range; the model has {n_layers} layers "
                f"(0-{n_layers - 1})"
            )
    return sorted(set(layers))


def parse_shard(spec: str | None) -> tuple[int, int]:
    if not spec:
        return (0, 1)
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ActwhError(f"--shard {spec!r}: expected i/N, e.g. 0/2") from None
    if not (count >= 1 and 0 <= index < count):
        raise ActwhError(f"--shard {spec}: need 0 <= i < N")
    return (index, count)
