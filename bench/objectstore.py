"""(h) A warehouse on an object store: commit throughput, bytes a query fetches, query time.

Against one S3-compatible server (moto's standalone server, the one the tests start) with a
PostgreSQL catalog, all in one run; a TCP proxy in front of the server counts the bytes that
cross it:

1. **Commits of float16 vectors** (``residuals`` rows of a GPT-2-medium-shaped layer, d 1024)
   through actwh's :class:`~actwh.warehouse.writer.CommitWriter` — Parquet encoding, upload under
   the final key, sha256, the catalog transaction — against a raw upload of the same number of
   bytes in as many objects (pyarrow.fs, the same client). Goal (issue 29): ≥ 0.8×.
2. **Bytes fetched** by a query of one run and one layer (``wh.sql`` and ``wh.vectors``) against
   the warehouse's size: the catalog chooses that layer's files, and only they are read.
3. **Query time** of the same query on the bucket and on a local copy of the warehouse.

Run: ``python -m bench.objectstore`` (needs ``pip install -e '.[dev]'`` for moto, and PostgreSQL's
server binaries, Debian's ``postgresql``).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test servers
from servers import S3, Postgres, Proxy  # noqa: E402

from bench.report import record, table  # noqa: E402

D = 1024  # GPT-2 medium's d_model
TOKENS = 4096  # rows per commit: one layer of a batch
LAYERS = 12
RUNS = 2


def rows(seed: int) -> pa.Table:
    from actwh.warehouse.arrays import vectors_to_column

    values = np.random.default_rng(seed).standard_normal((TOKENS, D)).astype(np.float16)
    return pa.table(
        {
            "prompt": np.arange(TOKENS, dtype=np.int32) // 64,
            "pos": np.arange(TOKENS, dtype=np.int32) % 64,
            "site": pa.array(["resid_mid"] * TOKENS),
            "vec": vectors_to_column(values),
        }
    )


def fill(store, runs: int, first: int = 0) -> float:
    """Commit ``runs`` runs of ``LAYERS`` layers, a commit per layer; seconds of the commits."""
    from actwh.warehouse.writer import CommitWriter

    seconds = 0.0
    for r in range(first, first + runs):
        writer = CommitWriter(store, run=f"run{r}")
        for layer in range(LAYERS):
            writer.add(
                "residuals",
                {"run": f"run{r}", "layer": layer},
                rows(layer),
                vector_size=D,
                dtype="float16",
            )
            started = time.perf_counter()
            writer.commit()
            seconds += time.perf_counter() - started
    return seconds


def raw_uploads(remote, n: int, size: int) -> float:
    """Seconds to upload ``n`` objects of ``size`` random bytes, through the same client."""
    blob = np.random.default_rng(1).bytes(size)
    started = time.perf_counter()
    for i in range(n):
        remote.put(f"raw/object-{i}", blob)
    return time.perf_counter() - started


def throughput(store, rounds: int) -> list[tuple[float, float]]:
    """Interleaved rounds of (MB/s of vectors committed, MB/s of a raw upload of as many bytes
    in as many objects), one run of ``LAYERS`` commits each."""
    found = []
    for r in range(rounds):
        before = {path for path, _, _ in store.remote.listing("data")}
        seconds = fill(store, 1, first=RUNS + r)
        added = [(p, n) for p, _, n in store.remote.listing("data") if p not in before]
        total = sum(n for _, n in added)
        raw = raw_uploads(store.remote, len(added), total // len(added))
        found.append((LAYERS * TOKENS * D * 2 / 1e6 / seconds, total / 1e6 / raw))
    return found


def timed(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


QUERY = "select count(*), avg(vec[1]) from residuals where run = 'run1' and layer = 5"


def main() -> None:
    import actwh
    from actwh.warehouse.store import Store

    s3, postgres = S3(), Postgres()
    proxy = Proxy(s3.port)
    os.environ.update({**s3.env, "AWS_ENDPOINT_URL": proxy.endpoint})
    try:
        uri = s3.bucket("bench") + "/wh"
        store = Store.create(uri, catalog_url=postgres.database("bench"))
        with tempfile.TemporaryDirectory() as tmp:
            local = Store.create(Path(tmp) / "wh")
            fill(store, RUNS)
            fill(local, RUNS)
            rounds = throughput(store, 5)  # (its runs stay: the warehouse queried below)
            sizes = store.remote.listing("data")
            total = sum(size for _, _, size in sizes)
            n_files = len(sizes)
            commit_rate = statistics.median(c for c, _ in rounds)
            raw_rate = statistics.median(r for _, r in rounds)
            ratio = statistics.median(c / r for c, r in rounds)
            rows_out = [
                {
                    "what": f"{LAYERS} commits of {TOKENS:,} float16 vectors (d {D}) via "
                    "CommitWriter to the bucket, MB/s of vectors",
                    "median of 5": f"{commit_rate:,.1f}",
                    "rounds": ", ".join(f"{c:,.1f}" for c, _ in rounds),
                },
                {
                    "what": f"raw upload of the same bytes in {LAYERS} objects (pyarrow.fs)",
                    "median of 5": f"{raw_rate:,.1f}",
                    "rounds": ", ".join(f"{r:,.1f}" for _, r in rounds),
                },
            ]
            with actwh.open(uri) as remote_wh, actwh.open(local.root) as local_wh:
                assert remote_wh.sql(QUERY).equals(local_wh.sql(QUERY))
                proxy.fetched = 0
                with actwh.open(uri) as wh:  # a fresh snapshot: nothing cached
                    wh.sql(QUERY)
                fetched_sql = proxy.fetched
                proxy.fetched = 0
                with actwh.open(uri) as wh:
                    wh.vectors("residuals", run="run1", layer=5)
                fetched_vectors = proxy.fetched
                remote_query = timed(5, lambda: actwh.open(uri).sql(QUERY))
                local_query = timed(5, lambda: actwh.open(local.root).sql(QUERY))
                remote_open_query = timed(5, lambda: remote_wh.sql(QUERY))
                local_open_query = timed(5, lambda: local_wh.sql(QUERY))
    finally:
        proxy.cut()
        postgres.stop()
        s3.stop()
    layer_file = total / n_files
    fetch_rows = [
        {
            "what": f"the warehouse ({n_files} files, {RUNS + 5} runs)",
            "bytes": f"{total:,}",
            "share": "1",
        },
        {
            "what": "`wh.sql` of one run and one layer (open included: the catalog chooses "
            "the files)",
            "bytes": f"{fetched_sql:,}",
            "share": f"{fetched_sql / total:.3f}",
        },
        {
            "what": "`wh.vectors` of one run and one layer (open included)",
            "bytes": f"{fetched_vectors:,}",
            "share": f"{fetched_vectors / total:.3f}",
        },
        {"what": "one layer's file", "bytes": f"{layer_file:,.0f}", "share": f"{1 / n_files:.3f}"},
    ]
    time_rows = [
        {"what": "open + query, bucket", "seconds": f"{remote_query:.3f}"},
        {"what": "open + query, local directory", "seconds": f"{local_query:.3f}"},
        {"what": "query of an open warehouse, bucket", "seconds": f"{remote_open_query:.3f}"},
        {"what": "query of an open warehouse, local", "seconds": f"{local_open_query:.3f}"},
    ]
    body = (
        f"moto's S3 server on this machine (in memory) behind a counting TCP proxy, PostgreSQL "
        f"catalog. {RUNS} runs × {LAYERS} layers, a file of {TOKENS:,} vectors per layer.\n\n"
        + table(rows_out)
        + f"\n\nCommits reach {ratio:.2f}× a raw upload of the same bytes (median of the rounds' "
        f"ratios; goal ≥ 0.8×: "
        f"{'met' if ratio >= 0.8 else 'NOT met'}).\n\n"
        + table(fetch_rows)
        + "\n\nQuery: `"
        + QUERY
        + "`, median of 5.\n\n"
        + table(time_rows)
    )
    record("objectstore", "(h) A warehouse on an object store (moto S3, PostgreSQL catalog)", body)


if __name__ == "__main__":
    main()
