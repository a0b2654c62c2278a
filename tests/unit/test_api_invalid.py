"""The models reject every manifest of the invalid corpus that the API server rejects, naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from maestro.api import parse

pytestmark = pytest.mark.unit

CORPUS = yaml.safe_load((Path(__file__).parents[1] / "cluster" / "invalid_manifests.yaml").read_text())


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (null deletes), the same semantics the cluster test uses."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def manifest(case: dict[str, Any]) -> dict[str, Any]:
    return merge_patch(CORPUS["bases"][case["base"]], case["patch"])  # type: ignore[no-any-return]


@pytest.mark.parametrize("base", sorted(CORPUS["bases"]))
def test_bases_are_valid(base: str) -> None:
    parse(CORPUS["bases"][base])


@pytest.mark.parametrize("case", CORPUS["cases"], ids=[c["name"] for c in CORPUS["cases"]])
def test_models_reject_invalid_manifest(case: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as err:
        parse(manifest(case))
    expected = case.get("model_error", case["error"])
    # field errors carry the full location; cross-field rules name the field relative to spec
    named = expected in str(err.value) or expected.removeprefix("spec.") in str(err.value)
    assert named, f"error does not name {expected!r}:\n{err.value}"


@pytest.mark.parametrize("case", CORPUS["updates"], ids=[c["name"] for c in CORPUS["updates"]])
def test_update_targets_are_individually_valid(case: dict[str, Any]) -> None:
    # immutability is a transition rule (server only); both the old and the new object are valid
    parse(CORPUS["bases"][case["base"]])
    parse(manifest(case))


def test_corpus_is_big_enough_and_names_are_unique() -> None:
    names = [c["name"] for c in CORPUS["cases"] + CORPUS["updates"]]
    assert len(names) == len(set(names))
    assert sum(1 for c in CORPUS["cases"] if c.get("server", True)) >= 30
    assert {c["base"] for c in CORPUS["cases"]} == set(CORPUS["bases"])
