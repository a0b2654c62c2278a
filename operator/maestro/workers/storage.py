"""Object storage for the workers: `s3://` and `gs://` through fsspec (s3fs, gcsfs).

One place maps the environment a worker pod receives onto filesystem options, so the data worker
(dataset sources) and the trainer (base models) read buckets the same way. The credentials come
from the object's `credentialsSecretRef`, which the builders mount with `envFrom`:

- `s3://`: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (or
  `AWS_DEFAULT_REGION`) and `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` for S3-compatible servers
  (MinIO, Ceph, R2), which are addressed path-style. Without keys, botocore's own chain applies (web
  identity, instance profile); when that finds nothing either, the request goes unsigned, for public
  buckets.
- `gs://`: `GOOGLE_APPLICATION_CREDENTIALS`, either a path to a service-account JSON file or, as a
  Secret key mounted with `envFrom` holds it, the JSON itself; unset, Google's default credentials.

Errors come out as the builtin OSError family, so each worker maps them to its exit codes without
knowing the backend: FileNotFoundError (no such bucket/object), PermissionError (credentials
refused or missing), any other OSError (network, server). A missing backend raises ImportError.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar

#: Read-ahead block for streaming: one ranged GET per block, so memory stays at about this much
#: however large the object is (s3fs defaults to 50 MiB).
BLOCK_SIZE = 16 << 20
#: What each backend needs installed; the worker image ships both (the `data` and `train` extras).
BACKENDS = {"s3": "s3fs", "gs": "gcsfs"}
T = TypeVar("T")


def protocol_of(uri: str) -> str:
    return urllib.parse.urlsplit(uri).scheme.lower()


def s3_options(env: Mapping[str, str]) -> dict[str, Any]:
    """s3fs options from the AWS_* variables (explicit, so an `env` other than os.environ works)."""
    opts: dict[str, Any] = {}
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        opts |= {"key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
        if env.get("AWS_SESSION_TOKEN"):
            opts["token"] = env["AWS_SESSION_TOKEN"]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        opts["client_kwargs"] = {"region_name": region}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["endpoint_url"] = endpoint
        # MinIO & co. serve buckets under the path; virtual hosts would need wildcard DNS
        opts["config_kwargs"] = {"s3": {"addressing_style": "path"}}
    return opts


def gcs_options(env: Mapping[str, str]) -> dict[str, Any]:
    creds = (env.get("GOOGLE_APPLICATION_CREDENTIALS") or "").strip()
    if not creds:
        return {}
    if creds.startswith("{"):
        try:
            return {"token": json.loads(creds)}
        except ValueError as exc:
            raise PermissionError(f"GOOGLE_APPLICATION_CREDENTIALS holds invalid JSON: {exc}") from None
    return {"token": creds}


def filesystem(protocol: str, env: Mapping[str, str], **extra: Any) -> Any:
    """A fresh fsspec filesystem for `protocol` configured from `env`.

    Not fsspec's cached instance: a worker reads one source per process, and a cached instance
    would keep directory listings and credentials from an earlier call (tests, retries).
    """
    import fsspec

    opts: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        opts = s3_options(env)
    elif protocol in ("gs", "gcs"):
        opts = gcs_options(env)
    try:
        return fsspec.filesystem(protocol, skip_instance_cache=True, **opts, **extra)
    except ImportError as exc:
        backend = BACKENDS.get(protocol, f"an fsspec backend for {protocol}://")
        raise ImportError(
            f"{protocol}:// needs {backend} installed (the worker image has it): {exc}"
        ) from exc


def open_read(uri: str, env: Mapping[str, str], block_size: int | None = None) -> IO[bytes]:
    """Open an object for streaming reads (ranged GETs of `block_size`, never the whole object)."""
    size = block_size or BLOCK_SIZE

    def open_(fs: Any) -> IO[bytes]:
        f: IO[bytes] = fs.open(uri, "rb", block_size=size, cache_type="readahead")
        return f

    return _call(uri, env, open_)


def download(uri: str, dest: str, env: Mapping[str, str]) -> None:
    """Copy every object under the prefix `uri` into the local directory `dest`."""
    _call(uri, env, lambda fs: fs.get(uri.rstrip("/") + "/", dest.rstrip("/") + "/", recursive=True))


def _call(uri: str, env: Mapping[str, str], fn: Callable[[Any], T]) -> T:
    """`fn(filesystem)`, with errors as OSErrors; for s3 without any credentials, retried unsigned."""
    protocol = protocol_of(uri)
    try:
        return fn(filesystem(protocol, env))
    except Exception as exc:
        if not (_no_credentials(exc) and protocol in ("s3", "s3a")):
            raise as_os_error(exc, uri) from exc
    # no keys and nothing in botocore's chain: ask unsigned, as for a public bucket
    try:
        return fn(filesystem(protocol, env, anon=True))
    except Exception as exc:
        raise as_os_error(exc, uri) from exc


def _no_credentials(exc: BaseException) -> bool:
    """botocore found no credentials at all (a key without its secret is an error, not anonymous)."""
    return type(exc).__name__ == "NoCredentialsError"


def as_os_error(exc: BaseException, uri: str) -> BaseException:
    """The builtin OSError that says what happened; ImportError and ValueError pass through."""
    if isinstance(exc, (OSError, ImportError, ValueError)):
        return exc
    name = type(exc).__name__
    if name in {"NoCredentialsError", "PartialCredentialsError", "RefreshError", "DefaultCredentialsError"}:
        return PermissionError(f"{uri}: no usable credentials ({name}: {exc})")
    # botocore's EndpointConnectionError & co. are not OSErrors; aiohttp's and google-auth's may not be
    return OSError(f"{uri}: {name}: {exc}")
