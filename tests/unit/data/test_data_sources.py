"""Source URIs, streaming readers, http(s) against a loopback server (s3://: test_data_s3_server.py)."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from maestro.workers.data import contract, sources
from maestro.workers.data.errors import InputError, SourceIOError

pytestmark = pytest.mark.unit


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.path == "/boom":
            self.send_error(500, "boom")
            return
        if self.path.startswith("/denied/"):
            self.send_error(403, "AccessDenied")
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"files": {}, "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_resolve_schemes(tmp_path: Path) -> None:
    env = {contract.ENV_PVC_ROOT: "/mnt/x"}
    assert sources.resolve("pvc://claim/a/b.jsonl", env) == sources.Location(
        "file", "/mnt/x/claim/a/b.jsonl", "b.jsonl"
    )
    assert sources.resolve("file:///data/d.csv", env).target == "/data/d.csv"
    assert sources.resolve("s3://bucket/k/d.parquet", env).scheme == "s3"
    assert sources.resolve("https://h/p/d.jsonl?x=1", env).name == "d.jsonl"
    for bad, msg in (
        ("pvc://claim", "pvc://<claim>/<path>"),
        ("pvc://c/../../etc/passwd", "escapes"),
        ("s3://bucket", "s3://<bucket>/<key>"),
        ("file://host/x", "must be local"),
    ):
        with pytest.raises(InputError, match=msg):
            sources.resolve(bad, env)


def test_infer_format() -> None:
    assert sources.infer_format("a.jsonl", None) == ("jsonl", None)
    assert sources.infer_format("a.csv.gz", None) == ("csv", "gzip")
    assert sources.infer_format("a.TXT", None) == ("text", None)
    assert sources.infer_format("blob", "parquet") == ("parquet", None)
    with pytest.raises(InputError, match=r"set spec\.source\.format"):
        sources.infer_format("blob.bin", None)


def test_iter_lines_streams_chunks_and_hashes_everything(tmp_path: Path) -> None:
    lines = [f"line {i} " + "x" * (i % 977) for i in range(5000)]
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / "big.txt.gz"
    path.write_bytes(gzip.compress(data))
    loc = sources.resolve(str(path))
    with sources.open_source(loc) as reader:
        got = [b.decode() for b in sources.iter_lines(sources.decompress(reader, "gzip"))]
        reader.drain()
        assert reader.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert got == lines


def test_corrupt_compressed_input_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"definitely not gzip")
    with (
        sources.open_source(sources.resolve(str(path))) as reader,
        pytest.raises(InputError, match="compressed"),
    ):
        list(sources.iter_lines(sources.decompress(reader, "gzip")))


def test_http_source_with_token_and_errors(server: tuple[str, type[_Handler]]) -> None:
    base, handler = server
    handler.files["/d.jsonl"] = b'{"text": "hello"}\n'
    env = {"MAESTRO_SOURCE_TOKEN": "tok-123"}
    with sources.open_source(sources.resolve(f"{base}/d.jsonl"), env) as reader:
        assert list(sources.iter_lines(reader)) == [b'{"text": "hello"}']
    assert handler.seen[-1]["authorization"] == "Bearer tok-123"
    with sources.open_source(
        sources.resolve(f"{base}/d.jsonl"), {**env, "MAESTRO_SOURCE_AUTHORIZATION": "Basic eDp5"}
    ):
        pass
    assert handler.seen[-1]["authorization"] == "Basic eDp5"
    with pytest.raises(InputError, match="404"), sources.open_source(sources.resolve(f"{base}/missing"), env):
        pass
    with pytest.raises(SourceIOError, match="500"), sources.open_source(sources.resolve(f"{base}/boom"), env):
        pass
    with (
        pytest.raises(SourceIOError),
        sources.open_source(sources.resolve("http://127.0.0.1:9/x.jsonl"), env),
    ):
        pass


def test_parquet_over_http_is_spooled(tmp_path: Path, server: tuple[str, type[_Handler]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from maestro.workers.data.pipeline import _rows_parquet

    pq.write_table(pa.table({"text": [f"row {i}" for i in range(10)]}), tmp_path / "t.parquet")
    base, handler = server
    handler.files["/t.parquet"] = (tmp_path / "t.parquet").read_bytes()
    loc = sources.resolve(f"{base}/t.parquet")
    with sources.open_source(loc) as reader, sources.local_copy(loc, reader, None) as path:
        rows = list(_rows_parquet(path))
        assert reader.hexdigest() == hashlib.sha256(handler.files["/t.parquet"]).hexdigest()
    assert rows[0] == (1, {"text": "row 0"}) and len(rows) == 10


def test_unknown_scheme_says_what_to_install() -> None:
    with (
        pytest.raises(InputError, match="no reader for"),
        sources.open_source(sources.resolve("foo://x/y.jsonl")),
    ):
        pass


def test_http_denied_names_the_secret_keys(server: tuple[str, type[_Handler]]) -> None:
    base, _ = server
    with (
        pytest.raises(InputError, match=r"HTTP 403; check source\.credentialsSecretRef .*SOURCE_TOKEN"),
        sources.open_source(sources.resolve(f"{base}/denied/x.jsonl"), {}),
    ):
        pass
