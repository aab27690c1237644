"""A warehouse on an object store: its files as keys under a URI prefix (``s3://bucket/wh``).

pyarrow.fs does the I/O — the file system layer actwh already depends on (no other package to
install), with multipart uploads and the AWS SDK's own credential chain: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` (an S3-compatible server such as
MinIO or Ceph), profiles and instance roles. Nothing of them is stored in the catalog or printed.
Queries read the same keys through the same client (pyarrow's datasets, see
:mod:`actwh.warehouse.pruning`), so no DuckDB extension has to be downloaded.

An object store has no rename and no locks. A commit uploads each file whole under its final,
unique key (an upload is atomic: a key holds all of it or nothing), then records the files in the
catalog in one transaction: the catalog is the commit point. Keys no commit lists are orphans:
readers never open them, and ``actwh check --repair`` deletes them once they are older than its
grace period.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from actwh.errors import ActwhError, Damaged, NotFound

_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://")


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` names an object store prefix (``s3://...``), not a local path."""
    return (
        isinstance(location, str)
        and bool(_URI.match(location))
        and not location.startswith("file://")
    )


def _reason(error: BaseException) -> str:
    """The first line of an error, without the SDK's request ids."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", text)


class ObjectStore:
    """The keys under one URI prefix: read, write whole, list, delete."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.scheme = _URI.match(self.uri)[1]  # type: ignore[index]  # is_uri(uri) holds
        try:
            self.fs, self.base = pafs.FileSystem.from_uri(self.uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as error:
            reason = _reason(error)
            raise ActwhError(f"{self.uri}: not an object store actwh can open ({reason})") from None
        self.base = self.base.rstrip("/")

    def __repr__(self) -> str:
        return f"ObjectStore({self.uri!r})"

    def url(self, relative: str) -> str:
        return f"{self.uri}/{relative}"

    def key(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def error(self, error: BaseException, relative: str = "") -> ActwhError:
        """One line naming the URI: wrong credentials, a missing bucket, an endpoint down."""
        where = self.url(relative) if relative else self.uri
        return ActwhError(f"{where}: {_reason(error)}")

    def info(self, relative: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self.key(relative))
        except OSError as error:
            raise self.error(error, relative) from error

    def exists(self, relative: str) -> bool:
        return self.info(relative).type == pafs.FileType.File

    def read_bytes(self, relative: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.key(relative)) as f:
                return f.read()
        except FileNotFoundError as error:
            raise NotFound(f"{self.url(relative)}: no such object") from error
        except OSError as error:
            raise self.error(error, relative) from error

    def put(self, relative: str, data: bytes) -> None:
        """Upload ``data`` whole under ``relative`` (a reader sees all of it or nothing)."""
        try:
            with self.fs.open_output_stream(self.key(relative)) as f:
                f.write(data)
        except OSError as error:
            raise self.error(error, relative) from error

    def delete(self, relative: str) -> None:
        try:
            self.fs.delete_file(self.key(relative))
        except FileNotFoundError:
            pass
        except OSError as error:
            raise self.error(error, relative) from error

    def listing(self, prefix: str = "") -> list[tuple[str, float, int]]:
        """Every object under ``prefix``: (relative key, modified at (epoch s), size)."""
        where = self.key(prefix) if prefix else self.base
        try:
            selector = pafs.FileSelector(where, recursive=True, allow_not_found=True)
            found = self.fs.get_file_info(selector)
        except OSError as error:
            raise self.error(error, prefix) from error
        start = len(self.base) + 1
        return sorted(
            (f.path[start:], f.mtime.timestamp() if f.mtime else 0.0, f.size or 0)
            for f in found
            if f.type == pafs.FileType.File
        )

    def check_reachable(self) -> None:
        """Fail now, naming the URI, when the bucket cannot be listed (credentials, a missing
        bucket, an endpoint that is down)."""
        bucket = self.base.split("/", 1)[0]
        try:
            info = self.fs.get_file_info(bucket)
        except OSError as error:
            raise self.error(error) from error
        if info.type == pafs.FileType.NotFound:
            raise NotFound(f"{self.uri}: the bucket {bucket} does not exist")
        self.listing(".never")  # a listing needs the credentials a HEAD of the bucket may not

    def local_copy(self, relative: str, sha256: str | None = None) -> Path:
        """A local copy of an object (a FAISS index, a readout: libraries that open files).
        Cached under ``ACTWH_CACHE/objects`` by its content hash when given (checked after the
        download), else by its URL, size and modification time: a changed object is fetched
        again, an unchanged one never."""
        if sha256 is None:
            info = self.info(relative)
            if info.type != pafs.FileType.File:
                raise NotFound(f"{self.url(relative)}: no such object")
            stamp = f"{self.url(relative)}\0{info.size}\0{info.mtime_ns}"
            sha256_key = hashlib.sha256(stamp.encode()).hexdigest()
        else:
            sha256_key = sha256
        cache = Path(os.environ.get("ACTWH_CACHE", Path.home() / ".cache" / "actwh")) / "objects"
        target = cache / sha256_key[:32] / Path(relative).name
        if not target.is_file():
            data = self.read_bytes(relative)
            if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
                raise Damaged(
                    f"{self.url(relative)}: its checksum differs from the catalog's (run: actwh "
                    "check WH)"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return target
