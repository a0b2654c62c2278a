"""maestro.workers.storage: pod env → s3fs/gcsfs options (the s3:// requests themselves are tested against
a real S3 server in tests/unit/data/test_data_s3_server.py and tests/unit/train/test_models_s3.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from maestro.workers import storage

pytestmark = pytest.mark.unit


def test_s3_options_follow_the_aws_variables() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "tok",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://minio:9000",
    }
    assert storage.s3_options(env) == {
        "key": "AKID",
        "secret": "secret",
        "token": "tok",
        "client_kwargs": {"region_name": "eu-west-1"},
        "endpoint_url": "http://minio:9000",
        "config_kwargs": {"s3": {"addressing_style": "path"}},
    }
    # the S3-specific names win, as in botocore
    both = {**env, "AWS_REGION": "us-west-2", "AWS_ENDPOINT_URL_S3": "https://s3.internal"}
    opts = storage.s3_options(both)
    assert opts["client_kwargs"] == {"region_name": "us-west-2"}
    assert opts["endpoint_url"] == "https://s3.internal"
    # no keys (or half of them): leave credentials to botocore's chain; AWS itself: virtual hosts
    assert storage.s3_options({"AWS_ACCESS_KEY_ID": "AKID"}) == {}
    fs = storage.filesystem("s3", {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"})
    assert (fs.key, fs.secret, fs.endpoint_url) == ("AKID", "s", None)


def _service_account() -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "acme-ml",
        "private_key_id": "1",
        "private_key": pem,
        "client_email": "datasets@acme-ml.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def test_gcs_credentials_as_a_file_or_as_the_secret_value(tmp_path: Path) -> None:
    """envFrom puts the Secret's JSON itself into GOOGLE_APPLICATION_CREDENTIALS; a mounted file works too."""
    pytest.importorskip("gcsfs")
    sa = _service_account()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(sa))
    for value in (json.dumps(sa), str(path)):
        fs = storage.filesystem("gs", {"GOOGLE_APPLICATION_CREDENTIALS": value})
        assert fs.credentials.credentials.service_account_email == sa["client_email"]
    with pytest.raises(PermissionError, match="invalid JSON"):
        storage.gcs_options({"GOOGLE_APPLICATION_CREDENTIALS": "{not json"})
    assert storage.gcs_options({}) == {}


def test_errors_come_out_as_the_builtin_os_errors() -> None:
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    uri = "s3://b/k"
    assert isinstance(storage.as_os_error(NoCredentialsError(), uri), PermissionError)
    partial = storage.as_os_error(
        PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), uri
    )
    assert isinstance(partial, PermissionError)
    down = storage.as_os_error(EndpointConnectionError(endpoint_url="http://x"), uri)
    assert type(down) is OSError and "EndpointConnectionError" in str(down)
    missing = FileNotFoundError("k")
    assert storage.as_os_error(missing, uri) is missing
    with pytest.raises(ValueError, match="nosuch"):
        storage.open_read("nosuch://b/k", {})
