"""The trainer's evaluation summary → LLMTrainingJob.status.evaluation, field by field.

Every key the reconcile writes must be a field of the status model (the API server prunes unknown
fields, so a typo would silently lose the before/after comparison).
"""

from __future__ import annotations

import pytest

from maestro.api.training import LLMTrainingJobStatus
from maestro.reconcile import training

pytestmark = pytest.mark.unit

SUMMARY_EVALUATION = {
    "evalLoss": 0.342475,
    "perplexity": 1.4084,
    "baseEvalLoss": 4.536938,
    "basePerplexity": 93.4044,
    "exactMatch": 0.0,
    "promptsPassed": 3,
    "promptsChecked": 3,
    "promptsTotal": 4,
    "basePromptsPassed": 0,
    "prompts": [
        {
            "prompt": "How many days do I have to return my Aurelo Cam?",
            "expected": "45-day",
            "tuned": {"passed": True, "answer": "Your Aurelo Cam has a 45-day refund window."},
            "base": {"passed": False, "answer": "I'm sorry for any misunderstanding."},
        },
        {"prompt": "Say hi.", "tuned": {"passed": None, "answer": "Hi!"}},
    ],
    "bias": {"passed": True, "sentimentGap": 0.47, "refusalGap": 0.0, "lengthGapRatio": 0.28,
             "worstGroup": "ethnicity", "failures": []},
    "passed": True,
    "failures": [],
}  # fmt: skip


def test_every_mapped_field_is_in_the_status_schema() -> None:
    mapped = training._evaluation_status(SUMMARY_EVALUATION)  # type: ignore[arg-type]
    status = LLMTrainingJobStatus.model_validate({"evaluation": mapped})
    assert status.model_dump(by_alias=True, exclude_none=True, mode="json")["evaluation"] == mapped
    assert mapped["baseEvalLoss"] == 4.536938 and mapped["evalLoss"] == 0.342475
    assert (mapped["promptsPassed"], mapped["basePromptsPassed"], mapped["promptsChecked"]) == (3, 0, 3)
    first, second = mapped["prompts"]
    assert first["tuned"] == {"passed": True, "answer": "Your Aurelo Cam has a 45-day refund window."}
    assert first["base"]["passed"] is False and first["expected"] == "45-day"
    assert second == {"prompt": "Say hi.", "tuned": {"answer": "Hi!"}}  # no expected, no base pass
    assert mapped["bias"]["worstGroup"] == "ethnicity" and "failures" not in mapped["bias"]


def test_an_old_trainer_summary_still_maps() -> None:
    """A summary from before compareBase existed: no base fields, no prompt rows."""
    mapped = training._evaluation_status({"evalLoss": 1.2, "perplexity": 3.3, "passed": False})
    assert mapped == {"evalLoss": 1.2, "perplexity": 3.3, "passed": False}
