"""Open a dataset source by URI and stream it, hashing the raw bytes on the way.

Schemes: local paths and `file://`, `pvc://claim/path` (mounted under MAESTRO_PVC_ROOT), `http(s)://`
(stdlib, optional bearer token), and `s3://`, `gs://` or anything else fsspec has a filesystem for,
through maestro.workers.storage (s3fs/gcsfs, credentials and a custom S3 endpoint from the
credentialsSecretRef env). Memory stays flat: sources are read in 1 MiB chunks (object stores in
ranged GETs of storage.BLOCK_SIZE); Parquet, which needs random access, is spooled to a temporary file
first when it is not local.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, cast

from maestro.workers import storage
from maestro.workers.data.contract import DEFAULT_PVC_ROOT, ENV_PVC_ROOT
from maestro.workers.data.errors import DataWorkerError, InputError, SourceIOError

CHUNK = 1 << 20
FORMATS = ("jsonl", "csv", "parquet", "text")
_EXT_FORMAT = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
}
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz"}


@dataclass(frozen=True)
class Location:
    scheme: str  # "file", "http", "s3", "fsspec"
    target: str  # local path, URL, or the URI itself
    name: str  # last path component, for format/compression inference


def resolve(uri: str, env: Mapping[str, str] | None = None) -> Location:
    """Map a source URI to where the bytes are; raises InputError for unusable URIs."""
    env = os.environ if env is None else env
    if not uri:
        raise InputError("spec.source.uri is empty")
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file"):
        path = urllib.parse.unquote(parsed.path) if scheme == "file" else uri
        if scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise InputError(f"file:// URIs must be local (file:///path), got {uri!r}")
        return Location("file", path, os.path.basename(path))
    if scheme == "pvc":
        claim, rel = parsed.netloc, parsed.path.lstrip("/")
        if not claim or not rel:
            raise InputError(f"pvc:// URIs look like pvc://<claim>/<path>, got {uri!r}")
        root = env.get(ENV_PVC_ROOT, DEFAULT_PVC_ROOT)
        path = os.path.normpath(os.path.join(root, claim, rel))
        if not path.startswith(os.path.normpath(os.path.join(root, claim)) + os.sep):
            raise InputError(f"pvc:// path escapes the claim: {uri!r}")
        return Location("file", path, os.path.basename(path))
    if scheme in ("http", "https"):
        return Location("http", uri, os.path.basename(parsed.path))
    if scheme == "s3":
        if not parsed.netloc or not parsed.path.strip("/"):
            raise InputError(f"s3:// URIs look like s3://<bucket>/<key>, got {uri!r}")
        return Location("s3", uri, os.path.basename(parsed.path))
    return Location("fsspec", uri, os.path.basename(parsed.path))


def infer_format(name: str, declared: str | None) -> tuple[str, str | None]:
    """(format, compression) from the spec's `format` or the file name; InputError when unknowable."""
    stem, compression = name, None
    for ext, comp in _COMPRESSION.items():
        if stem.lower().endswith(ext):
            stem, compression = stem[: -len(ext)], comp
            break
    if declared and declared != "auto":
        if declared not in FORMATS:
            raise InputError(f"spec.source.format {declared!r} is not one of {', '.join(FORMATS)}")
        return declared, compression
    ext = os.path.splitext(stem)[1].lower()
    fmt = _EXT_FORMAT.get(ext)
    if fmt is None:
        raise InputError(
            f"cannot infer the format of {name!r} from its extension; set spec.source.format to one of "
            f"{', '.join(FORMATS)}"
        )
    return fmt, compression


class HashingReader(io.RawIOBase):
    """A read-only stream that feeds every byte it returns into sha256 (for the source checksum)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._raw.read(size if size is not None and size >= 0 else CHUNK * 64)
        except DataWorkerError:
            raise
        except Exception as exc:  # OSError, URLError, or what an object-store client raises mid-stream
            raise SourceIOError(f"reading the source failed after {self.bytes_read} bytes: {exc}") from exc
        if data:
            self.sha256.update(data)
            self.bytes_read += len(data)
        return data

    def drain(self) -> None:
        """Read to EOF so the checksum covers the whole source even if parsing stopped early."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


