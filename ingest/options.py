"""Options of an ingestion run, and their parsing: each option takes Python values (a list of
sites, a range of layers) or the CLI's strings (``"resid_mid,mlp_post"``, ``"10-20"``)."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import numpy as np

from actwh.arguments import check
from actwh.errors import ActwhError, arg
from actwh.ingest.adapters import Adapter
from actwh.ingest.sites import RESIDUAL_SITES, SITES

STORE_DTYPES = ("float16", "float32")
OVERFLOW = ("scale", "float32", "error")


@dataclass
class IngestOptions:
    """Everything that shapes a run. Fields in :data:`RESUME_KEYS` must match to resume one."""

    name: str | None = None
    model_name: str | None = None
    prompt_set: str | None = None
    generate: int = 20
    capture: str | Iterable[str] = ""  # sites whose full vectors are stored
    # sites projected on directions (None: the site the MLP reads and resid_post)
    project: str | Iterable[str] | None = None
    layers: str | int | Iterable[int] | None = "all"  # None or "all": every layer
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "float32"
    store_dtype: str = "float16"
    on_overflow: str = "scale"
    max_prompt_tokens: int | None = None
    teacher_force: str | None = None  # replay this run's token sequences
    # "19:770,12:771" or [(19, 770), (12, 771)], or "DIRECTION:K" (top K by cosine; |cos| if gated)
    track_neurons: str | Iterable[tuple[int, int]] = ""
    logit_lens: int = 0  # top-K tokens of the logit lens (0: off)
    # " crap,garbage" or "#7510", or [" crap", 7510]: logit-lens probability of these tokens
    target_tokens: str | Iterable[str | int] = ""
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

    def check(self) -> None:
        """Refuse values no model could accept (and values of the wrong type, by name)."""
        hints = typing.get_type_hints(IngestOptions)
        for option in fields(self):
            check(option.name, getattr(self, option.name), hints[option.name])
        if self.batch_size < 1 or self.generate < 0 or self.logit_lens < 0:
            raise ActwhError(
                f"{arg('batch_size')} must be >= 1, {arg('generate')} and {arg('logit_lens')} >= 0"
            )
        for name, value, allowed in (
            ("lens_at", self.lens_at, ("last", "all")),
            ("on_long", self.on_long, ("truncate", "refuse")),
            ("on_overflow", self.on_overflow, OVERFLOW),
            ("store_dtype", self.store_dtype, STORE_DTYPES),
        ):
            if value not in allowed:
                raise ActwhError(f"{arg(name)} {value!r}: expected {' or '.join(allowed)}")


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


def _items(spec: str | Iterable | None) -> list:
    """A comma list as strings, or an iterable's items as they are."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [s.strip() for s in spec.split(",") if s.strip()]
    return list(spec)


def parse_sites(
    spec: str | Iterable[str], adapter: Adapter, option: str = "capture", allowed=SITES
) -> list[str]:
    sites = _items(spec)
    for site in sites:
        if site not in allowed:
            raise ActwhError(f"{arg(option)}: unknown site {site!r}; valid: {', '.join(allowed)}")
        if site not in adapter.sites:
            raise ActwhError(f"{arg(option)} {site}: {adapter.missing_site(site)}")
    return list(dict.fromkeys(sites))


def parse_project(spec: str | Iterable[str] | None, adapter: Adapter) -> list[str]:
    if spec is None:
        spec = [adapter.mlp_reads, "resid_post"]
    return parse_sites(spec, adapter, "project", RESIDUAL_SITES)


def parse_shard(spec: str | tuple[int, int] | None) -> tuple[int, int]:
    """``(i, N)`` or the CLI's ``"i/N"``: this worker takes every N-th batch from the i-th."""
    if not spec:
        return (0, 1)
    try:
        index, count = (int(x) for x in (spec.split("/") if isinstance(spec, str) else spec))
    except ValueError:
        raise ActwhError(f"{arg('shard')} {spec!r}: expected i/N, e.g. 0/2") from None
    if not (count >= 1 and 0 <= index < count):
        raise ActwhError(f"{arg('shard')} {spec}: need 0 <= i < N")
    return (index, count)


def parse_targets(spec: str | Iterable[str | int], tokenizer) -> list[int]:
    """``target_tokens``: strings that are one token each or token ids (``#id`` in a comma
    list: ``" crap,#7510"``)."""
    ids = []
    items = (spec or "").split(",") if isinstance(spec, str) else list(spec)
    for item in items:
        if isinstance(item, str) and re.fullmatch(r"#\d+", item.strip()):
            item = int(item.strip()[1:])
        if isinstance(item, int):
            if not 0 <= item < len(tokenizer):
                raise ActwhError(f"{arg('target_tokens')}: id {item} is beyond the vocabulary")
            ids.append(item)
            continue
        if not item.strip():
            continue
        encoded = tokenizer(item, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ActwhError(
                f"{arg('target_tokens')}: {item!r} is {len(encoded)} tokens {encoded}; give "
                "strings that are one token each (mind the leading space), or #id"
            )
        ids.append(encoded[0])
    return list(dict.fromkeys(ids))


def tracked_spec(spec: str | Iterable[tuple[int, int]] | None) -> str:
    """``track_neurons`` as one string: ``"19:770,12:771"`` or ``"DIRECTION:K"``."""
    if spec is None or isinstance(spec, str):
        return (spec or "").strip()
    return ",".join(f"{int(layer)}:{int(neuron)}" for layer, neuron in spec)


def parse_tracked(
    spec: str | Iterable[tuple[int, int]], loaded, directions: dict[str, np.ndarray]
) -> dict[int, list[int]]:
    """``track_neurons``: ``[(19, 770), (12, 771)]`` or ``"19:770,12:771"``, or
    ``"DIRECTION:K"`` for the K neurons that can write most along a direction of the model: the
    value vectors most cosine-similar to it (the paper's MLP.v_Toxic for ``toxic_probe:64``), or
    for a gated MLP, whose neurons write ±v, those with the largest |cosine|."""
    spec = tracked_spec(spec)
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
                    f"{arg('track_neurons')} {pair}: out of range ({adapter.n_layers} layers, "
                    f"{adapter.d_mlp} neurons each)"
                )
            tracked.setdefault(layer, []).append(neuron)
        return {layer: sorted(set(n)) for layer, n in sorted(tracked.items())}
    match = re.fullmatch(r"(.+):(\d+)", spec)
    if not match:
        raise ActwhError(
            f"{arg('track_neurons')} {spec!r}: expected LAYER:NEURON pairs (19:770,12:771) "
            "or DIRECTION:K"
        )
    name, k = match.group(1), int(match.group(2))
    if name not in directions:
        from actwh.warehouse.registry import unknown_direction

        raise unknown_direction(name, loaded.name, directions)
    from actwh.ingest.value_vectors import top_value_vectors

    tracked = {}
    for _, layer, neuron in top_value_vectors(adapter, directions[name], k):
        tracked.setdefault(layer, []).append(neuron)
    return {layer: sorted(n) for layer, n in sorted(tracked.items())}
