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
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from actwh.errors import ActwhError, BadInput, Damaged, NotFound

_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://")
# The object stores pyarrow.fs opens; a local path may also be given as file:///...
SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")
_SCHEME_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(/*)(.*)$", re.S)
# Seconds the first request to a store may take (a wrong endpoint, a credential lookup that
# waits for a metadata server) before it is one line instead of a hang.
TIMEOUT = float(os.environ.get("ACTWH_STORE_TIMEOUT", "30"))


class NoAnswer(ActwhError):
    """A store that did not answer within :data:`TIMEOUT`."""


def location(where: str | Path) -> Path | str:
    """Where a warehouse is, as every command takes it: a local directory (a path, or a
    ``file://`` URI) as an absolute path, or an object store URI (``s3://bucket/prefix``, the
    scheme in any case) as its normal form. A URI that is malformed (``s3:/bkt``, ``s3://``) or
    of a store actwh cannot open is refused, never taken for a folder named ``s3:``."""
    found = _SCHEME_LIKE.match(where) if isinstance(where, str) else None
    if found is None:
        return Path(where).expanduser().resolve()
    scheme, slashes, rest = found[1].lower(), found[2], found[3]
    if scheme == "file":
        parts = urlsplit(f"file:{slashes}{rest}")  # file:///abs/path: no host, the path
        if not slashes.startswith("//") or parts.netloc not in ("", "localhost"):
            raise BadInput(f"{where}: a malformed URI; a local path is file:///ABSOLUTE/PATH")
        return Path(unquote(parts.path)).resolve()
    if scheme in SCHEMES:
        if slashes != "//" or not rest.split("/", 1)[0]:
            raise BadInput(
                f"{where}: a malformed URI; an object store prefix is {scheme}://BUCKET/PREFIX"
            )
        return f"{scheme}://{rest}".rstrip("/")
    if slashes == "//":
        raise BadInput(
            f"{where}: actwh cannot open {found[1]}:// stores; it opens "
            f"{', '.join(s + '://' for s in SCHEMES)} and local paths"
        )
    return Path(where).expanduser().resolve()


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` (as :func:`location` gives it) names an object store prefix."""
    return isinstance(location, str) and bool(_URI.match(location))


def within(call, what: str, seconds: float | None = None):
    """``call()``'s result, or :class:`NoAnswer` naming ``what`` when it takes longer than
    ``seconds`` (default :data:`TIMEOUT`); it is left running, on a thread that does not keep
    the process alive."""
    import threading

    seconds = TIMEOUT if seconds is None else seconds
    done: list = []

    def run() -> None:
        try:
            done.append((True, call()))
        except BaseException as error:  # handed to the caller
            done.append((False, error))

    worker = threading.Thread(target=run, daemon=True, name="actwh-store")
    worker.start()
    worker.join(seconds)
    if not done:
        raise NoAnswer(
            f"{what}: no answer within {seconds:g} s (an endpoint that cannot be reached, or "
            "credentials that are being looked up; ACTWH_STORE_TIMEOUT sets the limit)"
        )
    ok, value = done[0]
    if not ok:
        raise value
    return value


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
            self.fs, self.base = within(lambda: pafs.FileSystem.from_uri(self.uri), self.uri)
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
            info = within(lambda: self.fs.get_file_info(bucket), self.uri)
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
