"""(e) Peak memory of ingestion at 100 vs 1,000 prompts: it must not grow with the prompt count.

Each run is a fresh ``actwh ingest`` process on the embedded model storing full vectors
(``--capture resid_mid,mlp_post`` at all layers, 4 greedy tokens per prompt: the most bytes per
prompt); peak resident memory is read by GNU time (``%M``). Memory is bounded by one batch plus the
commit buffer (``commit_mb``, 128 MiB by default), not by the number of prompts.
Run: ``python -m bench.memory``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from actwh.ingest.prompts import read_prompts, shipped_prompts, write_prompts
from bench.report import record, table


def peak_rss(command: list[str]) -> tuple[float, str]:
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M %e", *command], capture_output=True, text=True, check=True
    )
    kib, seconds = out.stderr.strip().splitlines()[-1].split()
    return int(kib) / 1024, seconds


def main() -> None:
    shipped = read_prompts(shipped_prompts()).prompts
    cli = str(Path(sys.executable).with_name("actwh"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in (100, 1000):
            prompts = tmp / f"prompts{n}.jsonl"
            write_prompts([shipped[i % len(shipped)] for i in range(n)], prompts)
            wh = tmp / f"wh{n}"
            mib, seconds = peak_rss(
                [
                    cli,
                    "ingest",
                    str(wh),
                    "--model",
                    "embedded",
                    "--prompts",
                    str(prompts),
                    "--generate",
                    "4",
                    "--capture",
                    "resid_mid,mlp_post",
                    "--no-progress",
                ]
            )
            stored = sum(p.stat().st_size for p in wh.rglob("*.parquet")) / 2**20
            rows.append(
                {
                    "prompts": n,
                    "peak RSS (MiB)": f"{mib:,.0f}",
                    "stored (MiB)": f"{stored:,.0f}",
                    "seconds": seconds,
                }
            )
            print(rows[-1])
    ratio = float(rows[1]["peak RSS (MiB)"].replace(",", "")) / float(
        rows[0]["peak RSS (MiB)"].replace(",", "")
    )
    body = (
        "embedded model, 4 greedy tokens, resid_mid + mlp_post at all 30 layers, float16, batch 8, "
        "default commit buffer (128 MiB).\n\n"
        + table(rows)
        + f"\n\n10× the prompts, {ratio:.2f}× the peak memory while storing ~10× the bytes: memory is "
        "bounded by the batch and the commit buffer, not by the prompt count."
    )
    record("memory", "(e) Peak memory of ingestion, 100 vs 1,000 prompts", body)


if __name__ == "__main__":
    main()
