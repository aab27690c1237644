"""``actwh check``: every committed file against the catalog, and what no commit owns.

For each file the catalog lists: it exists, Parquet can read its footer, its row count and its
sha256 are the recorded ones. Files under ``data/`` that no commit lists are orphans (left by a
crash between rename and record) and ``*.tmp`` files are unfinished writes — when they are what a
writer of actwh leaves: its file names, in a table's partition folders. Any other file is
*foreign*: reported, never deleted (actwh did not write it). Files retired by a compaction or a
rebuild, kept for readers that started before, are neither. Each table's Spark log
(:mod:`actwh.warehouse.spark_log`) must list exactly its committed files, at this location.

``repair`` takes the commit lock exclusively (writers take it shared while they commit), looks
again, deletes orphans and unfinished files older than ``grace`` seconds, and drops the least it
can. A run's damaged
file goes alone: its catalog row becomes a *gap* (``commit_gaps``), the run goes back to
``running``, and ``actwh ingest`` with the same options redoes exactly that file (its commit's
prompts — a compaction's: those of the commits it merged —, its table and partition); runs that
replayed the repaired run (``--teacher-force``) become ``stale``. A model's commit (value
vectors, weight diffs) goes whole, to be rebuilt. Then it writes the Spark logs again where they
are out of date.

A repair never destroys what it cannot see: when ``data/`` is gone (an unmounted share, a moved
directory), when files are missing rather than damaged, or when more than
:data:`MAX_DROPPED_COMMITS` commits would go, it refuses and says what it would drop, unless
``force`` is given.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from actwh.errors import ActwhError, arg
from actwh.warehouse import layout
from actwh.warehouse.options import CheckOptions
from actwh.warehouse.schema import fact_tables
from actwh.warehouse.spark_log import is_current, publish
from actwh.warehouse.store import Store


@dataclass
class CheckReport:
    files: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, what is wrong)
    orphans: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # not actwh's: left alone
    removed: list[str] = field(default_factory=list)
    runs_to_resume: list[str] = field(default_factory=list)
    stale_runs: list[str] = field(default_factory=list)
    models_to_rebuild: list[str] = field(default_factory=list)
    indexes_to_rebuild: list[str] = field(default_factory=list)  # models: damaged FAISS files
    retired: int = 0  # files retired (by a compaction or rebuild) still on disk: not orphans
    stale_logs: list[str] = field(default_factory=list)  # tables whose Spark log is out of date
    published: list[str] = field(default_factory=list)  # tables whose Spark log repair wrote

    @property
    def left(self) -> set[str]:
        """What is still wrong: damaged, orphaned or unfinished paths not removed, and the
        Spark logs not written again."""
        found = {p for p, _ in self.problems} | set(self.orphans) | set(self.unfinished)
        logs = {f"{t} (Spark log)" for t in self.stale_logs if t not in self.published}
        return (found - set(self.removed)) | logs

    def lines(self) -> list[str]:
        """What was found and done, a line each, and what to do next; ``ok`` when all is
        well."""
        lines = [f"damaged: {path}: {problem}" for path, problem in self.problems]
        lines += [f"orphan (no commit lists it): {path}" for path in self.orphans]
        lines += [f"unfinished write: {path}" for path in self.unfinished]
        lines += [f"not written by actwh (left alone): {path}" for path in self.foreign]
        lines += [f"removed: {path}" for path in self.removed]
        lines += [
            f"run {run} lost damaged files: rerun its actwh ingest command to redo them"
            for run in self.runs_to_resume
        ]
        lines += [
            f"run {run} is stale: it replayed a repaired run; ingest it again under another name"
            for run in self.stale_runs
        ]
        lines += [
            f"model {model} lost damaged commits: rerun actwh index-vectors / actwh diff for it"
            for model in self.models_to_rebuild
        ]
        lines += [
            f"model {model}'s FAISS index is damaged: actwh index-vectors WH --model {model} "
            "--replace builds it again"
            for model in self.indexes_to_rebuild
        ]
        for table in self.stale_logs:
            state = "written again" if table in self.published else "out of date (--repair)"
            lines.append(f"Spark log of {table}: {state}")
        if not self.left:
            lines.append("ok" if not self.removed else "ok after repair")
        return lines


def _problem(store: Store, row: dict) -> str | None:
    if not store.exists(row["path"]):
        return "missing"
    try:
        with store.open_input(row["path"]) as f:
            rows = pq.read_metadata(f).num_rows
    except Exception as error:  # any reason Parquet cannot read it is the same finding
        return f"unreadable ({str(error).splitlines()[0]})"
    if rows != row["n_rows"]:
        return f"{rows} rows, the catalog says {row['n_rows']}"
    if store.sha256(row["path"]) != row["sha256"]:
        return "checksum differs from the catalog's"
    return None


# What index-vectors writes under index/: MODEL.BUILD.faiss, MODEL.BUILD.readout.npy, and the
# unfinished write of one (.NAME.PID.tmp).
_INDEX_FILE = re.compile(r"^\.?[^/]+\.[0-9a-f]{12}\.(faiss|readout\.npy)(\.\d+\.tmp)?$")

MAX_DROPPED_COMMITS = 3  # a repair that would drop more asks for force=True


def check(store: Store, options: CheckOptions | None = None) -> CheckReport:
    options = options or CheckOptions()
    if not options.repair:
        return _inspect(store, {**dict(store.data_files()), **dict(store.index_files())})
    with store.commit_lock(exclusive=True):  # no local writer is between write and record
        modified = {**dict(store.data_files()), **dict(store.index_files())}
        report = _inspect(store, modified)
        damaged = _damaged_commits(store, report)
        if not options.force:
            _refuse_to_destroy(store, report, set(damaged))
        old = time.time() - options.grace  # younger: maybe a live writer's, about to be recorded
        for relative in [*report.orphans, *report.unfinished]:
            if modified[relative] < old:
                store.delete(relative)
                report.removed.append(relative)
        for commit_id in sorted(damaged):
            _drop_damaged(store, commit_id, damaged[commit_id], report)
    report.published = publish(store)
    return report


def _inspect(store: Store, present: dict[str, float]) -> CheckReport:
    """Every committed file checked; orphans, unfinished writes and foreign files found among
    the files ``present`` (path → modification time)."""
    report = CheckReport()
    committed = store.catalog.rows("commit_files")
    report.files = len(committed)
    for row in committed:
        problem = _problem(store, row)
        if problem:
            report.problems.append((row["path"], problem))
    indexes = [
        (row["model"], path, sha)
        for row in store.catalog.rows("vector_indexes")
        for path, sha in ((row["path"], row["sha256"]), (row["readout"], row["readout_sha256"]))
        if path  # (a warehouse from before readouts has none)
    ]
    report.files += len(indexes)
    for model, path, sha in indexes:
        problem = "missing" if not store.exists(path) else None
        if problem is None and store.sha256(path) != sha:
            problem = "checksum differs from the catalog's"
        if problem is not None:
            report.problems.append((path, problem))
            if model not in report.indexes_to_rebuild:
                report.indexes_to_rebuild.append(model)
    retired = {row["path"] for row in store.catalog.rows("retired_files")}
    report.retired = len(retired & set(present))
    known = {row["path"] for row in committed} | retired | {path for _, path, _ in indexes}
    for relative in present:
        if relative in known:
            continue
        if not _written_by_actwh(relative):
            report.foreign.append(relative)
        elif relative.endswith(layout.TMP_SUFFIX):
            report.unfinished.append(relative)
        else:
            report.orphans.append(relative)
    listings: dict[str, list[tuple[str, int]]] = {t: [] for t in fact_tables()}
    for row in committed:
        listings.setdefault(row["table_name"], []).append((row["path"], row["n_bytes"]))
    report.stale_logs = [t for t, files in listings.items() if not is_current(store, t, files)]
    return report


def _damaged_commits(store: Store, report: CheckReport) -> dict[str, list[dict]]:
    """Commit id → its damaged files (catalog rows)."""
    bad = {path for path, _ in report.problems}
    damaged: dict[str, list[dict]] = {}
    for row in store.catalog.rows("commit_files"):
        if row["path"] in bad:
            damaged.setdefault(row["commit_id"], []).append(row)
    return damaged


def _written_by_actwh(relative: str) -> bool:
    """Whether a writer of actwh could have left ``relative``: one of its file names, in the
    partition folders of a table (``data/residuals/run=R/layer=L/part-….parquet``)."""
    parts = relative.split("/")
    if parts[0] == layout.INDEX_DIR:  # a build's index or readout, or its unfinished write
        return len(parts) == 2 and bool(_INDEX_FILE.match(parts[1]))
    spec = fact_tables().get(parts[1]) if len(parts) > 2 else None
    if spec is None or not layout.is_data_file_name(parts[-1]):
        return False
    folders = parts[2:-1]
    keys = [folder.split("=", 1)[0] for folder in folders if "=" in folder]
    return len(keys) == len(folders) and tuple(keys) == spec.partition


def _refuse_to_destroy(store: Store, report: CheckReport, damaged: set[str]) -> None:
    """Raise, saying what would go, where a repair would drop what it cannot see or too much."""
    if not damaged:
        return
    paths = [path for path, _ in report.problems]
    scopes = sorted({p.split("/")[2] for p in paths if len(p.split("/")) > 2})
    would = (
        f"repair would drop {len(paths)} file(s) from {len(damaged)} commit(s) of "
        f"{', '.join(scopes)}; nothing was changed"
    )
    missing = [path for path, problem in report.problems if problem == "missing"]
    if len(missing) == len(store.catalog.rows("commit_files")):
        raise ActwhError(
            f"{store.url(layout.DATA_DIR)} holds none of the committed files (an unmounted "
            f"share, a moved directory, another bucket?); {would}. Restore it, or pass "
            f"{arg('force')}"
        )
    if missing:
        raise ActwhError(
            f"{len(missing)} committed file(s) are missing rather than damaged (first: "
            f"{missing[0]}); {would}. Restore them, or pass {arg('force')} to drop those commits"
        )
    if len(damaged) > MAX_DROPPED_COMMITS:
        raise ActwhError(f"{would}. Pass {arg('force')} to drop them")


def _drop_damaged(store: Store, commit_id: str, files: list[dict], report: CheckReport) -> None:
    """Drop a commit's damaged files: as gaps its run redoes, or the whole commit of a model."""
    catalog = store.catalog
    runs = catalog.tables["runs"]
    with catalog.begin() as conn:
        commit = catalog.get("commits", conn, id=commit_id)
        run = commit["run"]
        if run is None:  # model data: rebuilt whole by actwh index-vectors / actwh diff
            files = catalog.rows("commit_files", conn, commit_id=commit_id)
            catalog.delete(conn, "commit_files", commit_id=commit_id)
            catalog.delete(conn, "commits", id=commit_id)
            if commit["model"] not in report.models_to_rebuild:
                report.models_to_rebuild.append(commit["model"])
        else:
            tokens = sum(f["n_rows"] for f in files if f["table_name"] == "tokens")
            for f in files:
                catalog.delete(conn, "commit_files", path=f["path"])
                gap = {k: f[k] for k in ("path", "commit_id", "table_name", "n_rows")}
                catalog.insert(conn, "commit_gaps", {**gap, "run": run})
            catalog.update(
                conn,
                "runs",
                {"name": run},
                status="running",
                finished_at=None,
                n_tokens=runs.c.n_tokens - tokens,
            )
            for dependant in catalog.rows("runs", conn, source_run=run):
                catalog.update(conn, "runs", {"name": dependant["name"]}, status="stale")
                if dependant["name"] not in report.stale_runs:
                    report.stale_runs.append(dependant["name"])
            if run not in report.runs_to_resume:
                report.runs_to_resume.append(run)
    for f in files:
        store.delete(f["path"])
        report.removed.append(f["path"])
