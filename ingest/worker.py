"""The ingestion worker: one model over one prompt set, into a warehouse, batch by batch.

Order of work, so that bad input never changes the warehouse: read and validate the prompts (or
the run to replay), load the model, check layers, sites, directions, tracked neurons and target
tokens against it, and only then create or open the warehouse for writing.

Two modes:

* ``generate`` — greedy continuation of every prompt;
* ``teacher_forced`` (``--teacher-force RUN``) — the exact token sequences of an earlier run
  (prompt and continuation), so that this run's rows align with that one's on (prompt, pos).

Batches are fixed before the first one runs: prompts are sorted by token length (less padding)
and cut into batches of ``batch_size``. Commits always hold whole batches, so a resumed run
re-runs exactly the batches it had not committed, with the same shapes and the same results, and
``--shard i/N`` workers take every N-th batch. Memory is bounded by one batch plus the commit
buffer (``commit_mb``), never by the number of prompts.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
import torch
from tqdm.auto import tqdm

from actwh.errors import ActwhError, from_os_error
from actwh.ingest.capture import Capture, Directions, Lens
from actwh.ingest.generate import Batch, Ran, greedy, teacher_forced
from actwh.ingest.models import LoadedModel
from actwh.ingest.options import (
    RESUME_KEYS,
    IngestOptions,
    parse_layers,
    parse_project,
    parse_shard,
    parse_sites,
    parse_targets,
    parse_tracked,
)
from actwh.ingest.prompts import Prompt, PromptSet, read_prompts
from actwh.ingest.registry import check_same_shape, open_model, register_model
from actwh.ingest.rows import (
    Flat,
    TokenText,
    coefficient_sums,
    lens_tables,
    neuron_stats_table,
    neuron_tables,
    projection_tables,
    tokens_table,
    vector_tables,
)
from actwh.warehouse import layout
from actwh.warehouse.catalog import now, to_json
from actwh.warehouse.directions import directions_for
from actwh.warehouse.faults import crash_point
from actwh.warehouse.layout import check_name
from actwh.warehouse.reader import Snapshot
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter


@dataclass
class Sequence:
    """One prompt, tokenized: what the model is given."""

    prompt: int
    ids: list[int]
    text: str  # the prompt as the model saw it
    truncated: bool = False
    n_prompt: int | None = None  # teacher forced: how many of ``ids`` are the prompt
    turns: list[int] | None = None  # chat prompts: message index of every token
    reply_turn: int | None = None  # chat prompts: turn index of what the model generates
    continuation: str | None = None  # teacher forced: the replayed continuation


@dataclass
class RunSummary:
    run: str
    model: str
    prompt_set: str
    n_prompts: int = 0
    n_tokens: int = 0
    seconds: float = 0.0
    resumed: bool = False
    warnings: list[str] = field(default_factory=list)  # about the data; kept in runs.warnings
    notices: list[str] = field(default_factory=list)  # about this invocation only

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds else 0.0


def encode_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Render a chat with the model's template; return token ids and each token's turn index.

    A token belongs to the message whose rendering contains it; the generation prompt (and what
    the model generates) is turn ``len(messages)``.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ActwhError("this model's tokenizer has no chat template; chat prompts need one")
    render = tokenizer.apply_chat_template
    full = render(messages, add_generation_prompt=True, tokenize=False)
    ends = [len(render(messages[: i + 1], tokenize=False)) for i in range(len(messages))]
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    turns = [sum(start >= end for end in ends) for start, _ in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), turns


def encode_prompts(
    loaded: LoadedModel, prompts: list[Prompt], max_tokens: int, on_long: str = "truncate"
) -> tuple[list[Sequence], list[str]]:
    """Tokenize every prompt; one longer than ``max_tokens`` keeps its first ``max_tokens``
    tokens (``on_long="truncate"``, with a warning) or is refused (``"refuse"``)."""
    tokenizer = loaded.tokenizer
    plain = [i for i, p in enumerate(prompts) if p.messages is None]
    encoded = dict(
        zip(plain, tokenizer([prompts[i].text for i in plain])["input_ids"], strict=True)
    )
    sequences = []
    for index, prompt in enumerate(prompts):
        turns = reply = None
        if prompt.messages is None:
            ids = list(encoded[index])
        else:
            ids, turns = encode_chat(tokenizer, prompt.messages)
            reply = len(prompt.messages)
        truncated = len(ids) > max_tokens
        if truncated and on_long == "refuse":
            raise ActwhError(
                f"prompt {index} is {len(ids)} tokens, more than the {max_tokens} that fit "
                "(context minus --generate, or --max-prompt-tokens); pass --on-long truncate "
                "to keep its first tokens"
            )
        if truncated:
            ids, turns = ids[:max_tokens], (turns[:max_tokens] if turns else None)
        text = tokenizer.decode(ids, skip_special_tokens=True) if truncated else prompt.text
        sequences.append(Sequence(index, ids, text, truncated, turns=turns, reply_turn=reply))
    warnings = []
    n_truncated = sum(s.truncated for s in sequences)
    if n_truncated:
        warnings.append(f"{n_truncated} prompt(s) truncated to their first {max_tokens} tokens")
    return sequences, warnings


def replay_sequences(
    existing: Store | None, run: str, loaded: LoadedModel
) -> tuple[str, list[Sequence]]:
    """The token sequences of an earlier run, for teacher forcing: ``(prompt set, sequences)``."""
    if existing is None:
        raise ActwhError(f"--teacher-force {run}: the warehouse does not exist yet")
    source = existing.catalog.get("runs", name=run)
    if source is None:
        raise ActwhError(f"--teacher-force {run}: no such run")
    if source["status"] != "complete":
        raise ActwhError(f"--teacher-force {run}: that run is not complete")
    source_model = existing.catalog.get("models", name=source["model"])
    if source_model["tokenizer_sha256"] != loaded.tokenizer_sha256:
        raise ActwhError(
            f"--teacher-force {run}: {loaded.name}'s tokenizer differs from the tokenizer of "
            f"{source['model']}, which produced that run's tokens"
        )
    check_same_shape(source_model, loaded.catalog_row(), f"--teacher-force {run}")
    snapshot = Snapshot(existing)
    try:
        rows = snapshot.execute(
            """select t.prompt, list(t.token_id order by t.pos) as ids,
                      list(t.turn order by t.pos) as turns,
                      count(*) filter (where not t.is_generated) as n_prompt,
                      any_value(g.prompt_text) as text, any_value(g.continuation) as continuation
               from tokens t join generations g using (run, prompt)
               where t.run = $run group by t.prompt order by t.prompt""",
            {"run": run},
        ).to_pylist()
    finally:
        snapshot.close()
    sequences = [
        Sequence(
            r["prompt"],
            r["ids"],
            r["text"],
            n_prompt=r["n_prompt"],
            turns=r["turns"] if r["turns"][0] is not None else None,
            continuation=r["continuation"],
        )
        for r in rows
    ]
    return source["prompt_set"], sequences


def _directions(existing: Store | None, loaded: LoadedModel, replayed: str | None) -> dict:
    """Directions to project on: the model's own and its ancestors'; when replaying a run, also
    those of the model that produced it (a tuned model shares its base's residual space)."""
    if existing is None:
        return {}
    found = directions_for(existing, loaded.name)
    source = existing.catalog.get("runs", name=replayed) if replayed else None
    if source is not None:
        for name, vector in directions_for(existing, source["model"]).items():
            if vector.shape[0] == loaded.adapter.d_model:
                found.setdefault(name, vector)
    return found


def _tracked_neurons(existing: Store | None, loaded, options: IngestOptions, directions: dict):
    """Resolve ``--track-neurons``. Replaying a run that tracked neurons with the same spec
    tracks exactly its neurons: the top value vectors of the base model, measured in both."""
    if options.teacher_force and existing is not None and options.track_neurons:
        source = existing.catalog.get("runs", name=options.teacher_force)
        config = json.loads(source["config"]) if source else {}
        if config.get("track_neurons_spec") == options.track_neurons:
            return {int(layer): neurons for layer, neurons in config["track_neurons"].items()}
    return parse_tracked(options.track_neurons, loaded, directions)


def plan_batches(sequences: list[Sequence], batch_size: int) -> list[list[Sequence]]:
    ordered = sorted(sequences, key=lambda s: (len(s.ids), s.prompt))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


def check_committed_batches(run: str, batches: list[list[Sequence]], done: set[int]) -> None:
    """A resume skips whole batches: every committed prompt must be one of this command's, and
    every batch committed entirely or not at all, or the run would mix two different plans."""
    planned = {s.prompt for batch in batches for s in batch}
    for batch in batches:
        committed = [s.prompt in done for s in batch]
        if any(committed) and not all(committed):
            raise ActwhError(
                f"run {run!r}: prompts {sorted(s.prompt for s in batch)} form one batch here, "
                f"but only {sorted(s.prompt for s in batch if s.prompt in done)} of them were "
                "committed; resume with the same --prompts, --batch-size and "
                "--max-prompt-tokens, or choose another --name"
            )
    if done - planned:
        raise ActwhError(
            f"run {run!r} has committed prompts {sorted(done - planned)[:5]} that this command "
            "does not plan; resume with the same --prompts or choose another --name"
        )


def _existing_store(path: str) -> Store | None:
    """The warehouse at ``path`` if there is one; validates without creating anything."""
    if (Path(path) / layout.MARKER).is_file():
        return Store.open(path)
    return None


def _register_prompt_set(conn, catalog, prompt_set: PromptSet) -> bool:
    """Record the prompt set and its prompts (True if new); a name means one content."""
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
        return True
    if existing["sha256"] != prompt_set.sha256:
        raise ActwhError(
            f"a different prompt set is already registered as {prompt_set.name!r} "
            f"(from {existing['source']}); pass --prompt-set to name this one"
        )
    return False


@dataclass
class Registered:
    """What registering a run did: resumed an unfinished one, or added these catalog rows."""

    resumed: bool
    new_model: bool = False
    new_prompt_set: bool = False


def _register_run(
    store: Store, loaded, prompt_set, run: str, n_prompts: int, config: dict
) -> Registered:
    """Record model, prompt set and run (resuming an unfinished run of the same name).

    A refusal raises inside the transaction, so it registers nothing either."""
    catalog = store.catalog
    set_name = prompt_set if isinstance(prompt_set, str) else prompt_set.name
    with catalog.begin() as conn:
        new_model = register_model(conn, catalog, loaded)
        new_set = isinstance(prompt_set, PromptSet) and _register_prompt_set(
            conn, catalog, prompt_set
        )
        previous = catalog.get("runs", conn, name=run)
        if previous is not None:
            _check_resumable(previous, loaded.name, set_name, config)
            return Registered(True)
        catalog.insert(
            conn,
            "runs",
            {
                "name": run,
                "model": loaded.name,
                "prompt_set": set_name,
                "mode": "teacher_forced" if config["teacher_force"] else "generate",
                "source_run": config["teacher_force"],
                "config": to_json(config),
                "status": "running",
                "n_prompts": n_prompts,
                "n_tokens": 0,
                "created_at": now(),
            },
        )
        return Registered(False, new_model, new_set)


def _check_resumable(previous: dict, model: str, prompt_set: str, config: dict) -> None:
    """An existing run may be resumed only by the same work: model, prompt set and options."""
    run = previous["name"]
    if previous["status"] == "complete":
        raise ActwhError(f"run {run!r} already exists and is complete; choose another --name")
    if previous["status"] == "stale":
        raise ActwhError(
            f"run {run!r} is stale: the run it replayed was repaired after it was made; "
            "ingest it again under another --name"
        )
    if previous["prompt_set"] != prompt_set:
        raise ActwhError(
            f"run {run!r} exists (unfinished) over prompt set {previous['prompt_set']!r}, not "
            f"{prompt_set!r}; resume it with the same prompts or choose another --name"
        )
    old = json.loads(previous["config"])
    if previous["model"] != model or any(old.get(k) != config.get(k) for k in RESUME_KEYS):
        raise ActwhError(
            f"run {run!r} exists (unfinished) with another model or other capture options; "
            "resume it with the same options or choose another --name"
        )


def _forget(store: Store, run: str, registered: Registered, model: str, prompt_set: str) -> None:
    """Undo a new run that failed before committing anything (a new warehouse goes entirely)."""
    catalog = store.catalog
    with catalog.begin() as conn:
        catalog.delete(conn, "runs", name=run)
        if registered.new_prompt_set:
            catalog.delete(conn, "prompts", prompt_set=prompt_set)
            catalog.delete(conn, "prompt_sets", name=prompt_set)
        if registered.new_model:
            catalog.delete(conn, "models", name=model)


def ingest(
    warehouse: str,
    model: str | LoadedModel,
    prompts: str | PromptSet | None,
    options: IngestOptions | None = None,
    *,
    shard: str | None = None,
) -> RunSummary:
    """Run ``model`` over ``prompts`` (or replay a run) and store what it does in ``warehouse``.

    ``model`` is a source (``embedded``, a hub id, a directory, a ``.gguf`` file) or an already
    loaded model; ``prompts`` a file path or a :class:`PromptSet` (``None`` when replaying).
    """
    options = options or IngestOptions()
    if options.teacher_force and prompts is not None:
        raise ActwhError("--teacher-force replays another run's prompts; do not pass --prompts")
    if not options.teacher_force and prompts is None:
        raise ActwhError("--prompts is required (unless --teacher-force RUN)")
    if isinstance(prompts, str | Path):
        prompts = read_prompts(prompts, options.prompt_set)
    store_sites = parse_sites(options.capture)
    project_sites = parse_project(options.project)
    shard_index = parse_shard(shard)
    if options.batch_size < 1 or options.generate < 0 or options.logit_lens < 0:
        raise ActwhError("--batch-size must be >= 1, --generate and --logit-lens >= 0")
    if options.lens_at not in ("last", "all"):
        raise ActwhError(f"--lens-at {options.lens_at!r}: expected last or all")
    existing = _existing_store(warehouse)
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        loaded, _ = open_model(
            existing, model, device=options.device, dtype=options.dtype, name=options.model_name
        )
    layers = parse_layers(options.layers, loaded.adapter.n_layers)
    check_name("model", loaded.name)
    directions = _directions(existing, loaded, options.teacher_force)
    tracked = _tracked_neurons(existing, loaded, options, directions)
    targets = parse_targets(options.target_tokens, loaded.tokenizer)
    if targets and not options.logit_lens:
        raise ActwhError("--target-tokens needs --logit-lens K")

    warnings: list[str] = []
    if options.teacher_force:
        prompt_set, sequences = replay_sequences(existing, options.teacher_force, loaded)
        set_name = prompt_set
        generate = 0
    else:
        prompt_set, set_name = prompts, check_name("prompt set", prompts.name)
        budget = loaded.adapter.context_length - options.generate
        max_tokens = min(options.max_prompt_tokens or budget, budget)
        if max_tokens < 1:
            raise ActwhError(
                f"--generate {options.generate} leaves no room for a prompt in the model's "
                f"context of {loaded.adapter.context_length} tokens"
            )
        sequences, warnings = encode_prompts(loaded, prompts.prompts, max_tokens, options.on_long)
        generate = options.generate
    run = check_name("run", options.name or f"{loaded.name}.{set_name}")
    batches = plan_batches(sequences, options.batch_size)

    config = {
        **options.as_dict(),
        "layers": layers,
        "capture": store_sites,
        "project": project_sites,
        "directions": sorted(directions),
        "track_neurons": {str(k): v for k, v in tracked.items()},
        "track_neurons_spec": options.track_neurons,
        "target_tokens": targets,
    }
    config.pop("progress")
    if options.resume and (existing is None or existing.catalog.get("runs", name=run) is None):
        raise ActwhError(f"--resume: there is no run {run!r} to resume")
    store = Store.create(warehouse, catalog_url=options.catalog)
    try:
        registered = _register_run(store, loaded, prompt_set, run, len(sequences), config)
    except sa.exc.IntegrityError:
        # Another worker (--shard) registered the same model, prompt set or run a moment ago.
        registered = _register_run(store, loaded, prompt_set, run, len(sequences), config)
    resumed = registered.resumed
    writer = CommitWriter(store, run=run, shard=shard_index)
    notices = []
    if resumed:
        writer.remove_orphans()
        if others := writer.others_orphans():
            notices.append(
                f"{len(others)} file(s) of run {run} belong to no commit and were written by "
                f"workers of another --shard layout (e.g. {store.relative(others[0])}); once no "
                "worker of this run is running, actwh check WH --repair deletes them"
            )
    committed = store.catalog.rows("commit_prompts", run=run)
    done = {r["prompt"] for r in committed}
    check_committed_batches(run, batches, done)
    index, count = shard_index
    mine = [b for i, b in enumerate(batches) if i % count == index]
    todo = [b for b in mine if b[0].prompt not in done]
    redo = _gap_batches(store, run, batches, committed) if index == 0 else []

    names = sorted(directions)
    capture = Capture(
        loaded.adapter,
        layers,
        store=store_sites,
        project=project_sites,
        directions=Directions(
            names, torch.tensor(np.stack([directions[n] for n in names]), device=loaded.device)
        )
        if names
        else None,
        neurons=tracked,
        coefficients=layers,
        lens=Lens(options.logit_lens, targets, options.lens_at) if options.logit_lens else None,
    )
    job = _Job(
        loaded, options, capture, TokenText(loaded.tokenizer), writer, run, names, tracked, generate
    )
    # "Resumed" means this worker's own share was partly done, not that another shard got here
    # first.
    continued = resumed and len(todo) < len(mine)
    summary = RunSummary(
        run, loaded.name, set_name, resumed=continued, warnings=warnings, notices=notices
    )
    started = time.monotonic()
    bar = tqdm(
        total=sum(len(b) for b in todo),
        unit="prompt",
        desc=run,
        disable=not options.progress,
        dynamic_ncols=True,
    )
    try:
        with capture, bar:
            for commit_batches, commit_gaps in redo:
                _redo_gaps(job, commit_batches, commit_gaps)
            _run_batches(job, todo, summary, bar)
    except (ActwhError, OSError) as error:  # float16 overflow, a full disk: leave no trace
        alone = shard_index[1] == 1  # another shard may be writing this run right now
        with contextlib.suppress(OSError, sa.exc.DBAPIError):  # the disk may refuse this too
            if alone and not resumed and not store.catalog.rows("commit_prompts", run=run):
                if existing is None:
                    shutil.rmtree(store.root, ignore_errors=True)
                else:
                    _forget(store, run, registered, loaded.name, set_name)
        if isinstance(error, OSError):
            raise from_os_error(error, f"run {run}: ") from error
        raise
    summary.seconds = time.monotonic() - started
    _finish(store, run, summary.warnings)
    return summary


def _run_batches(job: _Job, todo: list, summary: RunSummary, bar) -> None:
    """Run the batches, committing whenever enough is buffered or enough time has passed."""
    writer, options = job.writer, job.options
    started = last_commit = time.monotonic()
    pending: list[int] = []
    pending_tokens = 0
    for batch in todo:
        n = job.run_batch(batch, summary)
        crash_point("batch.done")
        pending += [s.prompt for s in batch]
        pending_tokens += n
        summary.n_prompts += len(batch)
        summary.n_tokens += n
        bar.update(len(batch))
        elapsed = time.monotonic() - started
        bar.set_postfix_str(f"{summary.n_tokens / max(elapsed, 1e-9):,.0f} tok/s", refresh=False)
        due = time.monotonic() - last_commit > options.commit_seconds
        if writer.buffered_bytes >= options.commit_mb << 20 or due:
            job.add_neuron_stats()
            writer.commit(prompts=pending, n_tokens=pending_tokens)
            pending, pending_tokens, last_commit = [], 0, time.monotonic()
    job.add_neuron_stats()
    writer.commit(prompts=pending, n_tokens=pending_tokens)


def _gap_batches(
    store: Store, run: str, batches: list, committed: list[dict]
) -> list[tuple[list, list[dict]]]:
    """Files a repair dropped, commit by commit, with the whole batches of their commit:
    ``[(batches, gaps)]``. One worker redoes them (shard 0), only the gaps' tables and
    partitions."""
    gaps: dict[str, list[dict]] = {}
    for gap in store.catalog.rows("commit_gaps", run=run):
        gaps.setdefault(gap["commit_id"], []).append(gap)
    prompts_of: dict[str, set[int]] = {}
    for row in committed:
        prompts_of.setdefault(row["commit_id"], set()).add(row["prompt"])
    return [
        ([b for b in batches if b[0].prompt in prompts_of.get(commit_id, set())], commit_gaps)
        for commit_id, commit_gaps in sorted(gaps.items())
    ]


def _redo_gaps(job: _Job, batches: list, gaps: list[dict]) -> None:
    """Run again the batches of one commit a repair left gaps in, keep only the gaps' tables
    and partitions, and commit them in one commit that fills exactly those gaps."""
    writer = job.writer
    writer.only = {str(Path(g["path"]).parent) for g in gaps}
    scratch = RunSummary(job.run, job.loaded.name, "")  # the redone prompts are not new ones
    try:
        n_tokens = sum(job.run_batch(batch, scratch) for batch in batches)
        job.add_neuron_stats()
        redid_tokens = any(g["table_name"] == "tokens" for g in gaps)
        writer.commit(n_tokens=n_tokens if redid_tokens else 0, filled=[g["path"] for g in gaps])
    finally:
        writer.only = None


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids = loaded.model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids]) - {None}
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


