"""The worker image installs what examples/production/ needs: a backend for every source and base-model
scheme they use, and bitsandbytes for qlora (issue 16: the shipped image could not run them).

The image installs exactly `images/requirements.py pyproject.toml data train`; this reads the same list.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
#: What the workers import for each URI scheme (maestro.workers.storage, train/models.py).
SCHEME_NEEDS = {"s3": {"s3fs"}, "gs": {"gcsfs"}, "hf": {"huggingface-hub"}, "pvc": set(), "file": set()}
METHOD_NEEDS = {"qlora": {"bitsandbytes"}, "lora": {"peft"}, "full": set()}


def _worker_requirements() -> set[str]:
    dockerfile = (ROOT / "images" / "worker" / "Dockerfile").read_text()
    extras = re.search(r"requirements\.py pyproject\.toml ([\w ]+) >", dockerfile)
    assert extras, "the worker image no longer installs from images/requirements.py"
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


def _needs(doc: dict) -> set[str]:
    spec = doc.get("spec") or {}
    uris = [
        (spec.get("source") or {}).get("uri") if doc["kind"] == "LLMDataset" else None,
        (spec.get("baseModel") or {}).get("uri") if doc["kind"] == "LLMTrainingJob" else None,
    ]
    needs: set[str] = set()
    for uri in filter(None, uris):
        scheme = uri.split("://", 1)[0] if "://" in uri else "file"
        assert scheme in SCHEME_NEEDS, f"{doc['metadata']['name']}: no worker path known for {scheme}://"
        needs |= SCHEME_NEEDS[scheme]
    if doc["kind"] == "LLMTrainingJob":
        needs |= METHOD_NEEDS[spec.get("method", "lora")]
    return needs


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples" / "production").glob("*.yaml")), ids=lambda p: p.stem
)
def test_worker_image_has_what_the_example_needs(example: Path) -> None:
    installed = _worker_requirements()
    for doc in yaml.safe_load_all(example.read_text()):
        missing = {canonicalize_name(n) for n in _needs(doc)} - installed
        assert not missing, f"{example.name}: the worker image lacks {sorted(missing)}"


def test_worker_image_covers_every_scheme_and_method() -> None:
    """Not only what today's examples use: every scheme the API accepts for sources and base models."""
    installed = _worker_requirements()
    for need in (*SCHEME_NEEDS.values(), *METHOD_NEEDS.values()):
        assert {canonicalize_name(n) for n in need} <= installed
