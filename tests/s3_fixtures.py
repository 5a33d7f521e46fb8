"""An S3 API on the loopback address for the bucket tests: moto's threaded server, port 0.

`s3` starts one server per test session (stopped at teardown) and gives each test its own
bucket and a clean ``$PTG_CACHE``; credentials and the endpoint reach ptg only through the
standard ``AWS_*`` environment variables, as they would on a cluster. `CutProxy` sits between the
client and the server and drops the connection of any request that sends more than a set number
of bytes (a connection lost mid-upload).
"""
from __future__ import annotations

import itertools
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

_N = itertools.count()


@dataclass
class S3:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str  # this test's bucket

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


@pytest.fixture(scope="session")
def _moto_endpoint():
    pytest.importorskip("moto.server", reason="the bucket tests need moto[server] (the dev extra)")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _set_env(monkeypatch, endpoint: str) -> None:
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def s3(_moto_endpoint, monkeypatch, tmp_path) -> S3:
    """A fresh bucket on the loopback S3 server; AWS_* and PTG_CACHE set for this test only."""
    import boto3

    _set_env(monkeypatch, _moto_endpoint)
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "ptg-cache"))
    bucket = f"ptg-test-{next(_N)}"
    boto3.client("s3", endpoint_url=_moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return S3(_moto_endpoint, bucket)


class CutProxy:
    """A loopback TCP proxy to ``target``. While ``cut_match`` is set (e.g. ``b"/priors/c/"``), a request
    whose head holds it is cut 64 bytes into its body: the connection drops mid-upload."""

    def __init__(self, target: str):
        host, port = target.rsplit("//", 1)[-1].split(":")
        self.target = (host, int(port))
        self.cut_match: bytes | None = None
        self.cuts = 0
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.2)
        self.endpoint = f"http://127.0.0.1:{self._srv.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except OSError:
                continue
            upstream = socket.create_connection(self.target, timeout=10)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, upload: bool) -> None:
        sent, limit = 0, None  # bytes forwarded; where to cut this connection
        try:
            while data := a.recv(65536):
                match = self.cut_match
                if upload and match is not None and limit is None and (i := data.find(match)) >= 0:
                    head_end = data.find(b"\r\n\r\n", i)
                    limit = sent + (head_end + 4 if head_end >= 0 else len(data)) + 64
                if limit is not None and sent + len(data) > limit:
                    b.sendall(data[: limit - sent])
                    self.cuts += 1
                    break
                b.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._srv.close()


@pytest.fixture
def cut_proxy(s3, monkeypatch):
    """A `CutProxy` in front of the S3 server; AWS_ENDPOINT_URL points at it for this test."""
    proxy = CutProxy(s3.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    yield proxy
    proxy.close()


class Where:
    """One store of the parametrised store suite, in a local folder or in a bucket on the loopback server.

    Tests write through `writer` (a local folder: its writer lock; a bucket: `staged_writer`, the lease
    and the engine on the local stage, pushed on exit), read through `url` (a bucket: its verified
    mirror) and damage the stored bytes through `damage` (a bucket: its objects, rewritten in place).
    """

    def __init__(self, kind: str, tmp_path, s3: S3 | None = None, name: str = "s.zarr", monkeypatch=None):
        self.kind, self.tmp_path, self._s3, self._mp = kind, tmp_path, s3, monkeypatch
        self.url = tmp_path / name if s3 is None else s3.url(name)

    def __repr__(self) -> str:
        return f"Where({self.kind})"

    @property
    def remote(self) -> bool:
        return self._s3 is not None

    @contextmanager
    def writer(self, force: bool = False):
        """The folder the store engine writes (the store itself, or the bucket's stage under its lease)."""
        from ptg.pipeline.storage.store import writer_lock
        from ptg.pipeline.storage.storecopy import staged_writer

        if not self.remote:
            with writer_lock(self.url, force=force):
                yield self.url
            return
        with staged_writer(self.url, force=force) as stage, writer_lock(stage, force=force):
            yield stage

    def damage(self, edit) -> None:
        """Apply ``edit(folder)`` to the stored bytes: the folder itself, or the bucket's objects
        downloaded raw (no verification), edited, and written back (changed and deleted objects).

        After a bucket's damage, this test's readers and writers are another machine's (a fresh
        ``$PTG_CACHE``): they pull the damaged objects rather than reuse the good mirror and stage."""
        if not self.remote:
            edit(self.url)
            return
        from ptg.pipeline.storage.remote import RemoteStore

        store = RemoteStore(self.url)
        raw = self.tmp_path / f"raw-{next(_N)}"
        before = {}
        for key in store.listing():
            before[key] = store.get(key, limit=1 << 30)
            (raw / key).parent.mkdir(parents=True, exist_ok=True)
            (raw / key).write_bytes(before[key])
        edit(raw)
        for key, data in before.items():
            if not (raw / key).is_file():
                store.delete(key)
            elif (raw / key).read_bytes() != data:
                store.put(key, (raw / key).read_bytes())
        self._mp.setenv("PTG_CACHE", str(self.tmp_path / f"ptg-cache-{next(_N)}"))


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path) -> Where:
    """The store suite's arm: a local folder, or a bucket on the loopback S3 server."""
    if request.param == "local":
        return Where("local", tmp_path)
    return Where("s3", tmp_path, request.getfixturevalue("s3"), monkeypatch=request.getfixturevalue("monkeypatch"))
