"""The ingestion worker: one model over one prompt set, into a warehouse, batch by batch.

Order of work, so that bad input never changes the warehouse: read and validate the prompts,
load the model, check layers and sites against it, and only then create or open the warehouse.

Batches are fixed before the first one runs: prompts are sorted by token length (less padding)
and cut into batches of ``batch_size``. Commits always hold whole batches, so a resumed run
re-runs exactly the batches it had not committed, with the same shapes and the same results, and
``--shard i/N`` workers take every N-th batch. Memory is bounded by one batch plus the commit
buffer (``commit_mb``), never by the number of prompts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pyarrow as pa
from tqdm.auto import tqdm

from actwh.errors import ActwhError
from actwh.ingest.capture import Capture
from actwh.ingest.generate import Batch, greedy
from actwh.ingest.models import LoadedModel, load_model
from actwh.ingest.options import (
    RESUME_KEYS,
    IngestOptions,
    parse_layers,
    parse_project,
    parse_shard,
    parse_sites,
)
from actwh.ingest.prompts import PromptSet, read_prompts
from actwh.ingest.rows import Flat, TokenText, tokens_table, vector_tables
from actwh.warehouse.catalog import now, to_json
from actwh.warehouse.layout import check_name
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter


@dataclass
class Sequence:
    """One prompt, tokenized: what the model is given."""

    prompt: int
    ids: list[int]
    text: str  # the prompt as the model saw it
    truncated: bool


@dataclass
class RunSummary:
    run: str
    model: str
    prompt_set: str
    n_prompts: int = 0
    n_tokens: int = 0
    seconds: float = 0.0
    resumed: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds else 0.0


def encode_prompts(
    loaded: LoadedModel, prompt_set: PromptSet, max_tokens: int
) -> tuple[list[Sequence], list[str]]:
    """Tokenize every prompt, keeping the first ``max_tokens`` tokens of a longer one."""
    tokenizer = loaded.tokenizer
    sequences, warnings = [], []
    encoded = tokenizer([p.text for p in prompt_set.prompts], add_special_tokens=True)
    for index, (prompt, ids) in enumerate(
        zip(prompt_set.prompts, encoded["input_ids"], strict=True)
    ):
        truncated = len(ids) > max_tokens
        if truncated:
            ids = ids[:max_tokens]
        text = tokenizer.decode(ids, skip_special_tokens=True) if truncated else prompt.text
        sequences.append(Sequence(index, list(ids), text, truncated))
    n_truncated = sum(s.truncated for s in sequences)
    if n_truncated:
        warnings.append(f"{n_truncated} prompt(s) truncated to their first {max_tokens} tokens")
    return sequences, warnings


def plan_batches(sequences: list[Sequence], batch_size: int) -> list[list[Sequence]]:
    ordered = sorted(sequences, key=lambda s: (len(s.ids), s.prompt))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def _register(store: Store, loaded: LoadedModel, prompt_set: PromptSet, run: str, config: dict):
    """Record model, prompt set and run; returns True when an unfinished run is resumed."""
    catalog = store.catalog
    with catalog.begin() as conn:
        model = catalog.get("models", conn, name=loaded.name)
        row = loaded.catalog_row()
        if model is None:
            catalog.insert(conn, "models", {**row, "role": "base", "created_at": now()})
        elif (model["revision"], model["tokenizer_sha256"]) != (
            row["revision"],
            row["tokenizer_sha256"],
        ):
            raise ActwhError(
                f"a different model is already registered as {loaded.name!r} "
                f"(from {model['source']}); pass --model-name to name this one"
            )
        existing = catalog.get("prompt_sets", conn, name=prompt_set.name)
        if existing is None:
            catalog.insert(
                conn,
                "prompt_sets",
                {
                    "name": prompt_set.name,
                    "sha256": prompt_set.sha256,
                    "source": prompt_set.source,
                    "n_prompts": len(prompt_set.prompts),
                    "created_at": now(),
                },
            )
            catalog.insert(
                conn,
                "prompts",
                [
                    {
                        "prompt_set": prompt_set.name,
                        "prompt": i,
                        "text": p.text,
                        "messages": to_json(p.messages) if p.messages else None,
                        "source_prompt": p.source_prompt,
                        "transform": p.transform,
                        "meta": to_json(p.meta) if p.meta else None,
                    }
                    for i, p in enumerate(prompt_set.prompts)
                ],
            )
        elif existing["sha256"] != prompt_set.sha256:
            raise ActwhError(
                f"a different prompt set is already registered as {prompt_set.name!r} "
                f"(from {existing['source']}); pass --prompt-set to name this one"
            )
        previous = catalog.get("runs", conn, name=run)
        if previous is None:
            catalog.insert(
                conn,
                "runs",
                {
                    "name": run,
                    "model": loaded.name,
                    "prompt_set": prompt_set.name,
                    "mode": "generate",
                    "config": to_json(config),
                    "status": "running",
                    "n_prompts": len(prompt_set.prompts),
                    "n_tokens": 0,
                    "created_at": now(),
                },
            )
            return False
    if previous["status"] == "complete":
        raise ActwhError(f"run {run!r} already exists and is complete; choose another --name")
    old = json.loads(previous["config"])
    if (previous["model"], previous["prompt_set"]) != (loaded.name, prompt_set.name) or any(
        old.get(k) != config.get(k) for k in RESUME_KEYS
    ):
        raise ActwhError(
            f"run {run!r} exists (unfinished) with another model, prompt set or capture "
            "options; resume it with the same options or choose another --name"
        )
    return True


def ingest(
    warehouse: str,
    model: str | LoadedModel,
    prompts: str | PromptSet,
    options: IngestOptions | None = None,
    *,
    shard: str | None = None,
) -> RunSummary:
    """Run ``model`` over ``prompts`` and store what it does in ``warehouse``.

    ``model`` is a source (``embedded``, a hub id, a directory, a ``.gguf`` file) or an already
    loaded model; ``prompts`` a file path or a :class:`PromptSet`.
    """
    options = options or IngestOptions()
    prompt_set = (
        prompts if isinstance(prompts, PromptSet) else read_prompts(prompts, options.prompt_set)
    )
    store_sites = parse_sites(options.capture)
    project_sites = parse_project(options.project)
    shard_index = parse_shard(shard)
    if options.batch_size < 1 or options.generate < 0:
        raise ActwhError("--batch-size must be >= 1 and --generate >= 0")
    loaded = (
        model
        if isinstance(model, LoadedModel)
        else load_model(model, device=options.device, dtype=options.dtype, name=options.model_name)
    )
    layers = parse_layers(options.layers, loaded.adapter.n_layers)
    check_name("model", loaded.name)
    check_name("prompt set", prompt_set.name)
    run = check_name("run", options.name or f"{loaded.name}.{prompt_set.name}")
    budget = loaded.adapter.context_length - options.generate
    max_tokens = min(options.max_prompt_tokens or budget, budget)
    if max_tokens < 1:
        raise ActwhError(
            f"--generate {options.generate} leaves no room for a prompt in the model's "
            f"context of {loaded.adapter.context_length} tokens"
        )
    sequences, warnings = encode_prompts(loaded, prompt_set, max_tokens)
    batches = plan_batches(sequences, options.batch_size)

    config = {
        **options.as_dict(),
        "layers": layers,
        "capture": store_sites,
        "project": project_sites,
    }
    config.pop("progress")
    store = Store.create(warehouse)
    resumed = _register(store, loaded, prompt_set, run, config)
    writer = CommitWriter(store, run=run, shard=shard_index)
    if resumed:
        writer.remove_orphans()
    done = {r["prompt"] for r in store.catalog.rows("commit_prompts", run=run)}
    index, count = shard_index
    todo = [b for i, b in enumerate(batches) if i % count == index and b[0].prompt not in done]

    summary = RunSummary(run, loaded.name, prompt_set.name, resumed=resumed, warnings=warnings)
    capture = Capture(loaded.adapter, layers, store=store_sites, project=project_sites)
    text = TokenText(loaded.tokenizer)
    eos = _eos_ids(loaded)
    started = time.monotonic()
    last_commit = started
    pending: list[int] = []
    pending_tokens = 0
    bar = tqdm(
        total=sum(len(b) for b in todo),
        unit="prompt",
        desc=run,
        disable=not options.progress,
        dynamic_ncols=True,
    )
    with capture, bar:
        for batch in todo:
            n = _run_batch(loaded, batch, options, capture, text, eos, writer, run, summary)
            pending += [s.prompt for s in batch]
            pending_tokens += n
            summary.n_prompts += len(batch)
            summary.n_tokens += n
            bar.update(len(batch))
            elapsed = time.monotonic() - started
            bar.set_postfix_str(
                f"{summary.n_tokens / max(elapsed, 1e-9):,.0f} tok/s", refresh=False
            )
            due = time.monotonic() - last_commit > options.commit_seconds
            if writer.buffered_bytes > options.commit_mb << 20 or due:
                writer.commit(prompts=pending, n_tokens=pending_tokens)
                pending, pending_tokens, last_commit = [], 0, time.monotonic()
        writer.commit(prompts=pending, n_tokens=pending_tokens)
    summary.seconds = time.monotonic() - started
    _finish(store, run, summary.warnings)
    return summary


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids = loaded.model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids]) - {None}
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


def _run_batch(
    loaded: LoadedModel,
    batch: list[Sequence],
    options: IngestOptions,
    capture: Capture,
    text: TokenText,
    eos: set[int],
    writer: CommitWriter,
    run: str,
    summary: RunSummary,
) -> int:
    """Run one batch and buffer its rows; returns the number of tokens it stored."""
    pad = loaded.tokenizer.pad_token_id
    padded = Batch.left_padded([s.ids for s in batch], pad, loaded.device)
    capture.start_batch()
    ran = greedy(loaded.model, padded, options.generate, eos, pad)
    captured = capture.collect()
    prompt_ids = [s.prompt for s in batch]
    flat = Flat.of(ran, prompt_ids)
    writer.add("tokens", {"run": run}, tokens_table(flat, ran, text, None))
    n_prompt = padded.mask.sum(-1).tolist()
    generated_ids = [
        ran.ids[r, padded.ids.shape[1] :][: ran.n_generated[r]].tolist() for r in range(len(batch))
    ]
    writer.add(
        "generations",
        {"run": run},
        pa.table(
            {
                "prompt": pa.array(prompt_ids, pa.int32()),
                "prompt_text": [s.text for s in batch],
                "continuation": loaded.tokenizer.batch_decode(
                    generated_ids, skip_special_tokens=True
                ),
                "n_prompt_tokens": pa.array(n_prompt, pa.int32()),
                "n_generated": pa.array(ran.n_generated, pa.int32()),
                "truncated": [s.truncated for s in batch],
                "stop": [
                    "none" if options.generate == 0 else ("eos" if e else "length")
                    for e in ran.stopped_at_eos
                ],
            }
        ),
    )
    for table, layer, rows, size, used in vector_tables(
        flat, captured, options.store_dtype, options.overflow
    ):
        writer.add(table, {"run": run, "layer": layer}, rows, vector_size=size, dtype=used)
        if used != options.store_dtype:
            note = f"{table} layer {layer}: values beyond float16 range stored as float32"
            if note not in summary.warnings:
                summary.warnings.append(note)
    return len(flat)


def _finish(store: Store, run: str, warnings: list[str]) -> None:
    catalog = store.catalog
    with catalog.begin() as conn:
        committed = catalog.rows("commit_prompts", conn, run=run)
        row = catalog.get("runs", conn, name=run)
        if len(committed) == row["n_prompts"]:
            catalog.update(
                conn,
                "runs",
                {"name": run},
                status="complete",
                finished_at=now(),
                warnings=to_json(warnings) if warnings else None,
            )
