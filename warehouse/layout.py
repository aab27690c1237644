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

import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from actwh.errors import ActwhError, arg

FORMAT_VERSION = "1"
MARKER = "warehouse.json"
CATALOG_FILE = "catalog.duckdb"
DATA_DIR = "data"
INDEX_DIR = "index"
TMP_PREFIX = "_"  # directory readers (Spark, Trino, Hive) skip names starting with _ or .
TMP_SUFFIX = ".tmp"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


MAX_NAME = 128  # a directory name (run=NAME) must stay well under the file system's 255 bytes


def check_name(kind: str, name: str) -> str:
    """Names of runs, models and prompt sets become directory names: keep them path-safe."""
    if not _NAME.match(name or ""):
        raise ActwhError(
            f"invalid {kind} name {name!r}: use letters, digits and _ . + - "
            "(starting with a letter or digit)"
        )
    if len(name) > MAX_NAME:
        raise ActwhError(
            f"invalid {kind} name {name[:20]}…: {len(name)} characters, at most {MAX_NAME}"
        )
    return name


def natural_key(name: str) -> list:
    """Sort key that compares the numbers inside names as numbers: ``dx.2`` before ``dx.10``."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)
    ]


def outside(path: str | Path, root: Path, argument: str) -> Path:
    """``path``, resolved, refused when it lies inside the warehouse at ``root`` (an output file
    there could replace the warehouse's own files)."""
    target = Path(path).expanduser().resolve()
    if target == root or root in target.parents:
        raise ActwhError(f"{arg(argument)} {path}: inside the warehouse {root}; write it elsewhere")
    return target


def partition_dir(root: Path, table: str, partition: dict[str, object]) -> Path:
    path = root / DATA_DIR / table
    for key, value in partition.items():
        path = path / f"{key}={value}"
    return path


def file_name(writer_tag: str, commit_id: str) -> str:
    return f"part-{writer_tag}-{commit_id}.parquet"


@contextmanager
def staged(out: Path, what: str) -> Iterator[Path]:
    """Where to build the new directory ``out``: a path beside it, renamed to ``out`` when the
    block ends without error and removed otherwise, so ``out`` is whole or absent. An I/O
    failure (permissions, a full disk) becomes one line naming ``out``."""
    if out.exists():
        raise ActwhError(f"{arg('out')} {out}: already exists; write {what} to a new directory")
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


def writer_files(root: Path, writer_tag: str) -> list[Path]:
    """Every data file (committed or not, finished or not) a writer with this tag produced.
    Unfinished ones from before the ``_`` prefix (``part-*.parquet.tmp``) are found too."""
    data = root / DATA_DIR
    if not data.exists():
        return []
    pattern = f"part-{writer_tag}-*.parquet"
    unfinished = [*data.rglob(pattern + TMP_SUFFIX), *data.rglob(TMP_PREFIX + pattern + TMP_SUFFIX)]
    return sorted([*data.rglob(pattern), *unfinished])


def all_files(root: Path) -> list[Path]:
    data = root / DATA_DIR
    if not data.exists():
        return []
    return sorted([*data.rglob("*.parquet"), *data.rglob("*.parquet" + TMP_SUFFIX)])
