"""Options of an ingestion run, and their parsing: each option takes Python values (a list of
sites, a range of layers) or the CLI's strings (``"resid_mid,mlp_post"``, ``"10-20"``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from actwh.arguments import (
    Options,
    device_option,
    items,
    layer_spans,
    option,
    progress_option,
    resume_keys,
)
from actwh.errors import BadInput, arg
from actwh.ingest.kinds.options import LensOptions, NeuronOptions, ProjectionOptions, VectorOptions
from actwh.models.sites import RESIDUAL_SITES, SITES

if TYPE_CHECKING:
    from actwh.models.adapters import Adapter


@dataclass
class RunOptions(Options):
    """What shapes a run beyond what it captures: the model, the prompts, generation, batching,
    commits. Each capture kind's own options are in :mod:`actwh.ingest.kinds.options`."""

    name: str | None = option(
        None, "Run name (default MODEL.PROMPTSET). An unfinished run of that name is resumed."
    )
    model_name: str | None = option(
        None, "Name to register the model under (default from the source)."
    )
    prompt_set: str | None = option(
        None, "Name to register the prompt set under (default: the file's stem)."
    )
    generate: int = option(
        20,
        "Greedy tokens to generate per prompt (0: prompt only).",
        resume=True,
        at_least=0,
    )
    layers: str | int | Iterable[int] | None = option(
        "all", "all, 19 or 10-20 (0-based).", resume=True
    )
    batch_size: int = option(8, "Prompts per forward pass.", resume=True, at_least=1)
    device: str = device_option()
    dtype: Literal["float32", "bfloat16", "float16"] = option(
        "float32", "dtype the model runs in.", resume=True
    )
    max_prompt_tokens: int | None = option(
        None,
        "Keep the first N tokens of longer prompts (default: what the context allows).",
        resume=True,
        at_least=1,
    )
    teacher_force: str | None = option(
        None,
        "Replay the exact token sequences of an earlier run (pairs a tuned model with its base).",
        resume=True,
        metavar="RUN",
    )
    prompt_logprobs: bool = option(
        False,
        "Also store log-probabilities of prompt tokens (generated ones always have them; ~7%).",
        resume=True,
    )
    on_long: Literal["truncate", "refuse"] = option(
        "truncate",
        "A prompt longer than fits: keep its first tokens (recorded as a warning), or stop.",
    )
    resume: bool = option(False, "Insist on resuming an unfinished run (--name).")
    commit_mb: int = option(
        128,
        "Commit when this much is buffered (0: after every batch). Bounds memory and lost work.",
        at_least=0,
    )
    commit_seconds: float = option(
        120.0, "... or this long after the last commit.", cli=False, at_least=0
    )
    progress: bool = progress_option()


@dataclass
class IngestOptions(LensOptions, NeuronOptions, ProjectionOptions, VectorOptions, RunOptions):
    """Everything that shapes a run — the run's options and every capture kind's — as the one
    declaration of ``actwh ingest``'s flags, of ``Warehouse.ingest``'s keywords, of what a
    resumed run must match (``option(..., resume=True)``) and of the run's stored ``config``
    (:meth:`record`)."""

    def __post_init__(self) -> None:
        """Refuse at once what needs no model to refuse — a mistyped site, a malformed layer
        list or neuron spec — rather than after the model has loaded."""
        super().__post_init__()
        layer_spans(self.layers)
        site_names(self.capture, "capture")
        if self.project is not None:
            site_names(self.project, "project", RESIDUAL_SITES)
        tracked_parts(self.track_neurons)


# The version of a run's stored config (:class:`RunConfig`); warehouses made before it had none.
CONFIG_FORMAT = 1


