"""Options of an ingestion run, and the parsing of ``--layers`` and ``--capture``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from actwh.errors import ActwhError
from actwh.ingest.sites import RESIDUAL_SITES, SITES

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
    teacher_force: str | None = None  # replay this run's token sequences
    track_neurons: str = ""  # "19:770,12:771" or "DIRECTION:K" (top K by cosine; |cos| if gated)
    logit_lens: int = 0  # top-K tokens of the logit lens (0: off)
    target_tokens: str = ""  # " crap,garbage" or "#7510": logit-lens probability of these
    lens_at: str = "last"  # last (last prompt token) | all (every position)
    prompt_logprobs: bool = False  # log-probabilities of prompt tokens too (costs ~7%)
    on_long: str = "truncate"  # a prompt longer than fits: truncate (keep its start) | refuse
    resume: bool = False  # insist on resuming an unfinished run of this name
    catalog: str | None = None  # SQLAlchemy URL of the catalog, when creating the warehouse
    commit_mb: int = 128  # commit when this much is buffered ...
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
    "teacher_force",
    "track_neurons",
    "logit_lens",
    "target_tokens",
    "lens_at",
    "prompt_logprobs",
    "directions",
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


def parse_targets(spec: str, tokenizer) -> list[int]:
    """``--target-tokens``: comma-separated strings that are one token each, or ``#id``."""
    ids = []
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        if re.fullmatch(r"#\d+", item.strip()):
            token = int(item.strip()[1:])
            if token >= len(tokenizer):
                raise ActwhError(f"--target-tokens: id {token} is beyond the vocabulary")
            ids.append(token)
            continue
        encoded = tokenizer(item, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ActwhError(
                f"--target-tokens: {item!r} is {len(encoded)} tokens {encoded}; give strings that "
                "are one token each (mind the leading space), or #id"
            )
        ids.append(encoded[0])
    return list(dict.fromkeys(ids))


def parse_tracked(spec: str, loaded, directions: dict[str, np.ndarray]) -> dict[int, list[int]]:
    """``--track-neurons``: ``19:770,12:771``, or ``DIRECTION:K`` for the K neurons that can write
    most along a direction of the model: the value vectors most cosine-similar to it (the paper's
    MLP.v_Toxic for ``toxic_probe:64``), or for a gated MLP, whose neurons write ±v, those with
    the largest |cosine|."""
    spec = (spec or "").strip()
    if not spec:
        return {}
    adapter = loaded.adapter
    pairs = [p.strip() for p in spec.split(",")]
    if all(re.fullmatch(r"\d+:\d+", p) for p in pairs):
        tracked: dict[int, list[int]] = {}
        for pair in pairs:
            layer, neuron = (int(x) for x in pair.split(":"))
            if not (0 <= layer < adapter.n_layers and 0 <= neuron < adapter.d_mlp):
                raise ActwhError(
                    f"--track-neurons {pair}: out of range ({adapter.n_layers} layers, "
                    f"{adapter.d_mlp} neurons each)"
                )
            tracked.setdefault(layer, []).append(neuron)
        return {layer: sorted(set(n)) for layer, n in sorted(tracked.items())}
    match = re.fullmatch(r"(.+):(\d+)", spec)
    if not match:
        raise ActwhError(
            f"--track-neurons {spec!r}: expected LAYER:NEURON pairs (19:770,12:771) or DIRECTION:K"
        )
    name, k = match.group(1), int(match.group(2))
    if name not in directions:
        from actwh.warehouse.directions import unknown_direction

        raise unknown_direction(name, loaded.name, directions)
    from actwh.ingest.value_vectors import top_value_vectors

    tracked = {}
    for _, layer, neuron in top_value_vectors(adapter, directions[name], k):
        tracked.setdefault(layer, []).append(neuron)
    return {layer: sorted(n) for layer, n in sorted(tracked.items())}
