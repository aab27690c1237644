"""The ingestion worker: one model over one prompt set, into a warehouse, batch by batch.

Order of work, so that bad input never changes the warehouse: read and validate the prompts (or
the run to replay), load the model, check layers, sites, directions, tracked neurons and target
tokens against it (:func:`plan_run`), and only then create or open the warehouse for writing.

Two modes:

* ``generate`` — greedy continuation of every prompt;
* ``teacher_forced`` (``teacher_force=RUN``) — the exact token sequences of an earlier run
  (prompt and continuation), so that this run's rows align with that one's on (prompt, pos). A
  model first registered by such a run gets the replayed run's model as its parent: the pairing
  says they share one residual space, so it projects on the same directions (the lineage rule).

The parts: :mod:`~actwh.ingest.sequences` (tokenizing, replay, batching),
:mod:`~actwh.ingest.batches` (the batch runner and commits), :mod:`~actwh.warehouse.registry`
(what the catalog records about the run).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from tqdm.auto import tqdm

from actwh.arguments import parse_layers
from actwh.errors import BadInput, NotFound, Notice, arg, from_os_error
from actwh.ingest.batches import BatchRunner, RunSummary, gap_batches, redo_gaps, run_batches
from actwh.ingest.capture import Capture
from actwh.ingest.kinds.base import Capturing
from actwh.ingest.kinds.registry import kinds_for
from actwh.ingest.options import (
    RESUME_KEYS,
    IngestOptions,
    RunConfig,
    parse_project,
    parse_shard,
    parse_sites,
    parse_targets,
    parse_tracked,
    tracked_spec,
)
from actwh.ingest.prompts import PromptSet, arm_of, read_prompts
from actwh.ingest.registry import open_model
from actwh.ingest.rows import TokenText
from actwh.ingest.sequences import (
    Sequence,
    check_committed_batches,
    encode_prompts,
    plan_batches,
    replay_sequences,
)
from actwh.ingest.targets import default_targets
from actwh.models.loading import LoadedModel
from actwh.warehouse.catalog import to_json
from actwh.warehouse.layout import check_name
from actwh.warehouse.lease import Lease
from actwh.warehouse.object_store import location
from actwh.warehouse.registry import (
    check_resumable,
    directions_for,
    fail_run,
    finish_run,
    forget_run,
    register_model,
    register_prompt_set,
    start_run,
)
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter, shard_tag


@dataclass
class RunPlan:
    """A run checked against its model, before anything is written."""

    loaded: LoadedModel
    run: str
    prompt_set: PromptSet | str  # a new prompt set, or the name of the replayed run's
    sequences: list[Sequence]
    config: RunConfig
    directions: dict[str, np.ndarray]
    generate: int
    arms: dict[int, str]  # each prompt's arm (plain, an encoding, chat): neuron_stats per arm
    parent: str | None = None  # the replayed run's model, for a model this run registers
    warnings: list[str] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)  # what was chosen for this invocation

    @property
    def options(self) -> IngestOptions:
        return self.config.options

    @property
    def set_name(self) -> str:
        return self.prompt_set if isinstance(self.prompt_set, str) else self.prompt_set.name


def _tracked_neurons(loaded, spec: str, directions: dict, replayed: dict | None):
    """Resolve ``track_neurons``. Replaying a run (``replayed``: its runs row) that tracked
    neurons with the same spec tracks exactly its neurons: the top value vectors of the base
    model, measured in both."""
    if replayed is not None and spec:
        config = RunConfig.of(replayed["config"])
        if tracked_spec(config.options.track_neurons) == spec:
            return config.track_neurons
    return parse_tracked(spec, loaded, directions)


def _directions(existing: Store | None, model: str, parent: str | None) -> dict:
    """The directions the run projects on: the model's lineage (its parent's, when this run
    registers it as the replayed run's model's child)."""
    if existing is None:
        return {}
    known = existing.catalog.get("models", name=model) is not None
    return directions_for(existing.catalog, model if known or parent is None else parent)


def plan_run(
    existing: Store | None, loaded: LoadedModel, prompts: PromptSet | None, options: IngestOptions
) -> RunPlan:
    """Tokenize (or replay), batch and resolve every option against the model; raise on bad
    input. Writes nothing."""
    layers = parse_layers(options.layers, loaded.adapter.n_layers)
    check_name("model", loaded.name)
    warnings: list[str] = []
    parent = replayed = None
    if options.teacher_force:
        if existing is None:
            raise NotFound(
                f"{arg('teacher_force')} {options.teacher_force}: the warehouse does not exist yet"
            )
        replayed, sequences = replay_sequences(existing, options.teacher_force, loaded)
        prompt_set = set_name = replayed["prompt_set"]
        arms = {
            p["prompt"]: arm_of(p["transform"], p["messages"] is not None)
            for p in existing.catalog.rows("prompts", prompt_set=set_name)
        }
        generate = 0
        parent = None if replayed["model"] == loaded.name else replayed["model"]
    elif prompts is None:  # ingest() refuses this before it loads the model
        raise BadInput(f"{arg('prompts')} is required (unless {arg('teacher_force')} RUN)")
    else:
        prompt_set, set_name = prompts, check_name("prompt set", prompts.name)
        budget = loaded.adapter.context_length - options.generate
        max_tokens = min(options.max_prompt_tokens or budget, budget)
        if max_tokens < 1:
            raise BadInput(
                f"{arg('generate')} {options.generate} leaves no room for a prompt in the "
                f"model's context of {loaded.adapter.context_length} tokens"
            )
        sequences, warnings = encode_prompts(loaded, prompts.prompts, max_tokens, options.on_long)
        arms = {i: p.arm for i, p in enumerate(prompts.prompts)}
        generate = options.generate
    directions = _directions(existing, loaded.name, parent)
    spec = tracked_spec(options.track_neurons)
    tracked = _tracked_neurons(loaded, spec, directions, replayed)
    targets = parse_targets(options.target_tokens, loaded.tokenizer)
    if targets and not options.logit_lens:
        raise BadInput(f"{arg('target_tokens')} needs {arg('logit_lens')} K")
    run = check_name("run", options.name or f"{loaded.name}.{set_name}")
    notices = []
    if options.logit_lens and not targets:  # chosen as the demo chooses them (ingest/targets.py)
        targets, how = default_targets(existing, loaded, run, replayed, directions)
        shown = ", ".join(repr(loaded.tokenizer.decode([i])) for i in targets) or "none"
        notices.append(Notice(f"no {arg('target_tokens')}: the logit lens tracks {shown} ({how})"))
    if options.logit_lens > loaded.adapter.vocab_size:
        raise BadInput(
            f"{arg('logit_lens')} {options.logit_lens}: more than the model's vocabulary of "
            f"{loaded.adapter.vocab_size:,} tokens"
        )
    config = RunConfig(
        options,
        layers=layers,
        capture=parse_sites(options.capture, loaded.adapter),
        project=parse_project(options.project, loaded.adapter),
        directions=sorted(directions),
        track_neurons=tracked,
        target_tokens=targets,
    )
    return RunPlan(
        loaded,
        run,
        prompt_set,
        sequences,
        config,
        directions,
        generate,
        arms,
        parent,
        warnings,
        notices,
    )


@dataclass
class Registered:
    """What registering a run did: resumed an unfinished one, or added these catalog rows."""

    resumed: bool
    new_model: bool = False
    new_prompt_set: bool = False


def register_run(store: Store, plan: RunPlan) -> Registered:
    """Record model, prompt set and run (resuming an unfinished run of the same name).

    A refusal raises inside the transaction, so it registers nothing either."""
    catalog, loaded = store.catalog, plan.loaded
    with catalog.begin() as conn:
        role = "base" if plan.parent is None else "tuned"
        new_model = register_model(
            conn, catalog, loaded.catalog_row(), role=role, parent=plan.parent
        )
        new_set = isinstance(plan.prompt_set, PromptSet) and register_prompt_set(
            conn, catalog, *plan.prompt_set.catalog_rows()
        )
        previous = catalog.get("runs", conn, name=plan.run)
        if previous is not None:
            check_resumable(previous, loaded.name, plan.set_name, plan.config.record(), RESUME_KEYS)
            catalog.update(conn, "runs", {"name": plan.run}, status="running", error=None)
            return Registered(True)
        start_run(
            conn,
            catalog,
            {
                "name": plan.run,
                "model": loaded.name,
                "prompt_set": plan.set_name,
                "mode": "teacher_forced" if plan.options.teacher_force else "generate",
                "source_run": plan.options.teacher_force,
                "config": to_json(plan.config.record()),
                "n_prompts": len(plan.sequences),
            },
        )
        return Registered(False, new_model, new_set)


def _capture(plan: RunPlan) -> Capture:
    """Hooks for every capture kind the run asks for (see :mod:`actwh.ingest.kinds`)."""
    adapter = plan.loaded.adapter
    return Capture(adapter, kinds_for(Capturing(adapter, plan.config, plan.directions, plan.arms)))


def _open_for_writing(
    root: str,
    existing: Store | None,
    plan: RunPlan,
    options: IngestOptions,
    shard: tuple[int, int],
    catalog: str | None,
) -> tuple[Store, Lease, Registered]:
    """Create or open the warehouse, take the lease on this worker's shard of the run (before
    anything of the run changes: another process may be writing it), and register the run."""
    if options.resume and (existing is None or existing.catalog.get("runs", name=plan.run) is None):
        raise NotFound(f"{arg('resume')}: there is no run {plan.run!r} to resume")
    store = existing or Store.create(root, catalog_url=catalog)
    lease = Lease.take(store.catalog, plan.run, shard_tag(shard))
    try:
        try:
            return store, lease, register_run(store, plan)
        except sa.exc.IntegrityError:
            # Another worker (shard) registered the same model, prompt set or run a moment ago.
            return store, lease, register_run(store, plan)
    except BaseException:
        with contextlib.suppress(Exception):
            lease.release()
        raise


def _resume_notices(store: Store, writer: CommitWriter, run: str) -> list[Notice]:
    """Clear this worker's own unfinished files; say what other shard layouts left."""
    writer.remove_orphans()
    others = writer.others_orphans()
    if not others:
        return []
    return [
        Notice(
            f"{len(others)} file(s) of run {run} belong to no commit and were written by workers "
            f"of another {arg('shard')} layout (e.g. {others[0]}); once no worker "
            "of this run is running, actwh check WH --repair deletes them"
        )
    ]


