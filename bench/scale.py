"""(j) At the size a warehouse exists for: how opening, a selective query, a full-table aggregate
and compaction grow with the number of committed files and with the rows they hold.

Synthetic float16 ``residuals`` rows (d 64) go through actwh's own writer
(:class:`~actwh.warehouse.writer.CommitWriter`, no model): 10 runs × 5 layers (50 partitions),
one file per partition per commit, so a warehouse of N files is N / 50 commits. Two series:

- **files**: 10⁷ values in 50, 10³, 10⁴, 5·10⁴ and 10⁵ files (the same rows, cut finer);
- **rows**: 10³ files holding 10⁷, 10⁸ and 10⁹ values (20 MB to 2 GB of float16).

For each warehouse, in fresh processes (median of 3): a selective query of one run and one layer
(open included), and a full-table aggregate (GB/s of its files); ``wh.compact`` of a copy (MB/s,
files after); and, all warehouses of a series taken in turn, 7 times, opening it and answering
from the catalog (``actwh.open(WH).sql("select count(*) from runs")``). Each cost's growth exponent is the slope of log(cost) on log(files) or log(values).

On a bucket (moto's S3 server behind a counting proxy, a PostgreSQL catalog): 10⁴ files, the
requests an open makes, and the bytes a one-run one-layer query fetches against that partition's
files' bytes (``--s3``; needs Debian's ``postgresql`` and ``pip install -e '.[dev]'``).

Goals (issue 38): a 50,000-file warehouse opens in ≤ 1.3× the time of a 50-file one holding the
same rows; an open on a bucket makes a constant number of requests; a one-run one-layer query on
a bucket fetches ≤ 1.1× its partition's bytes.

Run: ``python -m bench.scale [--quick] [--s3] [--dir DIR]`` (about an hour on 2 cores; the
warehouses are built under ``DIR``, default a temporary directory, take 3 GB, and are reused by
a later run given the same ``DIR``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test helpers

from bench.report import record, table  # noqa: E402

D = 64
RUNS, LAYERS = 10, 5
OPEN = 'wh.sql("select count(*) from runs")'
QUERY = "select count(*), avg(vec[1]) from residuals where run = 'r3' and layer = 2"
AGGREGATE = "select layer, count(*), avg(vec[1]) from residuals group by layer"


def build(root: Path, files: int, values: int) -> None:
    """A warehouse of ``files`` committed files holding ``values`` float16 values."""
    from synthetic import synthetic_commits

    from actwh.warehouse.store import Store

    commits = max(1, files // (RUNS * LAYERS))
    rows = max(1, values // (files * D))
    synthetic_commits(Store.create(root), runs=RUNS, layers=LAYERS, commits=commits, rows=rows, d=D)


def in_process(root: Path, code: str, repeats: int = 3) -> float:
    """Median seconds of ``code`` (with ``wh``, the warehouse opened in it) in a fresh Python
    process each time; what it prints is checked to be the same every time."""
    script = (
        "import time, actwh\n"
        "started = time.perf_counter()\n"
        f"wh = actwh.open({str(root)!r})\n"
        f"{code}\n"
        "print(time.perf_counter() - started)\n"
    )
    times = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        times.append(float(out.split()[-1]))
    return statistics.median(times)


def measure(root: Path, files: int, values: int) -> dict:
    """Everything but the open (measured apart: see :func:`opens`), on ``root``; compaction on
    a copy, so the warehouse stays as built."""
    import actwh

    bytes_ = sum(p.stat().st_size for p in (root / "data").rglob("*.parquet"))
    selective = in_process(root, f"wh.sql({QUERY!r})")
    full = in_process(root, f"wh.sql({AGGREGATE!r})")
    copy = root.with_name(root.name + "-compacted")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(root, copy)
    with actwh.open(copy) as wh:
        before = wh.sql(AGGREGATE).sort("layer")
        started = time.perf_counter()
        report = wh.compact(target_mb=256, progress=False)
        seconds = time.perf_counter() - started
        after = wh.refresh().sql(AGGREGATE).sort("layer")
        n_after = wh.sql("select count(*) from commit_files").item()
    shutil.rmtree(copy)
    assert before.equals(after), "compaction changed the rows"
    return {
        "files": files,
        "values": values,
        "MB": bytes_ / 1e6,
        "selective": selective,
        "full": full,
        "GB/s": bytes_ / 1e9 / full,
        "compact MB/s": report.bytes / 1e6 / seconds if seconds else float("nan"),
        "compact s": seconds,
        "files after": n_after,
    }


def opens(found: list[dict], rounds: int = 7) -> None:
    """Each warehouse's open (``actwh.open(WH).sql("select count(*) from runs")`` in a fresh
    process), the warehouses taken in turn, ``rounds`` times: the machine's drift falls on
    all of them alike. Adds the median as ``open``."""
    times: dict[int, list[float]] = {id(r): [] for r in found}
    for _ in range(rounds):
        for r in found:
            times[id(r)].append(in_process(r["root"], OPEN, repeats=1))
    for r in found:
        r["open"] = statistics.median(times[id(r)])


def slope(xs: list[float], ys: list[float]) -> float:
    """The growth exponent: least-squares slope of log(y) on log(x)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def series(where: Path, points: list[tuple[int, int]]) -> list[dict]:
    """Build (or find, from an earlier run in the same ``where``) and measure each warehouse."""
    found = []
    for files, values in points:
        root = where / f"wh-{files}-{values}"
        if not (root / "built").exists():  # a warehouse of an earlier run in --dir is reused
            shutil.rmtree(root, ignore_errors=True)
            started = time.perf_counter()
            build(root, files, values)
            (root / "built").touch()
            print(
                f"built {files:,} files, {values:,} values in {time.perf_counter() - started:.0f}s"
            )
        found.append(measure(root, files, values) | {"root": root})
        print(found[-1])
    opens(found)
    return found