@contextlib.contextmanager
def open_source(loc: Location, env: Mapping[str, str] | None = None) -> Iterator[HashingReader]:
    """The raw (still compressed) byte stream, wrapped in a HashingReader."""
    env = os.environ if env is None else env
    try:
        raw: IO[bytes]
        if loc.scheme == "file":
            if os.path.isdir(loc.target):
                raise InputError(f"source {loc.target!r} is a directory; point spec.source.uri at a file")
            raw = open(loc.target, "rb")  # noqa: SIM115 - closed below
        elif loc.scheme == "http":
            raw = _open_http(loc.target, env)
        else:  # s3 and every other fsspec scheme
            raw = _open_object(loc.target, env)
    except FileNotFoundError as exc:
        raise InputError(f"source not found: {loc.target} ({exc.strerror})") from exc
    except PermissionError as exc:
        raise SourceIOError(f"no permission to read {loc.target}: {exc.strerror}") from exc
    except OSError as exc:
        raise SourceIOError(f"cannot open {loc.target}: {exc}") from exc
    try:
        yield HashingReader(raw)
    finally:
        raw.close()


def decompress(reader: IO[bytes] | HashingReader, compression: str | None) -> IO[bytes]:
    raw = cast(IO[bytes], reader)
    if compression is None:
        return raw
    if compression == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if compression == "bz2":
        return cast(IO[bytes], bz2.BZ2File(raw, mode="rb"))
    return cast(IO[bytes], lzma.LZMAFile(raw, mode="rb"))


def iter_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """Lines without their terminator, read in 1 MiB chunks (far faster than per-line reads)."""
    tail = b""
    while True:
        try:
            chunk = stream.read(CHUNK)
        except (EOFError, OSError, lzma.LZMAError) as exc:
            if isinstance(exc, SourceIOError):
                raise
            raise InputError(f"the source is not valid compressed data: {exc}") from exc
        if not chunk:
            break
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from lines
    if tail:
        yield tail


@contextlib.contextmanager
def local_copy(loc: Location, reader: HashingReader, compression: str | None) -> Iterator[str]:
    """A local, seekable, decompressed path for formats that need random access (Parquet)."""
    if loc.scheme == "file" and compression is None:
        reader.drain()  # hash the file; pyarrow then reads it from the page cache
        yield loc.target
        return
    with tempfile.NamedTemporaryFile(prefix="maestro-src-", suffix=".parquet") as tmp:
        try:
            shutil.copyfileobj(decompress(reader, compression), tmp, CHUNK)
            tmp.flush()
        except OSError as exc:
            raise SourceIOError(f"spooling the source to {tmp.name} failed: {exc}") from exc
        yield tmp.name


# --- remote openers --------------------------------------------------------------------------------


def _open_http(url: str, env: Mapping[str, str]) -> IO[bytes]:
    headers = {"User-Agent": "maestro-data-worker"}
    token = env.get("MAESTRO_SOURCE_TOKEN") or env.get("HF_TOKEN")
    if env.get("MAESTRO_SOURCE_AUTHORIZATION"):  # a full header value, e.g. "Basic …"
        headers["Authorization"] = env["MAESTRO_SOURCE_AUTHORIZATION"]
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return _urlopen(urllib.request.Request(url, headers=headers), url)


def _urlopen(req: urllib.request.Request, shown: str) -> IO[bytes]:
    try:
        resp: IO[bytes] = urllib.request.urlopen(req, timeout=60)
        return resp
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise InputError(
                f"{shown}: HTTP {exc.code}; check source.credentialsSecretRef (the worker sends "
                "MAESTRO_SOURCE_AUTHORIZATION, or MAESTRO_SOURCE_TOKEN as a bearer token, for https://)"
            ) from exc
        if exc.code == 404:
            raise InputError(f"{shown}: HTTP 404, no such object") from exc
        raise SourceIOError(f"{shown}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SourceIOError(f"{shown}: {getattr(exc, 'reason', exc)}") from exc


def _open_object(uri: str, env: Mapping[str, str]) -> IO[bytes]:
    """An object-store source (s3://, gs://, ...), streamed; errors say what to fix."""
    scheme = storage.protocol_of(uri)
    try:
        return storage.open_read(uri, env)
    except ImportError as exc:
        raise InputError(f"no reader for {scheme}:// sources: {exc}") from exc
    except ValueError as exc:  # fsspec knows no such protocol
        raise InputError(
            f"no reader for {scheme}:// sources ({exc}); use s3://, gs://, https://, pvc:// or file://, "
            f"or install the fsspec backend for {scheme}"
        ) from exc
    except FileNotFoundError as exc:
        raise InputError(f"source not found: {uri} (no such bucket or object: {exc})") from exc
    except PermissionError as exc:
        raise InputError(
            f"{uri}: access denied ({exc}); check source.credentialsSecretRef (the worker reads AWS_* keys "
            "for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://)"
        ) from exc
    except OSError as exc:
        raise SourceIOError(f"cannot open {uri}: {exc}") from exc
