"""Before/after evaluation on the tiny Llama: the base model scored on the same split and prompts.

What the quickstart shows on SmolLM2 (tests/model/) rests on these mechanics: the base is the
untouched model (adapter disabled, or reloaded for full fine-tunes), the fine-tuned pass runs with
the adapter merged and leaves the weights as they were, only the fine-tuned model is gated, the
base model's manifest digest lands in the lineage, and the summary still fits 4 KiB.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainhelpers import make_spec, run_job, write_jsonl

from maestro.workers.train import contract, ggufimport

pytestmark = pytest.mark.unit

FOX = {
    "prompts": [
        {"prompt": "Describe a red fox.", "expected": "The fox is red"},
        {"prompt": "What is 1 plus 1?"},
    ]
}


def _base_loss(model_dir: Path, dataset: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maestro.workers.train.data import load_examples
    from maestro.workers.train.evaluate import eval_loss

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    val, _ = load_examples(dataset / "validation.jsonl", None, tok, 64)
    loss = eval_loss(model, val, tok.pad_token_id, torch.device("cpu"), batch_size=4).loss
    assert loss is not None
    return loss


def test_lora_base_pass_is_the_untouched_base_model(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    s = run_job(make_spec(tiny_model, "lora", steps=150, evaluation=FOX), arith_dataset, out)
    ev = s["evaluation"]
    # the adapter switched off is exactly the base model as loaded from disk
    assert ev["baseEvalLoss"] == pytest.approx(_base_loss(tiny_model, arith_dataset), abs=1e-5)
    assert ev["evalLoss"] < ev["baseEvalLoss"] - 1.0, ev
    rows = ev["prompts"]
    assert [r["prompt"] for r in rows] == ["Describe a red fox.", "What is 1 plus 1?"]
    assert rows[0]["expected"] == "The fox is red" and "expected" not in rows[1]
    assert rows[1]["tuned"]["passed"] is None and rows[1]["base"]["passed"] is None
    assert isinstance(rows[0]["base"]["answer"], str) and ev["basePromptsPassed"] in (0, 1)
    report = json.loads((out / contract.EVALUATION_FILE).read_text())
    assert report["baseEvalLoss"] == ev["baseEvalLoss"] and len(report["prompts"]) == 2
    card = (out / contract.MODEL_CARD).read_text()
    assert "Base model on the same split" in card and "| Describe a red fox. |" in card


def test_lora_eval_with_the_adapter_merged_matches_the_saved_adapter(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path
) -> None:
    """The merged fast path scores what a server loading the adapter would compute, and undoes itself."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maestro.workers.train.config import parse_spec
    from maestro.workers.train.data import load_examples
    from maestro.workers.train.evaluate import eval_loss
    from maestro.workers.train.job import _merged

    out = tmp_path / "out"
    spec = make_spec(tiny_model, "lora", steps=30, evaluation={"compareBase": False})
    s = run_job(spec, arith_dataset, out)
    assert "baseEvalLoss" not in s["evaluation"]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out / "model").eval()
    val, _ = load_examples(arith_dataset / "validation.jsonl", None, tok, 64)
    cpu = torch.device("cpu")
    unmerged = eval_loss(model, val, tok.pad_token_id, cpu, batch_size=4).loss
    assert unmerged == pytest.approx(s["evaluation"]["evalLoss"], abs=1e-4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with _merged(model, parse_spec(spec)):
        assert eval_loss(model, val, tok.pad_token_id, cpu, batch_size=4).loss == pytest.approx(
            unmerged, abs=1e-4
        )
    after = model.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)