def ingest(
    warehouse: str | Path | Store,
    model: str | LoadedModel,
    prompts: str | Path | PromptSet | None,
    options: IngestOptions | None = None,
    *,
    shard: str | tuple[int, int] | None = None,
    catalog: str | None = None,
) -> RunSummary:
    """Run ``model`` over ``prompts`` (or replay a run) and store what it does in ``warehouse``
    (a path: created when missing, once the input is checked; or an open store).

    ``model`` is a source (``embedded``, a hub id, a directory, a ``.gguf`` file) or an already
    loaded model; ``prompts`` a file path or a :class:`PromptSet` (``None`` when replaying);
    ``catalog``: the catalog URL of a warehouse this creates.
    """
    options = options or IngestOptions()
    if options.teacher_force and prompts is not None:
        raise BadInput(
            f"{arg('teacher_force')} replays another run's prompts; do not pass {arg('prompts')}"
        )
    if not options.teacher_force and prompts is None:
        raise BadInput(f"{arg('prompts')} is required (unless {arg('teacher_force')} RUN)")
    if isinstance(prompts, str | Path):
        prompts = read_prompts(prompts, options.prompt_set)
    shard_index = parse_shard(shard)
    existing: Store | None
    if isinstance(warehouse, Store):
        root, existing = warehouse.location, warehouse
    else:  # a directory, or an object store prefix
        existing = Store.existing(warehouse)
        root = str(location(warehouse))
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        loaded, _ = open_model(
            existing, model, device=options.device, dtype=options.dtype, name=options.model_name
        )
    plan = plan_run(existing, loaded, prompts, options)
    store, lease, registered = _open_for_writing(
        root, existing, plan, options, shard_index, catalog
    )
    try:
        try:
            summary = _run(store, plan, options, shard_index, lease, registered.resumed)
        except BaseException as error:  # an error, a full disk, Ctrl-C: never a stuck run
            alone = shard_index[1] == 1  # another shard may be writing this run right now
            with contextlib.suppress(Exception):  # the disk or the catalog may refuse this too
                _after_failure(store, plan, registered, existing is None, alone, error)
            if isinstance(error, OSError):
                raise from_os_error(error, f"run {plan.run}: ") from error
            raise
        finish_run(store.catalog, plan.run, summary.warnings)
    finally:  # once the run's fate is recorded
        with contextlib.suppress(Exception):  # (gone with a warehouse this run created)
            lease.release()
    return summary


