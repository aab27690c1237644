"""A warehouse's commits without a model: float16 ``residuals`` rows through actwh's own writer,
for tests and benchmarks of how the warehouse behaves with many files (tests/test_compact.py,
bench/scale.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def synthetic_commits(
    store, *, runs: int = 2, layers: int = 3, commits: int = 4, rows: int = 8, d: int = 16
) -> None:
    """``commits`` more commits per run (runs ``r0``, ``r1``, ...) of ``rows`` random float16
    vectors of size ``d`` at each of ``layers`` layers: ``runs × layers × commits`` files."""
    from actwh.warehouse.arrays import vectors_to_column
    from actwh.warehouse.catalog import now
    from actwh.warehouse.writer import CommitWriter

    rng = np.random.default_rng(0)
    with store.catalog.begin() as conn:
        for r in range(runs):
            if store.catalog.get("runs", conn, name=f"r{r}") is None:
                run = {"name": f"r{r}", "model": "m", "prompt_set": "p", "mode": "generate"}
                state = {"config": "{}", "status": "complete", "n_prompts": 0, "n_tokens": 0}
                store.catalog.insert(conn, "runs", run | state | {"created_at": now()})
    block = rng.standard_normal((rows, d)).astype(np.float16)
    for r in range(runs):
        writer = CommitWriter(store, run=f"r{r}")
        with writer.in_background():
            for c in range(commits):
                for layer in range(layers):
                    data = pa.table(
                        {
                            "prompt": np.arange(c * rows, (c + 1) * rows, dtype=np.int32),
                            "pos": np.zeros(rows, dtype=np.int32),
                            "site": pa.array(["resid_mid"] * rows),
                            "vec": vectors_to_column(block * np.float16(layer + 1)),
                        }
                    )
                    partition = {"run": f"r{r}", "layer": layer}
                    writer.add("residuals", partition, data, vector_size=d, dtype="float16")
                writer.commit()
