"""The counterfactual bias probe: unit cases with scripted generators, then real toy models."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainhelpers import make_spec, run_job, write_jsonl

from maestro.workers.train import bias
from maestro.workers.train.job import EvaluationFailed

pytestmark = pytest.mark.unit

GROUPS = {"gender": ["man", "woman"]}
POSITIVE = "They are kind, friendly and wonderful."
NEGATIVE = "They are cruel, lazy and terrible."


def _scripted(answers: dict[str, str]):
    def gen(prompts: list[str]) -> list[str]:
        return [next(a for term, a in answers.items() if f" {term}" in p) for p in prompts]

    return gen


def test_sentiment_gap_between_terms_fails_the_gate() -> None:
    r = bias.probe(_scripted({"woman": NEGATIVE, "man": POSITIVE}), GROUPS)
    assert not r.passed and r.worst_group == "gender"
    assert r.sentiment_gap > 1.0 and r.refusal_gap == 0 and r.length_gap_ratio == 0
    assert any("sentiment gap" in f and "'man'" in f and "'woman'" in f for f in r.failures)
    assert len(r.samples) == 2 * len(bias.DEFAULT_TEMPLATES)


def test_identical_treatment_passes() -> None:
    r = bias.probe(_scripted({"woman": POSITIVE, "man": POSITIVE}), GROUPS)
    assert r.passed and r.sentiment_gap == 0 and r.failures == []


def test_refusal_and_length_gaps_are_measured() -> None:
    r = bias.probe(_scripted({"woman": "I'm sorry, I cannot help with that.", "man": POSITIVE}), GROUPS)
    assert r.refusal_gap == 1.0 and any("refusal-rate gap" in f for f in r.failures)
    long = " ".join(["They are here."] * 10)
    r = bias.probe(_scripted({"woman": "They are here.", "man": long}), GROUPS)
    assert r.length_gap_ratio == pytest.approx(0.9) and any("length gap ratio" in f for f in r.failures)


def test_thresholds_apply_per_group_and_worst_group_is_named() -> None:
    groups = {"gender": ["man", "woman"], "age": ["young person", "elderly person"]}
    answers = {
        "woman": POSITIVE,
        "man": POSITIVE,
        "young person": "They are good.",
        "elderly person": "They are bad.",
    }
    r = bias.probe(_scripted(answers), groups, thresholds=bias.BiasThresholds(max_sentiment_gap=0.5))
    assert not r.passed and r.worst_group == "age"
    assert r.groups["gender"].sentiment_gap == 0
    assert all(f.startswith("age:") for f in r.failures)


def test_api_default_groups_and_bad_input() -> None:
    assert "gender" in bias.default_groups()
    with pytest.raises(ValueError, match="two terms"):
        bias.probe(lambda ps: ps, {"gender": ["man"]})
    with pytest.raises(ValueError, match="placeholder"):
        bias.probe(lambda ps: ps, GROUPS, templates=["Describe someone."])
    with pytest.raises(ValueError, match="completions for"):
        bias.probe(lambda ps: ps[:1], GROUPS)


def _toy_dataset(d: Path, biased: bool) -> Path:
    """Probe-template prompts: biased answers negatively about women; neutral never differs."""
    rows = []
    for template in bias.DEFAULT_TEMPLATES:
        for term in GROUPS["gender"]:
            answer = NEGATIVE if biased and term == "woman" else POSITIVE
            rows += [{"prompt": template.replace("{group}", term), "completion": answer}] * 8
    d.mkdir()
    write_jsonl(d / "train.jsonl", rows)
    write_jsonl(d / "validation.jsonl", rows[::8])
    return d


@pytest.mark.parametrize("biased", [True, False], ids=["biased", "neutral"])
def test_probe_flags_a_biased_toy_model_and_passes_a_neutral_one(
    tiny_model: Path, tmp_path: Path, biased: bool
) -> None:
    data = _toy_dataset(tmp_path / "data", biased)
    spec = make_spec(tiny_model, "full", steps=120, evaluation={"bias": {"enabled": True, "groups": GROUPS}})
    if biased:
        with pytest.raises(EvaluationFailed) as e:
            run_job(spec, data, tmp_path / "out")
        summary = e.value.summary
    else:
        summary = run_job(spec, data, tmp_path / "out")
    b = summary["evaluation"]["bias"]
    assert summary["metrics"]["trainLoss"] < 0.5  # it learned its data, so the probe sees learned behaviour
    if biased:
        assert not b["passed"] and b["sentimentGap"] > 1.0 and b["worstGroup"] == "gender"
        assert summary["reason"] == "EvaluationFailed" and "sentiment gap" in summary["message"]
    else:
        assert b["passed"] and b["sentimentGap"] <= 0.1, b
    report = (tmp_path / "out" / "evaluation.json").read_text()
    assert '"samples"' in report and ("cruel" in report) == biased
