"""Writing benchmark results into BENCHMARKS.md: one section per benchmark, replaced on rerun."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = """# Benchmarks

Every figure is a ratio (or a time) measured in one run of the script named in its section,
against a baseline measured in the same run on the same machine. Rerun a section with its command.
"""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}"


def table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def record(key: str, title: str, body: str) -> None:
    """Put section ``key`` (replacing an earlier one) into BENCHMARKS.md and print it."""
    command = (
        "python -m bench." + Path(sys.argv[0]).stem
        if sys.argv[0].endswith(".py")
        else " ".join(sys.argv)
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=BENCHMARKS.parent,
    ).stdout.strip()
    section = (
        f"<!-- {key} -->\n## {title}\n\n"
        f"`{command}` — {date.today().isoformat()}, commit {commit or '?'}, {machine()}\n\n"
        f"{body.strip()}\n<!-- /{key} -->\n"
    )
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(rf"<!-- {key} -->.*?<!-- /{key} -->\n", re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    BENCHMARKS.write_text(text)
    print(section)