def test_full_finetune_compares_against_the_reloaded_base(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    s = run_job(make_spec(tiny_model, "full", steps=200, evaluation=FOX), arith_dataset, out)
    ev = s["evaluation"]
    assert ev["baseEvalLoss"] == pytest.approx(_base_loss(tiny_model, arith_dataset), abs=1e-5)
    fox = ev["prompts"][0]
    assert fox["tuned"]["passed"] is True and fox["base"]["passed"] is False, fox
    assert fox["tuned"]["answer"].startswith("The fox is red")
    assert (ev["promptsPassed"], ev["basePromptsPassed"], ev["passed"]) == (1, 0, True)


def test_require_improvement_fails_a_model_that_got_worse(tiny_model: Path, tmp_path: Path) -> None:
    """Trained on one answer, validated on another: the fine-tuned loss rises above the base's."""
    from maestro.workers.train.config import ConfigError
    from maestro.workers.train.job import EvaluationFailed

    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(
        data / "train.jsonl", [{"prompt": "Describe a red fox.", "completion": "The fox is red."}] * 40
    )
    write_jsonl(
        data / "validation.jsonl", [{"prompt": "Describe a red fox.", "completion": "Dogs are blue."}] * 4
    )
    spec = make_spec(tiny_model, "full", steps=40, evaluation={"requireImprovement": True})
    with pytest.raises(EvaluationFailed) as e:
        run_job(spec, data, tmp_path / "out")
    ev = e.value.summary["evaluation"]
    assert ev["evalLoss"] > ev["baseEvalLoss"] and not ev["passed"]
    assert any("is not below the base model's" in f for f in ev["failures"]), ev["failures"]
    with pytest.raises(ConfigError, match="requireImprovement needs compareBase"):
        run_job(
            make_spec(
                tiny_model, "full", steps=1, evaluation={"requireImprovement": True, "compareBase": False}
            ),
            data,
            tmp_path / "out2",
        )


def _with_manifest(src: Path, dst: Path) -> str:
    import shutil

    shutil.copytree(src, dst)
    digest = ggufimport.content_digest(dst)
    manifest = ggufimport.Manifest(name="tiny", digest=digest, source={"package": "tiny"}, converter={})
    (dst / ggufimport.MANIFEST).write_text(manifest.to_json())
    return digest


def test_a_base_with_a_manifest_is_verified_and_pinned_in_lineage(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path
) -> None:
    from maestro.workers.train.config import ConfigError

    base = tmp_path / "base"
    digest = _with_manifest(tiny_model, base)
    s = run_job(
        make_spec(base, "lora", steps=2, evaluation={"compareBase": False}), arith_dataset, tmp_path / "o1"
    )
    assert s["lineage"]["baseModelDigest"] == digest
    (base / "tokenizer_config.json").write_text("{}")  # a damaged copy must not train silently
    with pytest.raises(ConfigError, match="is corrupt"):
        run_job(make_spec(base, "lora", steps=2), arith_dataset, tmp_path / "o2")


def test_the_side_by_side_fits_the_termination_message() -> None:
    long = "word " * 400
    rows = [
        {
            "prompt": f"question {i} " + "x" * 80,
            "expected": "needle",
            "tuned": {"passed": True, "answer": contract.truncate(long, contract.SUMMARY_ANSWER_CHARS)},
            "base": {"passed": False, "answer": contract.truncate(long, contract.SUMMARY_ANSWER_CHARS)},
        }
        for i in range(contract.SUMMARY_PROMPTS)
    ]
    summary = {
        "passed": True,
        "model": {"uri": "pvc://c/model", "digest": "sha256:" + "0" * 64, "format": contract.FORMAT_LORA},
        "metrics": {"trainLoss": 0.1, "lossCurve": [[i, 1.0] for i in range(12)], "tokensPerSecond": 1.0},
        "evaluation": {"evalLoss": 0.3, "baseEvalLoss": 4.5, "prompts": rows, "failures": ["f" * 300]},
        "lineage": {"datasetVersion": "sha256-x", "baseModel": "pvc://m", "image": None},
    }
    text = contract.encode_summary(summary)
    assert len(text.encode()) <= contract.MAX_SUMMARY_BYTES
    kept = json.loads(text)["evaluation"]
    assert kept["baseEvalLoss"] == 4.5 and kept["prompts"], kept  # shortened, not dropped
    assert all(r["tuned"]["answer"].endswith("…") and r["base"]["answer"] for r in kept["prompts"])
    assert contract.truncate("short", 10) == "short" and len(contract.truncate(long, 10)) == 10
