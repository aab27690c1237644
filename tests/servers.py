"""Servers some tests need, started from registry packages and stopped after: PostgreSQL (Debian's
package) for a server catalog, and an S3-compatible object store (moto's standalone server, from
PyPI). Each start that cannot happen is a skip that says why."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A PostgreSQL server in a temporary directory; :meth:`database` makes a database on it."""

    def __init__(self):
        pytest.importorskip(
            "psycopg", reason="psycopg is not installed (pip install 'actwh[postgres]')"
        )
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bins:
            pytest.skip("no PostgreSQL server binaries (Debian package: postgresql)")
        self.bin = bins[-1]
        # Not under pytest's temporary directory: PostgreSQL refuses to run as root, and the
        # postgres user cannot enter root's private temporary directories.
        self.root = Path(tempfile.mkdtemp(prefix="actwh-postgres-"))
        self.data, self.port = self.root / "data", free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        try:
            for command in (
                [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "actwh"],
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log")]
                + ["-w", "-o", options, "start"],
            ):
                done = subprocess.run([*self.as_postgres, *command], capture_output=True, text=True)
                if done.returncode:
                    self.stop()
                    last = done.stderr.strip().splitlines()[-1:]
                    pytest.skip(f"could not start PostgreSQL: {last}")
        except FileNotFoundError as error:
            pytest.skip(f"could not start PostgreSQL: {error}")

    def database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "actwh"]
            + [name],
            check=True,
            capture_output=True,
        )
        return f"postgresql+psycopg://actwh@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        stop = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
        subprocess.run([*self.as_postgres, *stop], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


class S3:
    """moto's standalone S3 server on a free port; :meth:`bucket` makes a bucket on it.

    ``env`` is what a client needs (the usual AWS variables): tests set it in ``os.environ``
    for themselves and for the commands they run."""

    def __init__(self, unchecked_requests: int | None = None):
        """``unchecked_requests``: moto checks credentials after this many requests (its
        ``INITIAL_NO_AUTH_ACTION_COUNT``; it knows no key, so later requests are refused);
        None: it never checks them."""
        pytest.importorskip(
            "moto.server", reason="moto is not installed (pip install 'moto[server]')"
        )
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if unchecked_requests is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(unchecked_requests)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.skip("could not start moto's S3 server")
                time.sleep(0.2)
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",  # polars' client: the test server speaks http
        }

    def bucket(self, name: str) -> str:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


_REQUEST = re.compile(rb"(GET|HEAD|PUT|POST|DELETE) /\S* HTTP/1\.[01]\r\n")


class Proxy:
    """A TCP proxy in front of a server (``127.0.0.1:port``): it counts the bytes the server
    sends (what a client fetched) and the HTTP requests clients make (by method), and
    :meth:`cut` drops every connection and refuses new ones (an endpoint that dies), until
    :meth:`restore`."""

    def __init__(self, target_port: int):
        import threading

        self.target = target_port
        self.port = free_port()
        self.fetched = 0  # bytes from the server to clients
        self.sent = 0  # bytes from clients to the server
        self.requests: collections.Counter = collections.Counter()  # HTTP requests by method
        self.cut_at: int | None = None  # cut once clients have sent this many bytes
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            threading.Thread(target=self._pipe, args=(client, server, "sent"), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(server, client, "fetched"), daemon=True
            ).start()

    def reset(self) -> None:
        """Start counting bytes and requests from zero."""
        with self._lock:
            self.fetched, self.sent = 0, 0
            self.requests = collections.Counter()

    def _pipe(self, source: socket.socket, sink: socket.socket, counter: str) -> None:
        tail = b""  # a request line may straddle two reads
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
                seen = tail + data
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(data))
                    if counter == "sent":
                        for found in _REQUEST.finditer(seen):
                            if found.end() > len(tail):  # not counted with the last read
                                self.requests[found[1].decode()] += 1
                    dies = self.cut_at is not None and self.sent >= self.cut_at
                tail = seen[-64:]
                if dies:
                    self.cut_at = None
                    self.cut()
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