@dataclass
class RunConfig:
    """A run's stored ``config`` (the catalog's ``runs.config``): its options as given, and what
    they resolved to against its model — the layers, sites, directions, neurons and token ids it
    captured. Readers take it through :meth:`of`, never by string key: a key this version does
    not know is ignored and a missing one takes its default, so the configs of earlier versions
    (without ``format``) read the same. ``layers`` is ``None`` for a run without per-layer rows
    (an evaluation's generations)."""

    options: IngestOptions
    layers: list[int] | None = None
    capture: list[str] = field(default_factory=list)
    project: list[str] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)
    track_neurons: dict[int, list[int]] = field(default_factory=dict)
    target_tokens: list[int] = field(default_factory=list)

    def record(self) -> dict:
        """The JSON object stored: the options' fields, the resolved ones in their place, the
        tracked neurons' spec as given and the format."""
        return {
            "format": CONFIG_FORMAT,
            **self.options.record(),
            "layers": self.layers,
            "capture": self.capture,
            "project": self.project,
            "directions": self.directions,
            "track_neurons": {str(layer): n for layer, n in self.track_neurons.items()},
            "track_neurons_spec": tracked_spec(self.options.track_neurons),
            "target_tokens": self.target_tokens,
        }

    @classmethod
    def of(cls, stored: str | dict | None) -> RunConfig:
        """Read back a stored config (the JSON text, or its object)."""
        record = json.loads(stored) if isinstance(stored, str) else dict(stored or {})
        given = {f.name for f in fields(IngestOptions)} - {"track_neurons"}  # stored resolved
        options = IngestOptions(
            **{k: v for k, v in record.items() if k in given},
            track_neurons=record.get("track_neurons_spec") or "",
        )
        tracked = record.get("track_neurons") or {}
        return cls(
            options,
            layers=record.get("layers") if isinstance(record.get("layers"), list) else None,
            capture=list(record.get("capture") or []),
            project=list(record.get("project") or []),
            directions=list(record.get("directions") or []),
            track_neurons={int(layer): list(n) for layer, n in tracked.items()},
            target_tokens=list(record.get("target_tokens") or []),
        )


@dataclass
class LaunchOptions(Options):
    """Where ``actwh ingest`` runs: this process, one shard of several, or a Ray cluster."""

    shard: str | tuple[int, int] | None = option(
        None, "i/N: this worker takes every N-th batch (run N workers at once)."
    )
    ray: bool = option(False, "Launch one worker per GPU of a Ray cluster.")
    workers: int | None = option(
        None, "--ray: this many workers (CPU workers if no GPU).", at_least=1
    )
    ray_address: str | None = option(
        None, "--ray: the cluster's address (default: start a local Ray)."
    )


@dataclass
class IndexOptions(Options):
    """How ``actwh index-vectors`` stores and indexes a model's value vectors."""

    index: Literal["flat", "ivf", "hnsw"] = option(
        "flat", "flat is exact; ivf and hnsw are approximate, for millions of vectors."
    )
    unembed: Literal["raw", "final_norm"] | None = option(
        None,
        "Read top tokens from W_U·v (raw, the paper's Table 1) or through the final norm's "
        "gain, W_U·(γ⊙v). Default: raw for GPT-2, final_norm for gated (RMSNorm) models.",
    )
    replace: bool = option(False, "Rebuild even if this model's vectors are stored.")
    device: str = device_option()
    progress: bool = progress_option()


@dataclass
class DiffOptions(Options):
    device: str = device_option()


@dataclass
class TransformOptions(Options):
    """Which encodings ``actwh prompts transform`` adds."""

    rot13: bool = option(False, "ROT13 of each prompt.")
    base64: bool = option(False, "Base64 of each prompt.")
    leet: bool = option(False, "Leetspeak of each prompt.")
    force: bool = option(False, "Replace OUT if it exists.")


# What must be equal for a resumed run to continue exactly where the first one stopped: the
# options marked resume=True, and the directions it projects on.
RESUME_KEYS = (*resume_keys(IngestOptions), "directions")


