from __future__ import annotations

import json
import subprocess
import sys

import pytest

from maestro.workers.train import contract

pytestmark = pytest.mark.unit


def _summary(points: int, failures: int) -> dict:
    return {
        "passed": False,
        "reason": contract.REASON_EVALUATION_FAILED,
        "message": "x" * 3000,
        "model": {
            "uri": "pvc://models/job/model",
            "digest": "sha256:" + "a" * 64,
            "format": contract.FORMAT_LORA,
        },
        "metrics": {
            "trainLoss": 1.0,
            "lossCurve": [[i, 1.0] for i in range(points)],
            "tokensPerSecond": 1.0,
            "steps": 10,
            "epochs": 1.0,
        },
        "evaluation": {
            "evalLoss": 1.0,
            "passed": False,
            "failures": ["bias: gap too large " * 20] * failures,
        },
        "lineage": {"datasetVersion": "sha256:b", "baseModel": "hf://org/m", "image": "img"},
    }


def test_encode_summary_fits_termination_message_and_keeps_the_essentials() -> None:
    text = contract.encode_summary(_summary(points=500, failures=50))
    assert len(text.encode()) <= contract.MAX_SUMMARY_BYTES
    parsed = contract.parse_summary(text)
    assert parsed["passed"] is False and parsed["model"]["digest"].startswith("sha256:")
    assert parsed["evaluation"]["evalLoss"] == 1.0


def test_small_summary_is_untouched() -> None:
    s = _summary(points=5, failures=1)
    s["message"] = "short"
    assert json.loads(contract.encode_summary(s)) == s


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"model": {}}', "boolean 'passed'"),
        ('{"passed": true, "model": {"uri": "u", "digest": "md5:x", "format": "hf"}}', "sha256:"),
        ('{"passed": true, "model": {"uri": "u"}}', "uri, digest and format"),
        ('{"passed": true, "metrics": 3}', "'metrics' must be an object"),
    ],
)
def test_parse_summary_rejects_malformed(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        contract.parse_summary(text)


def test_exit_codes_are_distinct_and_classified() -> None:
    codes = [
        contract.EXIT_OK,
        contract.EXIT_UNEXPECTED,
        contract.EXIT_BAD_INPUT,
        contract.EXIT_EVAL_FAILED,
        contract.EXIT_IO,
        contract.EXIT_TRAINING,
    ]
    assert len(set(codes)) == len(codes)
    assert contract.exit_code_is_retriable(contract.EXIT_IO)
    assert not contract.exit_code_is_retriable(contract.EXIT_BAD_INPUT)
    assert not contract.RETRIABLE_EXIT_CODES & contract.PERMANENT_EXIT_CODES


def test_contract_import_is_light() -> None:
    code = (
        "import sys, maestro.workers.train.contract, maestro.workers.train.config; "
        "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
