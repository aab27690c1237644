"""Where things live inside a warehouse directory.

::

    WH/
      warehouse.json        marker: format version and catalog URL
      catalog.duckdb        the catalog (unless warehouse.json names another SQLAlchemy URL)
      data/<table>/run=<run>/layer=<layer>/part-<writer>-<commit>.parquet
      index/<model>.faiss   FAISS index of a model's value vectors

Files are written as ``_part-*.parquet.tmp`` and renamed into place before their commit is
recorded in the catalog; readers only ever open files the catalog lists, so an unfinished write is
invisible. The leading ``_`` hides it from directory readers too (Spark, Trino and Hive skip names
that start with ``_`` or ``.``).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

from actwh.errors import ActwhError, AlreadyExists, BadInput, arg

FORMAT_VERSION = "1"
# The toxicity probe's direction: what train-probe registers and analyses read unless told.
# (The named queries' headers in queries/ say it in SQL too.)
PROBE = "toxic_probe"
MARKER = "warehouse.json"
CATALOG_FILE = "catalog.duckdb"
DATA_DIR = "data"
INDEX_DIR = "index"
# How long a file retired by a compaction or a rebuild stays on disk (seconds): a notebook's
# snapshot or a Spark job that started before may read it for hours.
RETIRED_GRACE = 24 * 3600.0
TMP_PREFIX = "_"  # directory readers (Spark, Trino, Hive) skip names starting with _ or .
TMP_SUFFIX = ".tmp"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


MAX_NAME = 128  # a directory name (run=NAME) must stay well under the file system's 255 bytes


def check_name(kind: str, name: str) -> str:
    """Names of runs, models and prompt sets become directory names, and every name reaches
    SQL, HTML and the shell: keep them plain (letters, digits, ``_ . + -``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ActwhError(
            f"invalid {kind} name {name!r}: use letters, digits and _ . + - "
            "(starting with a letter or digit)"
        )
    if len(name) > MAX_NAME:
        raise ActwhError(
            f"invalid {kind} name {name[:20]}…: {len(name)} characters, at most {MAX_NAME}"
        )
    return name


def holding_warehouse(path: Path) -> Path | None:
    """The warehouse ``path`` lies in (or is), if any: the nearest folder with a marker."""
    return next((f for f in [path, *path.parents] if (f / MARKER).is_file()), None)


def outside(path: str | Path, argument: str) -> Path:
    """``path``, resolved, refused when it lies inside a warehouse (any: an output there could
    replace the warehouse's own files, or become a file no commit lists)."""
    target = Path(path).expanduser().resolve()
    home = holding_warehouse(target)
    if home is not None:
        raise ActwhError(f"{arg(argument)} {path}: inside the warehouse {home}; write it elsewhere")
    return target


def output_file(
    path: str | Path,
    argument: str,
    *,
    force: bool = False,
    ours: Callable[[Path], bool] | None = None,
) -> Path:
    """Where a command may write the file ``path``: not inside a warehouse, not a directory, not
    a symbolic link, and not over an existing file unless ``force`` or ``ours(path)`` says actwh
    wrote it. Write it with :func:`replacing`."""
    if Path(path).expanduser().is_symlink():
        raise BadInput(
            f"{arg(argument)} {path}: is a symbolic link; actwh writes no file through a link "
            "(give the file's own path)"
        )
    target = outside(path, argument)
    if target.is_dir():
        raise ActwhError(f"{arg(argument)} {path}: is a directory; give a file name")
    if target.exists() and not force and not (ours is not None and ours(target)):
        raise AlreadyExists(
            f"{arg(argument)} {path}: the file exists; pass {arg('force')} to replace it"
        )
    return target


@contextmanager
def replacing(target: Path) -> Iterator[BinaryIO]:
    """A new file through which to write ``target``, never through a link: created exclusively
    beside it (so a link planted under that name is never opened) and renamed over ``target``
    when the block ends (a rename replaces a link itself, not what it points to); removed if the
    block fails, so ``target`` is whole or as it was."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_file(target: str | Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) as the file ``target`` (see :func:`replacing`)."""
    with replacing(Path(target)) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def partition_key(table: str, partition: Mapping[str, object]) -> str:
    """A partition's folder, relative to the warehouse: ``data/TABLE/run=R/layer=L``."""
    return "/".join([DATA_DIR, table, *(f"{key}={value}" for key, value in partition.items())])


def partition_dir(root: Path, table: str, partition: dict[str, object]) -> Path:
    return root / partition_key(table, partition)


def file_name(writer_tag: str, commit_id: str) -> str:
    return f"part-{writer_tag}-{commit_id}.parquet"


def partition_values(relative: str) -> dict[str, str]:
    """A file's partition values, from its folders: ``data/residuals/run=base/layer=3/part-x
    .parquet`` → ``{"run": "base", "layer": "3"}``."""
    return dict(part.split("=", 1) for part in relative.split("/")[:-1] if "=" in part)


# Partition columns the catalog keeps for every file (commit_files), and their Python types.
PARTITION_COLUMNS = {"run": str, "model": str, "layer": int}


def catalog_partition(relative: str) -> dict[str, str | int | None]:
    """``commit_files``' partition columns of the file ``relative``: each of
    :data:`PARTITION_COLUMNS`, None where the file's table has no such partition."""
    found = partition_values(relative)
    return {
        column: None if column not in found else kind(found[column])
        for column, kind in PARTITION_COLUMNS.items()
    }


# Every name a writer gives a data file: final, unfinished, and unfinished before the "_" prefix.
# An ingestion worker's tag is its shard (s0of1); a compaction's is c and the output's index.
_FILE = re.compile(r"_?part-(s\d+of\d+|c\d+)-[0-9a-f]{4,32}\.parquet(\.tmp)?")


def is_data_file_name(name: str) -> bool:
    """Whether ``name`` is one a writer gives a data file (:func:`file_name`, :func:`tmp_path`)."""
    return _FILE.fullmatch(name) is not None


@contextmanager
def staged(out: Path, what: str) -> Iterator[Path]:
    """Where to build the new directory ``out``: a path beside it, renamed to ``out`` when the
    block ends without error and removed otherwise, so ``out`` is whole or absent. An I/O
    failure (permissions, a full disk) becomes one line naming ``out``."""
    if out.exists():
        raise AlreadyExists(f"{arg('out')} {out}: already exists; write {what} to a new directory")
    work = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield work / "result"
        (work / "result").rename(out)
    except OSError as error:
        reason = error.strerror or error
        raise ActwhError(f"{arg('out')} {out}: cannot write {what} ({reason})") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)


def tmp_path(final: Path) -> Path:
    """Where ``final`` is written before it is renamed into place."""
    return final.with_name(TMP_PREFIX + final.name + TMP_SUFFIX)


def all_files(root: Path) -> list[Path]:
    """Every Parquet file under ``data/``, finished or not, actwh's or not."""
    data = root / DATA_DIR
    if not data.exists():
        return []
    return sorted([*data.rglob("*.parquet"), *data.rglob("*.parquet" + TMP_SUFFIX)])


LOCK_FILE = "commits.lock"


@contextmanager
def commit_lock(root: Path, *, exclusive: bool) -> Iterator[None]:
    """Writers committing (shared) and a repair deleting what no commit lists (exclusive)
    exclude each other, so a repair never deletes a file a live writer is about to record.
    An advisory lock on ``WH/commits.lock``: on one machine, or a file system that keeps
    locks (NFS v4)."""
    import fcntl

    with open(root / LOCK_FILE, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def shown_url(url: str) -> str:
    """A catalog URL as it may be printed: its password hidden."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
