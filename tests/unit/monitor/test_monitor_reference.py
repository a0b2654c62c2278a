from __future__ import annotations

import json
import random

import pytest
from monitor_helpers import event

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.cli import main
from maestro.workers.monitor.collector import EventCollector, RateBudget
from maestro.workers.monitor.drift import DriftMonitor, load_reference_file
from maestro.workers.monitor.metrics import MonitorMetrics
from maestro.workers.monitor.reference import texts_of
from maestro.workers.monitor.signals import TextAnalyzer

pytestmark = pytest.mark.unit

QUESTIONS = ["What is {a} plus {b}?", "How much is {a} times {b}, please?", "Is {a} larger than {b}?"]


def _dataset(tmp_path, n: int = 300):
    rng = random.Random(1)
    d = tmp_path / "llmds-v1"
    d.mkdir()
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        rows.append(
            {"prompt": rng.choice(QUESTIONS).format(a=a, b=b), "completion": f"The answer is {a + b}."}
        )
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[: n - 50]))
    (d / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[n - 50 :]))
    return d


def test_texts_of_understands_the_dataset_schemas() -> None:
    assert texts_of({"prompt": "p", "completion": "c"}, "prompt", "completion") == ("p", "c")
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ]
    }
    assert texts_of(chat, "prompt", "completion") == ("Be brief.\nHi", "Hello!")  # as the guard joins them
    assert texts_of({"messages": [{"role": "user", "content": "Hi"}]}, "prompt", "completion") == ("Hi", None)
    assert texts_of({"q": "x", "a": "y"}, "q", "a") == ("x", "y")
    assert texts_of({"other": 1}, "prompt", "completion") == (None, None)


def test_reference_from_a_dataset_flags_traffic_unlike_the_training_data(tmp_path, capsys) -> None:
    out = tmp_path / "ref.json"
    assert main(["reference", str(_dataset(tmp_path)), "--out", str(out)]) == 0
    assert "300 records" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert set(doc["features"]) == set(c.DRIFT_FEATURES)
    assert sum(doc["features"]["prompt_chars"].values()) == 300

    def psi_after(prompts: list[str]) -> dict[str, float]:
        drift = DriftMonitor(c.DRIFT_FEATURES, reference_size=10, window=200, threshold=0.2)
        assert sorted(load_reference_file(drift, str(out))) == sorted(c.DRIFT_FEATURES)
        col = EventCollector(
            MonitorMetrics(process=False), drift, TextAnalyzer(), text_budget=RateBudget(1e9)
        )
        for i, p in enumerate(prompts):
            col.process(event(requestId=f"r{i}", promptText=p, promptChars=len(p)))
        return drift.snapshot()

    rng = random.Random(2)
    alike = [rng.choice(QUESTIONS).format(a=rng.randint(0, 99), b=rng.randint(0, 99)) for _ in range(200)]
    unlike = [
        "Écris un long poème sur la mer, les bateaux et le vent qui souffle sur la côte. " * 8
        for _ in range(200)
    ]
    same, shifted = psi_after(alike), psi_after(unlike)
    assert same["prompt_chars"] < 0.1 and same["prompt_language"] < 0.1
    assert shifted["prompt_chars"] > 1 and shifted["prompt_language"] > 1


def test_reference_errors_are_actionable(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["reference", str(empty), "--out", str(tmp_path / "r.json")]) == 2
    assert "no JSONL files" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "completion": "fine"}\n{broken\n')
    assert main(["reference", str(bad), "--out", str(tmp_path / "r.json")]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "no prompt here"}\n')
    assert main(["reference", str(other), "--out", str(tmp_path / "r.json")]) == 2
    assert "expected 'prompt'/'completion' fields or chat 'messages'" in capsys.readouterr().err
