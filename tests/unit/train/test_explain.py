"""Offline explanations in the evaluation report (evaluation.explain), on the tiny Llama trained here.

The dataset makes one word decide the answer: fillers in random order around an animal word, and the
answer is that animal's word (fox: "good.", dog: "bad.", cat: "sad."). A model that learned it must put
the animal word on top of the occlusion ranking, in the evaluation prompts and in the bias probe whose
group terms are the animals (and whose sentiment gap is real: VADER scores "good." and "bad.").
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from trainhelpers import make_spec, run_job, write_jsonl

from maestro.workers.train import contract
from maestro.workers.train.config import ExplainSettings
from maestro.workers.train.explain import word_segments

pytestmark = pytest.mark.unit

ANSWERS = {"fox": "good.", "dog": "bad.", "cat": "sad."}
FILLERS = ["please", "tell", "me", "about", "the", "now", "what", "is", "a", "describe"]


def _dataset(root: Path) -> Path:
    rng = random.Random(1)
    rows = []
    for _ in range(360):
        key = rng.choice(list(ANSWERS))
        words = rng.sample(FILLERS, rng.randint(2, 5))
        words.insert(rng.randint(0, len(words)), key)
        rows.append({"prompt": " ".join(words), "completion": ANSWERS[key]})
    d = root / "dataset"
    d.mkdir()
    write_jsonl(d / "train.jsonl", rows[:320])
    write_jsonl(d / "validation.jsonl", rows[320:])
    return d


@pytest.fixture(scope="module")
def explained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One training run with explanations on: its summary and output directory."""
    from maestro.workers.train.job import EvaluationFailed

    root = tmp_path_factory.mktemp("explain")
    out = root / "out"
    evaluation = {
        "prompts": [
            {"prompt": "please tell me about the fox", "expected": "good."},
            {"prompt": "describe the dog", "expected": "bad."},
        ],
        "maxNewTokens": 4,
        "compareBase": False,
        "bias": {
            "enabled": True,
            "groups": {"animal": ["fox", "dog"]},
            "templates": ["tell me about the {group} now please", "what is the {group}"],
            "maxNewTokens": 4,
        },
        "explain": {"enabled": True, "maxPrompts": 1, "maxProbes": 8, "maxSegments": 6},
    }
    spec = make_spec(tiny_model, "full", steps=150, evaluation=evaluation)
    try:
        summary = run_job(spec, _dataset(root), out)
    except EvaluationFailed as e:  # the bias gate: "good." vs "bad." is a real sentiment gap
        summary = e.summary
    return summary, out


def _items(out: Path, kind: str) -> list[dict[str, Any]]:
    doc = json.loads((out / "explanations.json").read_text())
    return [x for x in doc["explanations"] if x["kind"] == kind]


def test_the_deciding_word_tops_the_prompt_explanation(explained: tuple[dict[str, Any], Path]) -> None:
    summary, out = explained
    ev = summary["evaluation"]
    assert ev["promptsPassed"] == 2, ev  # the model learned the mapping
    (item,) = _items(out, "prompt")  # maxPrompts 1: the second prompt is not explained
    assert item["top"] == "fox", item["segments"]
    ranked = sorted(item["segments"], key=lambda s: -s["attribution"])
    assert ranked[0]["attribution"] > 2 * max(abs(ranked[1]["attribution"]), 0.05), ranked


def test_the_group_term_drives_the_probe_gap(explained: tuple[dict[str, Any], Path]) -> None:
    summary, out = explained
    assert summary["evaluation"]["bias"]["sentimentGap"] > 0.5  # "good." vs "bad."
    probes = _items(out, "probe")
    assert len(probes) == 2  # one per template
    for p in probes:
        assert p["terms"] == {"high": "fox", "low": "dog"} and p["metric"] == "sentiment"
        assert (p["response"], p["lowResponse"]) == ("good.", "bad.")
        assert p["value"] > 0 and p["swapEffect"] > 0  # the fox prompt prefers the fox answer
        assert p["groupTermRank"] == 1 and p["top"] == "fox", p["segments"]
        assert 0 < p["groupTermShare"] <= 1
        # maxSegments 6: the first template's 7 words are joined in runs, the group term stays alone
        assert len(p["segments"]) <= 6
        (term,) = [s for s in p["segments"] if s["groupTerm"]]
        assert term["text"] == "fox"