def rows_of(found: list[dict]) -> list[dict]:
    return [
        {
            "files": f"{r['files']:,}",
            "values": f"{r['values']:.0e}",
            "MB": f"{r['MB']:,.0f}",
            "open s": f"{r['open']:.3f}",
            "selective s": f"{r['selective']:.3f}",
            "full-table s": f"{r['full']:.2f}",
            "GB/s": f"{r['GB/s']:.2f}",
            "compact MB/s": f"{r['compact MB/s']:.1f}",
            "files after": f"{r['files after']:,}",
        }
        for r in found
    ]


def exponents(found: list[dict], axis: str) -> str:
    xs = [r[axis] for r in found]
    parts = [
        f"{name} {slope(xs, [r[key] for r in found]):+.2f}"
        for name, key in (
            ("open", "open"),
            ("selective query", "selective"),
            ("full-table aggregate", "full"),
            ("compaction", "compact s"),
        )
    ]
    return ", ".join(parts)


def bucket(where: Path, files: int) -> dict:
    """Requests per open and bytes per selective query on the test S3 server."""
    from servers import S3, Postgres, Proxy

    import actwh
    from actwh.warehouse.store import Store

    local = where / "wh-s3-source"
    shutil.rmtree(local, ignore_errors=True)
    build(local, files, files * D * 256)  # 32 KB files: HTTP headers stay a small share
    s3, postgres = S3(), Postgres()
    proxy = Proxy(s3.port)
    os.environ.update(s3.env)  # the copy goes to the server directly; the measures through proxy
    try:
        uri = s3.bucket("scale") + "/wh"
        store = Store.create(uri, catalog_url=postgres.database("scale"))
        started = time.perf_counter()
        _copy(Store.open(local), store)
        copied = time.perf_counter() - started
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
        result = {"files": files, "copy s": copied}
        for label, code in (("open", "select count(*) from runs"), ("query", QUERY)):
            proxy.reset()
            started = time.perf_counter()
            with actwh.open(uri) as wh:
                wh.sql(code)
                part = wh.sql(
                    "select sum(n_bytes) from commit_files where run = 'r3' and layer = 2"
                ).item()
            result[f"{label} s"] = time.perf_counter() - started
            result[f"{label} requests"] = sum(proxy.requests.values())
            result[f"{label} bytes"] = proxy.fetched
        result["partition bytes"] = part
    finally:
        proxy.cut()
        postgres.stop()
        s3.stop()
        shutil.rmtree(local, ignore_errors=True)
    return result


