"""The batch runner: one batch of a run through the model and the capture hooks, into rows the
commit writer buffers; committing whenever enough is buffered or enough time has passed.

Memory is bounded by one batch plus the commit buffer (``commit_mb``), never by the number of
prompts. A repair's gaps are redone commit by commit, with the whole batches of their commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import torch

from actwh.errors import Notice
from actwh.ingest.capture import Capture
from actwh.ingest.generate import Batch, Ran, greedy, teacher_forced
from actwh.ingest.kinds.base import RanBatch, Rows
from actwh.ingest.options import IngestOptions
from actwh.ingest.rows import NO_TURN, Flat, TokenText, tokens_table
from actwh.ingest.sequences import Sequence
from actwh.models.loading import LoadedModel
from actwh.warehouse.faults import crash_point
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter


@dataclass
class RunSummary:
    run: str
    model: str
    prompt_set: str
    n_prompts: int = 0
    n_tokens: int = 0
    n_redone: int = 0  # prompts run again to fill what a repair dropped
    seconds: float = 0.0
    resumed: bool = False
    warnings: list[str] = field(default_factory=list)  # about the data; kept in runs.warnings
    notices: list[Notice] = field(default_factory=list)  # about this invocation only
    workers: int = 1  # --ray: the workers, and the cluster nodes they ran on
    nodes: int = 1

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds else 0.0

    @property
    def speed(self) -> str:
        """Tokens a second with the digits that make it non-zero: 1,234 tok/s, 0.042 tok/s."""
        per_second = self.tokens_per_second
        if per_second >= 100 or per_second == 0:
            return f"{per_second:,.0f} tok/s"
        return f"{per_second:.3g} tok/s"


def run_batches(job: BatchRunner, todo: list, summary: RunSummary, bar) -> None:
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
        bar.set_postfix_str(f"{summary.n_tokens / max(elapsed, 1e-9):,.1f} tok/s", refresh=False)
        due = time.monotonic() - last_commit > options.commit_seconds
        if writer.buffered_bytes >= options.commit_mb << 20 or due:
            job.commit(prompts=pending, n_tokens=pending_tokens)
            pending, pending_tokens, last_commit = [], 0, time.monotonic()
    job.commit(prompts=pending, n_tokens=pending_tokens)


def gap_batches(
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
    for source in store.catalog.rows("commit_sources"):  # a compaction: its merged commits'
        merged = prompts_of.get(source["source_commit"], set())
        prompts_of.setdefault(source["commit_id"], set()).update(merged)
    return [
        ([b for b in batches if b[0].prompt in prompts_of.get(commit_id, set())], commit_gaps)
        for commit_id, commit_gaps in sorted(gaps.items())
    ]


def redo_gaps(job: BatchRunner, batches: list, gaps: list[dict], summary: RunSummary) -> None:
    """Run again the batches of one commit a repair left gaps in, keep only the gaps' tables
    and partitions, and commit them in one commit that fills exactly those gaps."""
    writer = job.writer
    writer.only = {str(Path(g["path"]).parent) for g in gaps}
    scratch = RunSummary(job.run, job.loaded.name, "")  # the redone prompts are not new ones
    try:
        n_tokens = sum(job.run_batch(batch, scratch) for batch in batches)
        redid_tokens = any(g["table_name"] == "tokens" for g in gaps)
        job.commit(n_tokens=n_tokens if redid_tokens else 0, filled=[g["path"] for g in gaps])
        summary.n_redone += sum(len(batch) for batch in batches)
    finally:
        writer.only = None


def eos_ids(loaded: LoadedModel) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    ids = {i for i in (eos if isinstance(eos, list) else [eos]) if i is not None}
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return ids


@dataclass
class BatchRunner:
    """What every batch of one run needs."""

    loaded: LoadedModel
    options: IngestOptions
    capture: Capture
    text: TokenText
    writer: CommitWriter
    run: str
    generate: int

    def commit(self, **commit) -> None:
        """Commit what is buffered, with what the kinds accumulated over its batches."""
        for kind in self.capture.kinds:
            for rows in kind.before_commit():
                self.writer.add(rows.table, {"run": self.run, "layer": rows.layer}, rows.rows)
        self.writer.commit(**commit)

    def buffer_kinds(self, batch: RanBatch, summary: RunSummary) -> None:
        """Buffer the rows every capture kind makes of one batch."""
        for kind in self.capture.kinds:
            for rows in kind.rows(batch):
                self._add(rows, summary)

    def run_batch(self, batch: list[Sequence], summary: RunSummary) -> int:
        """Run one batch and buffer its rows; returns the number of tokens it stored."""
        loaded, options, run = self.loaded, self.options, self.run
        pad = loaded.tokenizer.pad_token_id
        padded = Batch.left_padded([s.ids for s in batch], pad, loaded.device)
        width = padded.ids.shape[1]
        replay = batch[0].n_prompt is not None
        # The logit lens (lens_at="last") reads the last prompt token of every row.
        columns = [width - len(s.ids) + s.prompt_length - 1 for s in batch]
        last = torch.tensor(columns, device=loaded.device)
        self.capture.start_batch(last)
        if replay:
            ran = teacher_forced(loaded.model, padded)
            n_prompt = torch.tensor([[s.prompt_length] for s in batch], device=loaded.device)
            ran.generated = ran.valid & (ran.pos >= n_prompt)
            ran.n_generated = [len(s.ids) - s.prompt_length for s in batch]
        else:
            ran = greedy(
                loaded.model,
                padded,
                self.generate,
                eos_ids(loaded),
                pad,
                prompt_logprobs=options.prompt_logprobs,
            )
        prompts = [s.prompt for s in batch]
        flat = Flat.of(ran, prompts)
        partition = {"run": run}
        turns = _turns(batch, ran, width)
        self.writer.add("tokens", partition, tokens_table(flat, ran, self.text, turns))
        self.writer.add("generations", partition, self._generations(batch, ran, width, replay))
        self.buffer_kinds(RanBatch(ran, flat, prompts, last, self.text), summary)
        return len(flat)

    def _add(self, rows: Rows, summary: RunSummary) -> None:
        size, used = rows.vector_size, rows.dtype
        where = {"run": self.run, "layer": rows.layer}
        self.writer.add(rows.table, where, rows.rows, vector_size=size, dtype=used or "float32")
        if used is not None and used != self.options.store_dtype:
            note = f"{rows.table} layer {rows.layer}: values beyond float16 range stored as float32"
            if note not in summary.warnings:
                summary.warnings.append(note)

    def _generations(self, batch: list[Sequence], ran: Ran, width: int, replay: bool) -> pa.Table:
        tokenizer = self.loaded.tokenizer
        n_prompt = [s.prompt_length for s in batch]
        continuation: list[str | None]
        if replay:
            continuation = [s.continuation for s in batch]
            stop = ["teacher_forced"] * len(batch)
        else:
            generated = [
                ran.ids[r, width:][: ran.n_generated[r]].tolist() for r in range(len(batch))
            ]
            continuation = list(tokenizer.batch_decode(generated, skip_special_tokens=True))
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
    """Turn index of every position (padded layout, :data:`NO_TURN` where there is none), or
    None without chats."""
    if all(s.turns is None for s in batch):
        return None
    turns = torch.full(ran.ids.shape, NO_TURN, dtype=torch.long)
    for row, s in enumerate(batch):
        if s.turns is None:
            continue
        start = prompt_width - len(s.ids)
        turns[row, start:prompt_width] = torch.tensor(s.turns)
        turns[row, prompt_width:] = s.reply_turn if s.reply_turn is not None else s.turns[-1]
    return turns.to(ran.ids.device)
