"""status.evaluation links the trainer's explanations report (evaluation.explain) as a pvc:// URI."""

from __future__ import annotations

import pytest

from maestro.api.training import LLMTrainingJobStatus
from maestro.builders import training as build
from maestro.reconcile import training

pytestmark = pytest.mark.unit


def test_explanations_uri_and_seconds_reach_status() -> None:
    ev = {
        "evalLoss": 0.5,
        "passed": True,
        "explanations": {
            "html": "explanations.html",
            "json": "explanations.json",
            "uri": f"file://{build.OUTPUT_DIR}/explanations.html",
            "prompts": 2,
            "probes": 4,
            "seconds": 3.25,
        },
    }
    mapped = training._evaluation_status(ev, "job-output")  # type: ignore[arg-type]
    assert mapped["explanationsUri"] == "pvc://job-output/explanations.html"
    assert mapped["explanationSeconds"] == 3.25
    status = LLMTrainingJobStatus.model_validate({"evaluation": mapped})
    assert status.model_dump(by_alias=True, exclude_none=True, mode="json")["evaluation"] == mapped


def test_a_failed_explanation_links_nothing() -> None:
    ev = {"evalLoss": 0.5, "passed": True, "explanations": {"error": "OutOfMemoryError: ..."}}
    mapped = training._evaluation_status(ev, "job-output")  # type: ignore[arg-type]
    assert "explanationsUri" not in mapped and "explanationSeconds" not in mapped