def _copy(source, target) -> None:
    """The committed files and catalog rows of ``source`` into the empty warehouse ``target``."""
    catalog = source.catalog
    for relative in [r["path"] for r in catalog.rows("commit_files")]:
        target.remote.put(relative, (source.root / relative).read_bytes())
    with target.catalog.begin() as conn:
        for name in ("runs", "commits", "commit_files"):
            target.catalog.insert(conn, name, catalog.rows(name))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller series (a smoke run)")
    parser.add_argument("--s3", action="store_true", help="also measure on the test S3 server")
    parser.add_argument("--dir", type=Path, help="where to build the warehouses")
    args = parser.parse_args()
    where = args.dir or Path(tempfile.mkdtemp(prefix="actwh-scale-"))
    if args.quick:
        by_files = series(where, [(50, 10**6), (1_000, 10**6), (5_000, 10**6)])
        by_rows = series(where, [(200, 10**6), (200, 10**7)])
    else:
        by_files = series(
            where, [(50, 10**7), (1_000, 10**7), (10_000, 10**7), (50_000, 10**7), (100_000, 10**7)]
        )
        by_rows = series(where, [(1_000, 10**7), (1_000, 10**8), (1_000, 10**9)])
    fifty = next(r for r in by_files if r["files"] == 50)
    most = next((r for r in by_files if r["files"] == 50_000), by_files[-1])
    ratio = most["open"] / fifty["open"]
    body = (
        f"Synthetic float16 residuals (d {D}) through CommitWriter: {RUNS} runs × {LAYERS} layers, "
        "a file per partition per commit. Fresh process each time, median of 3. Selective query: "
        f"`{QUERY}`; full-table aggregate: `{AGGREGATE}`; compaction: `wh.compact(target_mb=256)`"
        ", its rows checked equal before and after.\n\n"
        "**By files** (the same rows cut finer):\n\n"
        + table(rows_of(by_files))
        + f"\n\nGrowth exponents with files: {exponents(by_files, 'files')}.\n\n"
        "**By rows** (the same files holding more):\n\n"
        + table(rows_of(by_rows))
        + f"\n\nGrowth exponents with values: {exponents(by_rows, 'values')}.\n\n"
        f"Opening {most['files']:,} files takes {ratio:.2f}× the time of opening 50 holding the "
        f"same rows (goal ≤ 1.3×: {'met' if ratio <= 1.3 else 'missed'})."
    )
    if args.s3:
        b = bucket(where, 1_000 if args.quick else 10_000)
        share = b["query bytes"] / b["partition bytes"]
        body += (
            f"\n\n**On a bucket** (moto's S3 server behind a counting proxy, PostgreSQL catalog), "
            f"{b['files']:,} files: an open makes {b['open requests']} requests "
            f"({b['open bytes']:,} bytes, {b['open s']:.2f} s); the selective query (open "
            f"included) makes {b['query requests']} requests and fetches {b['query bytes']:,} "
            f"bytes, {share:.3f}× its partition's {b['partition bytes']:,} bytes (goal ≤ 1.1×: "
            f"{'met' if share <= 1.1 else 'missed'}), in {b['query s']:.2f} s."
        )
    record("scale", "(j) Files and rows: opening, queries, compaction", body)


if __name__ == "__main__":
    main()
