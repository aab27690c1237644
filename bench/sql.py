"""(c) ``actwh sql``: a group-by over 10 M projection rows, and the CLI's start time.

A synthetic warehouse holds one run of 10 M ``projections`` rows (30 layers × 2 sites ×
5 directions × 33,334 tokens, random values, written by actwh's own writer). Timed, median of
five: the group-by through the CLI (start included), the same query in a warehouse already open,
the same aggregation with polars on the same files, ``actwh sql WH "select 1"`` and ``actwh
--help`` (start times), and ``python -c "import torch"`` (what the CLI would pay if it imported
torch).

Budget (docs/design.md): under a second for the group-by on 2 cores, and a start "well under a second".
Run: ``python -m bench.sql``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import actwh
from actwh.warehouse.catalog import now
from actwh.warehouse.store import Store
from actwh.warehouse.writer import CommitWriter
from bench.report import record, table

LAYERS, SITES, DIRECTIONS, TOKENS = 30, ("resid_mid", "resid_post"), 5, 33_334
QUERY = "select layer, site, direction, avg(cos) as mean_cos, count(*) as n from projections group by all"


def build(root: Path) -> int:
    store = Store.create(root)
    with store.catalog.begin() as conn:
        store.catalog.insert(
            conn,
            "runs",
            {
                "name": "r",
                "model": "m",
                "prompt_set": "p",
                "mode": "generate",
                "config": "{}",
                "status": "complete",
                "n_prompts": TOKENS // 30,
                "n_tokens": TOKENS,
                "created_at": now(),
            },
        )
    writer = CommitWriter(store, run="r")
    rng = np.random.default_rng(0)
    rows = 0
    n = TOKENS * DIRECTIONS
    for layer in range(LAYERS):
        for site in SITES:
            writer.add(
                "projections",
                {"run": "r", "layer": layer},
                pa.table(
                    {
                        "prompt": np.repeat(np.arange(TOKENS, dtype=np.int32) // 30, DIRECTIONS),
                        "pos": np.repeat(np.arange(TOKENS, dtype=np.int32) % 30, DIRECTIONS),
                        "site": pa.array([site] * n),
                        "direction": pa.array([f"d{i}" for i in range(DIRECTIONS)] * TOKENS),
                        "dot": rng.standard_normal(n, dtype=np.float32),
                        "cos": rng.uniform(-1, 1, n).astype(np.float32),
                    }
                ),
            )
            rows += n
        if layer % 10 == 9:
            writer.commit()
    return rows


def timed(command: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    actwh_cli = str(Path(sys.executable).with_name("actwh"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "wh"
        rows = build(root)
        cli_query = timed([actwh_cli, "sql", str(root), QUERY, "--csv"])
        start = timed([actwh_cli, "sql", str(root), "select 1", "--csv"])
        help_start = timed([actwh_cli, "--help"])
        python = timed([sys.executable, "-c", "pass"])
        torch_import = timed([sys.executable, "-c", "import torch"], repeats=3)
        with actwh.open(root) as wh:
            assert wh.sql("select count(*) from projections").item() == rows
            in_process = []
            for _ in range(5):
                started = time.perf_counter()
                result = wh.sql(QUERY)
                in_process.append(time.perf_counter() - started)
            import polars as pl

            lazy = wh.scan("projections")
            polars_times = []
            for _ in range(5):
                started = time.perf_counter()
                lazy.group_by("layer", "site", "direction").agg(
                    pl.col("cos").mean(), pl.len()
                ).collect()
                polars_times.append(time.perf_counter() - started)
    query = statistics.median(in_process)
    rows_table = [
        {
            "what": f"group-by over {rows:,} projection rows, `actwh sql` (start included)",
            "seconds": f"{cli_query:.2f}",
        },
        {"what": "the same query in an open warehouse (`wh.sql`)", "seconds": f"{query:.2f}"},
        {
            "what": "the same aggregation with polars on the same files (`wh.scan`)",
            "seconds": f"{statistics.median(polars_times):.2f}",
        },
        {"what": '`actwh sql WH "select 1"` (start time)', "seconds": f"{start:.2f}"},
        {"what": "`actwh --help`", "seconds": f"{help_start:.2f}"},
        {"what": '`python -c "pass"`', "seconds": f"{python:.2f}"},
        {
            "what": '`python -c "import torch"` (avoided by the CLI)',
            "seconds": f"{torch_import:.2f}",
        },
    ]
    body = (
        f"{result.height} groups. Median of 5 (3 for the torch import).\n\n"
        + table(rows_table)
        + f"\n\nBudget (docs/design.md): group-by under 1 s: {'met' if cli_query < 1 else 'NOT met'} "
        f"({cli_query:.2f} s with start, {query:.2f} s in process); start well under a second: "
        f"{start:.2f} s, {start / torch_import:.2f}× the cost of importing torch alone. Issue "
        f"41's bars: `actwh --help` ≤ 0.3 s: {'met' if help_start <= 0.3 else 'NOT met'} "
        f'({help_start:.2f} s); `actwh sql WH "select 1"` ≤ 0.5 s: '
        f"{'met' if start <= 0.5 else 'NOT met'} ({start:.2f} s; on a synthetic warehouse of "
        "one run, not the demo's)."
    )
    record("sql", "(c) SQL over 10 M projection rows, and the CLI's start time", body)


if __name__ == "__main__":
    main()