@dataclass
class _Job:
    """What every batch of one run needs."""

    loaded: LoadedModel
    options: IngestOptions
    capture: Capture
    text: TokenText
    writer: CommitWriter
    run: str
    direction_names: list[str]
    tracked: dict[int, list[int]]
    generate: int
    # Every neuron's coefficient sums since the last commit (see rows.coefficient_sums).
    sums: dict[int, np.ndarray] = field(default_factory=dict)

    def add_neuron_stats(self) -> None:
        """Buffer ``neuron_stats`` rows for the batches of the coming commit."""
        for layer, sums in self.sums.items():
            rows = neuron_stats_table(sums)
            if rows is not None:
                self.writer.add("neuron_stats", {"run": self.run, "layer": layer}, rows)
        self.sums = {}

    def run_batch(self, batch: list[Sequence], summary: RunSummary) -> int:
        """Run one batch and buffer its rows; returns the number of tokens it stored."""
        loaded, options, run = self.loaded, self.options, self.run
        pad = loaded.tokenizer.pad_token_id
        padded = Batch.left_padded([s.ids for s in batch], pad, loaded.device)
        width = padded.ids.shape[1]
        replay = batch[0].n_prompt is not None
        # The logit lens (--lens-at last) reads the last prompt token of every row.
        if replay:
            last = [width - len(s.ids) + s.n_prompt - 1 for s in batch]
        else:
            last = [width - 1] * len(batch)
        self.capture.start_batch(torch.tensor(last, device=loaded.device))
        if replay:
            ran = teacher_forced(loaded.model, padded)
            n_prompt = torch.tensor([[s.n_prompt] for s in batch], device=loaded.device)
            ran.generated = ran.valid & (ran.pos >= n_prompt)
            ran.n_generated = [len(s.ids) - s.n_prompt for s in batch]
        else:
            ran = greedy(
                loaded.model,
                padded,
                self.generate,
                _eos_ids(loaded),
                pad,
                prompt_logprobs=options.prompt_logprobs,
            )
        captured = self.capture.collect()
        prompt_ids = [s.prompt for s in batch]
        flat = Flat.of(ran, prompt_ids)
        partition = {"run": run}
        self.writer.add(
            "tokens", partition, tokens_table(flat, ran, self.text, _turns(batch, ran, width))
        )
        self.writer.add("generations", partition, self._generations(batch, ran, width, replay))
        for table, layer, rows, size, used in vector_tables(
            flat, captured, options.store_dtype, options.overflow
        ):
            self.writer.add(table, {"run": run, "layer": layer}, rows, vector_size=size, dtype=used)
            if used != options.store_dtype:
                note = f"{table} layer {layer}: values beyond float16 range stored as float32"
                if note not in summary.warnings:
                    summary.warnings.append(note)
        for layer, rows in projection_tables(flat, captured, self.direction_names):
            self.writer.add("projections", {"run": run, "layer": layer}, rows)
        for layer, rows in neuron_tables(flat, captured, self.tracked):
            self.writer.add("neuron_acts", {"run": run, "layer": layer}, rows)
        for layer, sums in coefficient_sums(ran, captured).items():
            self.sums[layer] = self.sums[layer] + sums if layer in self.sums else sums
        if captured.lens_ids:
            if options.lens_at == "last":
                rows_ = torch.arange(len(batch))
                lens_flat = Flat.at(ran, prompt_ids, rows_, torch.tensor(last))
                take = lambda t: t  # noqa: E731 - already one row per prompt
            else:
                lens_flat, take = flat, flat.take
            for layer, lens, probs in lens_tables(
                lens_flat, captured, take, self.text, self.capture.lens.targets
            ):
                self.writer.add("logit_lens", {"run": run, "layer": layer}, lens)
                if probs is not None:
                    self.writer.add("token_probs", {"run": run, "layer": layer}, probs)
        return len(flat)

    def _generations(self, batch: list[Sequence], ran: Ran, width: int, replay: bool) -> pa.Table:
        tokenizer = self.loaded.tokenizer
        if replay:
            continuation = [s.continuation for s in batch]
            n_prompt = [s.n_prompt for s in batch]
            stop = ["teacher_forced"] * len(batch)
        else:
            generated = [
                ran.ids[r, width:][: ran.n_generated[r]].tolist() for r in range(len(batch))
            ]
            continuation = tokenizer.batch_decode(generated, skip_special_tokens=True)
            n_prompt = [len(s.ids) for s in batch]
            stop = [
                "none" if self.generate == 0 else ("eos" if e else "length")
                for e in ran.stopped_at_eos
            ]
        return pa.table(
            {
                "prompt": pa.array([s.prompt for s in batch], pa.int32()),
                "prompt_text": [s.text for s in batch],
                "continuation": continuation,
                "n_prompt_tokens": pa.array(n_prompt, pa.int32()),
                "n_generated": pa.array(ran.n_generated, pa.int32()),
                "truncated": [s.truncated for s in batch],
                "stop": stop,
            }
        )


def _turns(batch: list[Sequence], ran: Ran, prompt_width: int) -> torch.Tensor | None:
    """Turn index of every position (padded layout, -1 where unknown), or None without chats."""
    if all(s.turns is None for s in batch):
        return None
    turns = torch.full(ran.ids.shape, -1, dtype=torch.long)
    for row, s in enumerate(batch):
        if s.turns is None:
            continue
        start = prompt_width - len(s.ids)
        turns[row, start:prompt_width] = torch.tensor(s.turns)
        turns[row, prompt_width:] = s.reply_turn if s.reply_turn is not None else s.turns[-1]
    return turns.to(ran.ids.device)


def _finish(store: Store, run: str, warnings: list[str]) -> None:
    catalog = store.catalog
    with catalog.begin() as conn:
        committed = catalog.rows("commit_prompts", conn, run=run)
        row = catalog.get("runs", conn, name=run)
        gaps = catalog.rows("commit_gaps", conn, run=run)
        if len(committed) == row["n_prompts"] and not gaps:
            catalog.update(
                conn,
                "runs",
                {"name": run},
                status="complete",
                finished_at=now(),
                warnings=to_json(warnings) if warnings else None,
            )