def site_names(spec: str | Iterable[str], option: str = "capture", allowed=SITES) -> list[str]:
    """The sites ``spec`` names, each one of ``allowed`` (checked without the model)."""
    sites = items(spec)
    for site in sites:
        if site not in allowed:
            raise BadInput(f"{arg(option)}: unknown site {site!r}; valid: {', '.join(allowed)}")
    return list(dict.fromkeys(sites))


def parse_sites(
    spec: str | Iterable[str], adapter: Adapter, option: str = "capture", allowed=SITES
) -> list[str]:
    sites = site_names(spec, option, allowed)
    for site in sites:
        if site not in adapter.sites:
            raise BadInput(f"{arg(option)} {site}: {adapter.missing_site(site)}")
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
        raise BadInput(f"{arg('shard')} {spec!r}: expected i/N, e.g. 0/2") from None
    if not (count >= 1 and 0 <= index < count):
        raise BadInput(f"{arg('shard')} {spec}: need 0 <= i < N")
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
                raise BadInput(f"{arg('target_tokens')}: id {item} is beyond the vocabulary")
            ids.append(item)
            continue
        if not item.strip():
            continue
        encoded = tokenizer(item, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise BadInput(
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


def tracked_parts(
    spec: str | Iterable[tuple[int, int]] | None,
) -> tuple[list[tuple[int, int]] | None, tuple[str, int] | None]:
    """``track_neurons`` read without the model: its ``(layer, neuron)`` pairs, or the
    ``(direction, K)`` it names (both None when empty); bad syntax is refused here."""
    spec = tracked_spec(spec)
    if not spec:
        return None, None
    parts = [p.strip() for p in spec.split(",")]
    if all(re.fullmatch(r"\d+:\d+", p) for p in parts):
        return [(int(p.split(":")[0]), int(p.split(":")[1])) for p in parts], None
    match = re.fullmatch(r"(.+):(\d+)", spec)
    if not match or "," in spec:
        raise BadInput(
            f"{arg('track_neurons')} {spec!r}: expected LAYER:NEURON pairs (19:770,12:771) "
            "or DIRECTION:K"
        )
    if int(match.group(2)) < 1:
        raise BadInput(f"{arg('track_neurons')} {spec}: K must be >= 1")
    return None, (match.group(1), int(match.group(2)))


def parse_tracked(
    spec: str | Iterable[tuple[int, int]], loaded, directions: dict[str, np.ndarray]
) -> dict[int, list[int]]:
    """``track_neurons``: ``[(19, 770), (12, 771)]`` or ``"19:770,12:771"``, or
    ``"DIRECTION:K"`` for the K neurons that can write most along a direction of the model: the
    value vectors most cosine-similar to it (the paper's MLP.v_Toxic for ``toxic_probe:64``), or
    for a gated MLP, whose neurons write ±v, those with the largest |cosine|."""
    pairs, by_direction = tracked_parts(spec)
    if pairs is None and by_direction is None:
        return {}
    adapter = loaded.adapter
    if pairs is not None:
        tracked: dict[int, list[int]] = {}
        for layer, neuron in pairs:
            if not (layer < adapter.n_layers and neuron < adapter.d_mlp):
                raise BadInput(
                    f"{arg('track_neurons')} {layer}:{neuron}: out of range ({adapter.n_layers} "
                    f"layers, {adapter.d_mlp} neurons each)"
                )
            tracked.setdefault(layer, []).append(neuron)
        return {layer: sorted(set(n)) for layer, n in sorted(tracked.items())}
    name, k = cast(tuple[str, int], by_direction)
    if name not in directions:
        from actwh.warehouse.registry import unknown_direction

        raise unknown_direction(name, loaded.name, directions)
    from actwh.models.value_vectors import top_value_vectors

    tracked = {}
    for _, layer, neuron in top_value_vectors(adapter, directions[name], k):
        tracked.setdefault(layer, []).append(neuron)
    return {layer: sorted(n) for layer, n in sorted(tracked.items())}
