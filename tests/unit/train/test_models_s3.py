"""s3:// base models against a real S3 API (moto's server on loopback): download, cache, load, errors.

The trainer gets the keys and the endpoint as its pod does, from spec.baseModel.credentialsSecretRef
(AWS_* variables, AWS_ENDPOINT_URL for an S3-compatible server).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import s3server
from maestro.workers.train.config import ConfigError, parse_spec
from maestro.workers.train.models import load_model, load_tokenizer, resolve_base_model, select_precision
from s3server import S3Server

pytestmark = pytest.mark.unit
s3_server = s3server.s3_server  # the fixture (tests/s3server.py)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def s3_model(s3_server: S3Server, tiny_model: Path) -> str:
    """The tiny Llama uploaded file by file under s3://models/base/tiny-llama/."""
    s3_server.bucket("models")
    for name in _digests(tiny_model):
        s3_server.put("models", f"base/tiny-llama/{name}", (tiny_model / name).read_bytes())
    return "s3://models/base/tiny-llama/"


@pytest.fixture(autouse=True)
def _no_host_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the env passed in counts: nothing from this machine's AWS setup, no metadata probe."""
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


def test_s3_base_model_downloads_once_and_loads(
    s3_server: S3Server, s3_model: str, tiny_model: Path, tmp_path: Path
) -> None:
    import torch

    cache = tmp_path / "cache"
    path = resolve_base_model(s3_model, None, cache, env=s3_server.env())
    assert path == cache / "s3" / "models" / "base" / "tiny-llama"
    assert _digests(path) == _digests(tiny_model)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "no temporary copy left"

    # the cached copy is used as it is: no request (wrong keys would be refused)
    again = resolve_base_model(s3_model, None, cache, env=s3_server.env(AWS_SECRET_ACCESS_KEY="wrong"))
    assert again == path

    cfg = parse_spec({"baseModel": {"uri": s3_model}, "datasetRef": {"name": "ds"}, "method": "lora"})
    device = torch.device("cpu")
    tok = load_tokenizer(path)
    model = load_model(path, cfg, select_precision("auto", device, cfg.method), device)
    assert tok.pad_token_id is not None
    assert any(p.requires_grad for p in model.parameters())  # LoRA attached to the downloaded base


def test_s3_base_model_errors(s3_server: S3Server, s3_model: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"access denied.*baseModel\.credentialsSecretRef"):
        resolve_base_model(
            s3_model, None, tmp_path, env=s3_server.env(AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1")
        )
    for missing in ("s3://models/base/no-such-model/", "s3://no-such-bucket/base/"):
        with pytest.raises(ConfigError, match="no such bucket, or no objects under the prefix"):
            resolve_base_model(missing, None, tmp_path, env=s3_server.env())
    s3_server.put("models", "base/not-a-model/README.md", b"weights elsewhere")
    with pytest.raises(ConfigError, match="not a model directory"):
        resolve_base_model("s3://models/base/not-a-model", None, tmp_path, env=s3_server.env())
    assert not list((tmp_path / "s3").rglob("config.json")), "a failed download leaves no model behind"
