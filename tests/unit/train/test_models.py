from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from maestro.workers.train.config import ConfigError
from maestro.workers.train.models import ModelSourceError, resolve_base_model, select_precision

pytestmark = pytest.mark.unit


def test_local_and_pvc_uris(tiny_model: Path, tmp_path: Path) -> None:
    assert resolve_base_model(f"file://{tiny_model}", None, tmp_path, env={}) == tiny_model
    claim = tmp_path / "pvcs" / "models"
    shutil.copytree(tiny_model, claim / "llama" / "tiny")
    env = {"MAESTRO_PVC_ROOT": str(tmp_path / "pvcs")}
    assert resolve_base_model("pvc://models/llama/tiny", None, tmp_path, env=env) == claim / "llama" / "tiny"
    pre = {"MAESTRO_BASE_MODEL_DIR": str(tiny_model)}
    assert resolve_base_model("hf://ignored/when-pre-resolved", None, tmp_path, env=pre) == tiny_model


def test_hf_uri_resolves_from_the_offline_cache(tiny_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_model, snap)
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("0123abcd")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    assert resolve_base_model("hf://acme/tiny", None, tmp_path, env=env) == snap
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE is set"):
        resolve_base_model("hf://acme/not-cached", None, tmp_path, env=env)


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("file:///nonexistent/model", "no config.json"),
        ("gs://bucket/model", "unsupported scheme 'gs'"),
        ("pvc:///path", "pvc://<claim>/<path>"),
    ],
)
def test_unusable_uris_are_config_errors(uri: str, error: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=error):
        resolve_base_model(uri, None, tmp_path, env={})


def test_cpu_always_trains_in_fp32() -> None:
    import torch

    for requested in ("auto", "bf16", "fp16", "fp32"):
        p = select_precision(requested, torch.device("cpu"), "lora")
        assert (p.name, p.compute_dtype, p.use_scaler) == ("fp32", None, False)
