"""(f) The writer: vectors to Parquet, through actwh's own commit writer, next to the ceilings.

Four measurements, all in one run on the same machine:

1. **Encodings** of one vector column (``FixedSizeList<float16|float32>``, 20,000 × 1536):
   pyarrow as actwh's first two writers used it, polars with and without compression and
   min/max statistics (actwh's writer: uncompressed, no min/max), and the raw-bytes ceiling (the
   same bytes with ``ndarray.tofile`` + fsync). Wall MB/s, and MB per CPU-second of all
   threads together: the per-core rate.
2. **actwh's writer** (:class:`~actwh.warehouse.writer.CommitWriter`): the same vectors as
   ``residuals`` rows (prompt, pos, site, vec), buffered and committed (files, fsync, catalog).
3. **The capture pipeline's ceiling** for a GPT-2-medium-shaped full capture (24 layers,
   d_model 1024, d_mlp 4096, ``resid_mid`` + ``mlp_post`` at every layer, ~240 KiB a token):
   synthetic activations fed through everything after the model — the capture kinds' hooks and
   rows (with the neuron statistics every run keeps), the writer's buffers and commits.
4. **Reading back**: ``wh.vectors(...)`` of one layer, and a DuckDB scan of every vector.

Run: ``python -m bench.writer``. Targets (issue 13): the writer sustains at least 250 MB/s of
float16 vectors per core; the pipeline ceiling is at least 1,000 tokens/s on two cores.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import suppress
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from actwh.warehouse.writer import NULL_COUNTS_ONLY
from bench.report import record, table

ROWS, DIM = 20_000, 1536
N_LAYERS, D_MODEL, D_MLP = 24, 1024, 4096  # the pipeline's GPT-2-medium shape
BATCH, WIDTH = 8, 128  # its batches: rows × positions


def best_of(repeats: int, run) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of the fastest of ``repeats`` calls of ``run()``."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def speed(dtype: str, how: str, values: np.ndarray, seconds: tuple[float, float]) -> dict:
    wall, cpu = seconds
    return {
        "vectors": dtype,
        "how": how,
        "MB/s": f"{values.nbytes / 1e6 / wall:,.0f}",
        "MB per CPU-second": f"{values.nbytes / 1e6 / cpu:,.0f}",
        "M elements/s": f"{values.size / wall / 1e6:,.0f}",
    }


def encodings(work: Path, dtype: str, repeats: int) -> list[dict]:
    """MB/s of one vector column written in several ways, and the raw ceiling."""
    from actwh.warehouse.arrays import vectors_to_column

    values = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(dtype)
    data = pa.table({"vec": vectors_to_column(values)})
    frame = pl.from_arrow(data)
    path = work / "v.parquet"

    def fsynced(write):
        def run():
            write()
            with open(path, "rb+") as f:
                os.fsync(f.fileno())

        return run

    def pyarrow(**options):
        return fsynced(lambda: pq.write_table(data, path, use_dictionary=False, **options))

    def polars(**options):
        return fsynced(lambda: frame.write_parquet(path, **options))

    def in_memory():  # tried for CommitWriter in issue 30: slower here than polars' own write
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="uncompressed", statistics=NULL_COUNTS_ONLY)
        with open(path, "wb") as f:
            f.write(buffer.getbuffer())

    ways = {
        "pyarrow, zstd, statistics (the first writer)": pyarrow(compression="zstd"),
        "pyarrow, uncompressed, no statistics (the second)": pyarrow(
            compression="none", write_statistics=False
        ),
        "polars, zstd, no min/max": polars(compression="zstd", statistics=NULL_COUNTS_ONLY),
        "polars, uncompressed, min/max": polars(compression="uncompressed", statistics=True),
        "polars, uncompressed, no min/max, to the file (actwh's writer)": polars(
            compression="uncompressed", statistics=NULL_COUNTS_ONLY
        ),
        "the same into memory, then one write": fsynced(in_memory),
        "raw bytes (ndarray.tofile + fsync)": fsynced(lambda: values.tofile(path)),
    }
    rows = []
    for name, run in ways.items():
        rows.append(speed(dtype, name, values, best_of(repeats, run)))
        rows[-1]["size on disk"] = f"{path.stat().st_size / values.nbytes:.2f}×"
    return rows


def through_writer(work: Path, dtype: str, repeats: int) -> dict:
    """MB/s of the same vectors as ``residuals`` rows through CommitWriter (commit included)."""
    from actwh.warehouse.arrays import vectors_to_column
    from actwh.warehouse.store import Store
    from actwh.warehouse.writer import CommitWriter

    values = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(dtype)
    rows = pa.table(
        {
            "prompt": np.arange(ROWS, dtype=np.int32),
            "pos": np.zeros(ROWS, dtype=np.int32),
            "site": pa.array(["resid_mid"] * ROWS),
            "vec": vectors_to_column(values),
        }
    )
    store = Store.create(work / f"wh-{dtype}")
    counter = iter(range(1_000_000))

    def run():
        writer = CommitWriter(store, run=f"r{next(counter)}")
        writer.add("residuals", {"run": writer.run, "layer": 0}, rows, vector_size=DIM, dtype=dtype)
        writer.commit()

    how = "actwh CommitWriter (residuals rows, commit: fsync, sha256, catalog)"
    return {**speed(dtype, how, values, best_of(repeats, run)), "size on disk": ""}


def thread_cpu() -> dict[str, tuple[float, float]]:
    """User and system CPU seconds so far of each thread of this process (Linux), by thread:
    Python threads by name, the others (torch's, polars') by their kernel name."""
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with suppress(OSError):
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = names.get(tid) or f.read().strip()
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = (name, int(fields[11]) / tick, int(fields[12]) / tick)
    return out


ROLES = {  # thread name prefix → what it does in the pipeline
    "MainThread": "the batch thread: the kinds' rows (float16, gathers, statistics)",
    "python": "torch's second thread (the same work, in parallel)",
    "actwh-file": "file threads: polars encoding, sha256 of the written file",
    "actwh-commit": "the commit thread: catalog, fsync of directories",
    "tokio-rt-worker": "polars' I/O threads: writing the files (system time: the page cache)",
    "async-executor": "polars' encoding threads",
    "polars": "polars' encoding threads",
}


def by_role(start: dict, end: dict) -> dict[str, list[float]]:
    """CPU seconds between two :func:`thread_cpu` snapshots, summed by :data:`ROLES`."""
    roles: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for tid, (name, user, system) in end.items():
        _, user0, system0 = start.get(tid, (name, 0.0, 0.0))
        role = next((r for p, r in ROLES.items() if name.startswith(p)), "other threads")
        roles[role][0] += user - user0
        roles[role][1] += system - system0
    return roles


class Sampled:
    """:func:`thread_cpu` every 0.1 s in the background (threads that end are kept)."""

    def __init__(self):
        self.seen: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True, name="sampler")

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            self.seen.update(thread_cpu())

    def __enter__(self) -> Sampled:
        self.start = thread_cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seen.update(thread_cpu())


def pipeline(root: Path, batches: int) -> float:
    """Seconds of everything after the model for a GPT-2-medium-shaped full capture into a new
    warehouse at ``root``: the batch runner's own rows and commits (in the background, as
    ingestion does), fed fixed activations where the hooks would hand it the model's."""
    from actwh.ingest.batches import BatchRunner, RunSummary
    from actwh.ingest.capture import Capture
    from actwh.ingest.generate import Ran
    from actwh.ingest.kinds.base import Capturing, RanBatch
    from actwh.ingest.kinds.registry import kinds_for
    from actwh.ingest.options import IngestOptions, RunConfig
    from actwh.ingest.rows import Flat
    from actwh.warehouse.store import Store
    from actwh.warehouse.writer import CommitWriter

    class Shape:  # what the kinds read of an adapter
        W_U = torch.zeros(1)

    config = RunConfig(IngestOptions(), list(range(N_LAYERS)), capture=["resid_mid", "mlp_post"])
    capture = Capture(Shape(), kinds_for(Capturing(Shape(), config)))
    writer = CommitWriter(Store.create(root), run="p")
    runner = BatchRunner(None, IngestOptions(), capture, None, writer, "p", 0)
    summary = RunSummary("p", "synthetic", "synthetic")
    generator = torch.Generator().manual_seed(0)
    x = {
        "resid_mid": torch.randn(BATCH, WIDTH, D_MODEL, generator=generator),
        "mlp_post": torch.randn(BATCH, WIDTH, D_MLP, generator=generator),
    }
    generated = torch.zeros(BATCH, WIDTH, dtype=torch.bool)
    generated[:, WIDTH // 2 :] = True
    valid = torch.ones(BATCH, WIDTH, dtype=torch.bool)
    ids = torch.zeros(BATCH, WIDTH, dtype=torch.long)
    ran = Ran(ids, valid, generated, None, [WIDTH // 2] * BATCH, [False] * BATCH)
    last = torch.full((BATCH,), WIDTH - 1)
    started = time.perf_counter()
    with writer.in_background():
        for index in range(batches):
            prompts = list(range(index * BATCH, (index + 1) * BATCH))
            capture.start_batch(last)
            for key, readers in capture.readers.items():  # what the hooks hand over
                for kind in readers:
                    kind.on(key, x[key[0]])
            runner.buffer_kinds(RanBatch(ran, Flat.of(ran, prompts), prompts, last, None), summary)
            if writer.buffered_bytes >= IngestOptions().commit_mb << 20 or index == batches - 1:
                runner.commit(prompts=prompts, n_tokens=BATCH * WIDTH)
    return time.perf_counter() - started


def pipeline_ceiling(work: Path, batches: int, repeats: int) -> tuple[dict, list[dict]]:
    """The fastest of ``repeats`` pipeline runs (the last run's warehouse stays, for reading),
    and where the fastest run's CPU time went, by thread."""
    times, accounts = [], []
    for _ in range(repeats):
        shutil.rmtree(work / "pipeline", ignore_errors=True)  # ~5 GB a run
        with Sampled() as sampled:
            times.append(pipeline(work / "pipeline", batches))
        accounts.append(by_role(sampled.start, sampled.seen))
    best = accounts[times.index(min(times))]
    total = sum(u + s for u, s in best.values())
    account = [
        {
            "threads": role,
            "user s": f"{user:.1f}",
            "system s": f"{system:.1f}",
            "share of CPU": f"{(user + system) / total:.0%}",
        }
        for role, (user, system) in sorted(best.items(), key=lambda kv: -sum(kv[1]))
        if user + system >= 0.05
    ]
    tokens, per_token = batches * BATCH * WIDTH, N_LAYERS * (D_MODEL + D_MLP) * 2
    return {
        "shape": f"{N_LAYERS} layers, d_model {D_MODEL}, d_mlp {D_MLP} (float16)",
        "tokens": f"{tokens:,}",
        "tokens/s (best)": f"{tokens / min(times):,.0f}",
        "MB/s of vectors (best)": f"{tokens * per_token / 1e6 / min(times):,.0f}",
        "all runs, tokens/s": ", ".join(f"{tokens / t:,.0f}" for t in times),
        "CPU s (best run)": f"{total:.1f}",
    }, account


def reading(work: Path) -> list[dict]:
    """``wh.vectors`` of one layer and a DuckDB scan of every vector, next to reading the raw
    bytes back (``np.fromfile``)."""
    import actwh

    wh = actwh.open(work / "pipeline")
    n = wh.sql("select count(*) from mlp_acts where layer = 0").item()
    size = n * D_MLP * 2 / 1e6
    one, _ = best_of(3, lambda: wh.vectors("mlp_acts", run="p", layer=0))
    total = wh.sql("select count(*) from mlp_acts").item() * D_MLP * 2 / 1e6
    scan, _ = best_of(3, lambda: wh.sql("select max(vec[1]) from mlp_acts"))
    blob = work / "raw.bin"
    np.zeros(int(size * 1e6) // 2, dtype=np.float16).tofile(blob)
    raw, _ = best_of(3, lambda: np.fromfile(blob, dtype=np.float16))
    wh.close()
    return [
        {
            "what": "raw bytes back (np.fromfile, page cache)",
            "MB": f"{size:,.0f}",
            "MB/s": f"{size / raw:,.0f}",
        },
        {
            "what": "wh.vectors('mlp_acts', layer=0) → numpy float32",
            "MB": f"{size:,.0f}",
            "MB/s": f"{size / one:,.0f}",
        },
        {
            "what": "DuckDB scan of every mlp_acts vector",
            "MB": f"{total:,.0f}",
            "MB/s": f"{total / scan:,.0f}",
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batches", type=int, default=24, help=f"pipeline: batches of {BATCH} × {WIDTH}"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        written = []
        for dtype in ("float16", "float32"):
            written += encodings(work, dtype, args.repeats)
            written.append(through_writer(work, dtype, args.repeats))
        flow, account = pipeline_ceiling(work, args.batches, args.repeats)
        read = reading(work)
    body = (
        f"{ROWS:,} × {DIM} random vectors, best of {args.repeats}; MB per CPU-second counts the "
        "time of every thread (the rate per core).\n\n"
        f"{table(written)}\n\n"
        f"The capture pipeline after the model, {args.batches} batches of {BATCH} × {WIDTH} "
        f"synthetic tokens, best of {args.repeats}:\n\n"
        f"{table([flow])}\n\n"
        "Where the fastest run's CPU time went, by thread (user and system time from "
        "/proc/self/task, sampled every 0.1 s):\n\n"
        f"{table(account)}\n\n"
        f"Reading back what the pipeline wrote:\n\n{table(read)}\n"
    )
    cores = os.cpu_count()
    record(
        "writer-cpu" if cores == 2 else f"writer-{cores}-cores",
        f"(f) The writer and the capture pipeline's ceiling (cpu, {cores} cores)",
        body,
    )


if __name__ == "__main__":
    main()
