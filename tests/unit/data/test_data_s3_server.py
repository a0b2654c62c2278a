"""s3:// sources against a real S3 API (moto's server on loopback), through `maestro data validate`.

The worker gets its credentials and endpoint as a pod does: AWS_* variables from the
credentialsSecretRef (envFrom), AWS_ENDPOINT_URL pointing at the S3-compatible server.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import data_helpers
import pytest
from data_helpers import Run, chat

import s3server
from maestro.workers import storage
from maestro.workers.data import contract, sources
from maestro.workers.data.errors import InputError
from s3server import S3Server

pytestmark = pytest.mark.unit
run_validate = data_helpers.run_validate  # the fixtures, shared without a conftest.py
s3_server = s3server.s3_server


def _jsonl(n: int) -> bytes:
    return b"".join(
        (json.dumps(chat(f"question {i} about things", f"answer {i} with detail")) + "\n").encode()
        for i in range(n)
    )


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> str:
    return s3_server.bucket("datasets")


@pytest.fixture
def pod_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The process env of a validation pod whose credentialsSecretRef holds the server's keys."""
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe off AWS
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


def test_jsonl_source_pinned_by_sha256(pod_env: S3Server, bucket: str, run_validate: object) -> None:
    body = _jsonl(25)
    uri = pod_env.put(bucket, "support/2026-q3/d.jsonl", body)
    run: Run = run_validate(uri, {"source": {"sha256": hashlib.sha256(body).hexdigest()}})  # type: ignore[operator]
    assert run.code == contract.EXIT_OK and run.summary["records"]["kept"] == 25
    assert run.summary["sourceSha256"] == hashlib.sha256(body).hexdigest()
    assert run.report()["source"]["bytes"] == len(body)


def test_compressed_and_parquet_sources(
    pod_env: S3Server, bucket: str, run_validate: object, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    gz = gzip.compress(_jsonl(30))
    run: Run = run_validate(pod_env.put(bucket, "d.jsonl.gz", gz))  # type: ignore[operator]
    assert run.code == contract.EXIT_OK and run.summary["records"]["kept"] == 30
    assert run.summary["sourceSha256"] == hashlib.sha256(gz).hexdigest()  # of the bytes stored, not inflated

    # the production example's shape: chat records in a Parquet column, spooled to a local file
    path = tmp_path / "t.parquet"
    convs = [json.dumps(chat(f"parquet question {i}", f"parquet answer {i}")["messages"]) for i in range(40)]
    pq.write_table(pa.table({"conversation": convs}), path)
    data = path.read_bytes()
    run = run_validate(  # type: ignore[operator]
        pod_env.put(bucket, "support/transcripts.parquet", data),
        {
            "source": {"format": "parquet", "sha256": hashlib.sha256(data).hexdigest()},
            "schema": {"type": "chat", "messagesField": "conversation"},
        },
    )
    assert run.code == contract.EXIT_OK, run.summary
    assert run.summary["records"]["kept"] == 40


def test_sha256_mismatch_is_the_checksum_exit(pod_env: S3Server, bucket: str, run_validate: object) -> None:
    uri = pod_env.put(bucket, "pinned.jsonl", _jsonl(5))
    run: Run = run_validate(uri, {"source": {"sha256": "0" * 64}})  # type: ignore[operator]
    assert run.code == contract.EXIT_CHECKSUM_MISMATCH
    assert "checksum mismatch" in run.summary["reason"]


def test_missing_key_and_bucket_are_bad_input(pod_env: S3Server, bucket: str, run_validate: object) -> None:
    for uri in (f"s3://{bucket}/no/such.jsonl", "s3://no-such-bucket/d.jsonl"):
        run: Run = run_validate(uri)  # type: ignore[operator]
        assert run.code == contract.EXIT_BAD_INPUT, run.summary
        assert f"source not found: {uri}" in run.summary["reason"]


@pytest.mark.parametrize("wrong", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_wrong_credentials_name_the_secret(
    wrong: str, pod_env: S3Server, bucket: str, run_validate: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = pod_env.put(bucket, "private.jsonl", _jsonl(5))
    monkeypatch.setenv(wrong, "AKIAWRONGWRONGWRONG1" if wrong == "AWS_ACCESS_KEY_ID" else "not-the-secret")
    run: Run = run_validate(uri)  # type: ignore[operator]
    # the Secret is wrong, not the network: permanent until someone fixes it (like the https:// 401/403)
    assert run.code == contract.EXIT_BAD_INPUT, run.summary
    assert "access denied" in run.summary["reason"] and "credentialsSecretRef" in run.summary["reason"]


def test_temporary_credentials_need_their_session_token(pod_env: S3Server, bucket: str) -> None:
    uri = pod_env.put(bucket, "sts.jsonl", _jsonl(3))
    creds = pod_env.temporary_credentials()
    with sources.open_source(sources.resolve(uri), pod_env.env(**creds)) as reader:
        assert len(list(sources.iter_lines(reader))) == 3
    without = pod_env.env(**{**creds, "AWS_SESSION_TOKEN": ""})
    with (
        pytest.raises(InputError, match="credentialsSecretRef"),
        sources.open_source(sources.resolve(uri), without),
    ):
        pass


def test_unreachable_endpoint_is_retriable_io(
    pod_env: S3Server, run_validate: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries; the Job's backoff is the retry
    run: Run = run_validate("s3://datasets/d.jsonl")  # type: ignore[operator]
    assert run.code == contract.EXIT_IO_ERROR, run.summary
    assert dead in run.summary["reason"]


def test_sources_stream_in_blocks(pod_env: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large object is read in ranged blocks: what is buffered stays near one block, not the object."""
    monkeypatch.setattr(storage, "BLOCK_SIZE", 256 << 10)
    body = _jsonl(30_000)  # ~2.5 MiB
    assert len(body) > 8 * storage.BLOCK_SIZE
    uri = pod_env.put(bucket, "big.jsonl", body)
    with sources.open_source(sources.resolve(uri), pod_env.env()) as reader:
        raw = reader._raw
        first = reader.read(sources.CHUNK // 4)
        assert first == body[: len(first)]
        buffered = len(raw.cache.cache)  # fsspec's read-ahead cache of the open S3 file
        assert 0 < buffered <= storage.BLOCK_SIZE + len(first)
        reader.drain()
        assert reader.hexdigest() == hashlib.sha256(body).hexdigest() and reader.bytes_read == len(body)


def test_without_any_credentials_the_request_goes_unsigned(
    s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No keys in the Secret and none in botocore's chain: ask anonymously (public buckets), as before."""
    uri = s3_server.put(bucket, "public.jsonl", _jsonl(2))
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint}
    # this server authenticates every request, so an anonymous one is refused by the server (403),
    # not given up on in the client for want of keys
    with (
        pytest.raises(InputError, match="access denied") as exc,
        sources.open_source(sources.resolve(uri), env),
    ):
        pass
    assert "no usable credentials" not in str(exc.value), exc.value