def _after_failure(
    store: Store, plan: RunPlan, registered: Registered, created: bool, alone: bool, error
) -> None:
    """A new run that committed nothing is forgotten (a warehouse it created goes entirely);
    any other is marked failed with the reason, and the same command resumes it."""
    committed = store.catalog.rows("commit_prompts", run=plan.run)
    if alone and not registered.resumed and not committed:
        if created and store.discard():
            return
        forget_run(
            store.catalog,
            plan.run,
            prompt_set=plan.set_name if registered.new_prompt_set else None,
            model=plan.loaded.name if registered.new_model else None,
        )
        return
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    fail_run(store.catalog, plan.run, f"{type(error).__name__}: {reason}")


def _run(
    store: Store,
    plan: RunPlan,
    options: IngestOptions,
    shard: tuple[int, int],
    lease: Lease,
    resumed: bool,
) -> RunSummary:
    """Run this worker's batches not yet committed (and, on shard 0, a repair's gaps)."""
    run, loaded = plan.run, plan.loaded
    writer = CommitWriter(store, run=run, shard=shard, lease=lease)
    notices = plan.notices + (_resume_notices(store, writer, run) if resumed else [])
    batches = plan_batches(plan.sequences, options.batch_size)
    committed = store.catalog.rows("commit_prompts", run=run)
    done = {r["prompt"] for r in committed}
    check_committed_batches(run, batches, done)
    index, count = shard
    mine = [b for i, b in enumerate(batches) if i % count == index]
    todo = [b for b in mine if b[0].prompt not in done]
    redo = gap_batches(store, run, batches, committed) if index == 0 else []
    capture = _capture(plan)
    runner = BatchRunner(
        loaded, options, capture, TokenText(loaded.tokenizer), writer, run, plan.generate
    )
    # "Resumed" means this worker's own share was partly done, not that another shard got here
    # first.
    summary = RunSummary(
        run,
        loaded.name,
        plan.set_name,
        resumed=resumed and len(todo) < len(mine),
        warnings=list(plan.warnings),
        notices=notices,
    )
    started = time.monotonic()
    bar = tqdm(
        total=sum(len(b) for b in todo),
        unit="prompt",
        desc=run,
        disable=not options.progress,
        dynamic_ncols=True,
    )
    # The model runs the next batches while the commit before writes its files.
    with capture, bar, writer.in_background():
        for commit_batches, commit_gaps in redo:
            redo_gaps(runner, commit_batches, commit_gaps, summary)
        run_batches(runner, todo, summary, bar)
    summary.seconds = time.monotonic() - started
    return summary