def test_the_summary_links_the_files_and_reports_the_cost(explained: tuple[dict[str, Any], Path]) -> None:
    from maestro.workers.train.job import _tracked_artifacts

    summary, out = explained
    ex = summary["evaluation"]["explanations"]
    assert ex["html"] == "explanations.html" and ex["json"] == "explanations.json"
    assert ex["uri"] == f"file://{out}/explanations.html"
    assert (ex["prompts"], ex["probes"]) == (1, 2) and 0 < ex["seconds"] < 30
    doc = json.loads((out / ex["json"]).read_text())
    assert doc["skipped"] == {"prompts": 1, "probes": 0}
    # 1 prompt of 6 segments: 7 sequences; 2 probes of n segments: 2 * (n + 2) each
    probe_segs = [len(x["segments"]) for x in doc["explanations"] if x["kind"] == "probe"]
    assert doc["cost"]["scoredSequences"] == 7 + sum(2 * (n + 2) for n in probe_segs)
    # what the termination message carries (the operator reads it) keeps the link
    term = json.loads(contract.encode_summary(summary))
    assert term["evaluation"]["explanations"]["uri"] == ex["uri"]
    page = (out / ex["html"]).read_text()
    assert "<script" not in page and page.count("<section>") == 3 and 'class="seg"' in page
    tracked = {p.name for p in _tracked_artifacts_for(out, _tracked_artifacts)}
    assert {"explanations.html", "explanations.json"} <= tracked


def _tracked_artifacts_for(out: Path, fn: Any) -> list[Path]:
    from maestro.workers.train.job import Inputs

    inputs = Inputs({}, out / "no-dataset", None, None, out, f"file://{out}", None, out / ".cache")
    return list(fn(inputs, out, out / contract.MODEL_DIR))


def test_html_escapes_prompt_and_answer_markup(explained: tuple[dict[str, Any], Path]) -> None:
    """A prompt and an answer with markup are shown as text, never as tags."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maestro.workers.train import explain
    from maestro.workers.train.config import ExplainSettings, PromptCase

    _, out = explained
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    case = PromptCase('<script>alert("x")</script> the fox', "good. <img src=x onerror=alert(1)>")
    settings = ExplainSettings(True, 4, 0, 48)
    result = explain.explain(
        explain.Scorer(model, tok, model.device), settings, [case], ["<b>hi</b>"], None, (), {}
    )
    page = explain.to_html(result.to_json(settings))
    assert "<script" not in page and "<img" not in page and "<b>hi" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x" in page and "&lt;b&gt;hi&lt;/b&gt;" in page
    assert result.items[0]["top"] == "fox"


def test_word_segments_respect_the_cap_and_keep_group_terms_whole() -> None:
    text = "Write a sentence about the Black person who works as a doctor."
    start = text.index("Black person")
    segs, words = word_segments(text, 48, [(start, start + len("Black person"))])
    assert words == 13 and len(segs) == 12 and "Black person" in [s.text for s in segs]
    capped, _ = word_segments(text, 5, [(start, start + len("Black person"))])
    assert len(capped) <= 5 and "Black person" in [s.text for s in capped]
    # the joined runs still cover every word, in order, without overlap
    assert [s.start for s in capped] == sorted(s.start for s in capped)
    assert capped[0].start == 0 and capped[-1].end == len(text)
    assert all(a.end <= b.start for a, b in itertools.pairwise(capped))


def _demo_model() -> Path:
    """SmolLM2-135M-Instruct as `make model` prepared it; `make test` prepares it, so there a gap fails."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([root / "hack/model.sh", "--check"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0 or not out.stdout.strip():
        msg = f"the demo model is not prepared (run `make model`): {out.stderr.strip()[-300:]}"
        if os.environ.get("MAESTRO_VLLM_VENV"):  # under `make test`, which depends on `make model`
            pytest.fail(msg)
        pytest.skip(msg)
    return Path(out.stdout.strip().splitlines()[-1])


def test_real_instruct_model_attributes_the_answer_to_the_question_topic() -> None:
    """On SmolLM2 (untrained here: the mechanics are the model's own), the country decides the capital."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maestro.workers.train import explain
    from maestro.workers.train.config import ExplainSettings, PromptCase

    model_dir = _demo_model()
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    cases = [
        PromptCase("What is the capital of France?", "Paris"),
        PromptCase("What is the capital of Japan?", "Tokyo"),
    ]
    settings = ExplainSettings(True, 8, 0, 48)
    result = explain.explain(
        explain.Scorer(model, tok, model.device), settings, cases, ["", ""], None, (), {}
    )
    assert [x["top"] for x in result.items] == ["France", "Japan"], [x["segments"] for x in result.items]
    assert result.sequences == 2 * (7 + 1)  # 7 word segments each ("?" is one), plus the all-kept prompt


@pytest.mark.parametrize(
    ("explain", "field"),
    [
        ({"maxSegments": 1}, "maxSegments"),
        ({"maxPrompts": 65}, "maxPrompts"),
        ({"maxProbes": -1}, "maxProbes"),
    ],
)
def test_limits_out_of_range_are_rejected_naming_the_field(explain: dict[str, int], field: str) -> None:
    from maestro.workers.train.config import ConfigError, parse_spec

    spec = make_spec(Path("/nonexistent"), evaluation={"explain": {"enabled": True, **explain}})
    with pytest.raises(ConfigError, match=field):
        parse_spec(spec)
    assert parse_spec(
        make_spec(Path("/x"), evaluation={"explain": {"enabled": True}})
    ).evaluation.explain == (ExplainSettings(True, 8, 8, 48))
