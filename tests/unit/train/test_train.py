"""End-to-end trainer runs on the tiny Llama: LoRA and full, reload, merge, resume, gates, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trainhelpers import make_spec, run_job

from maestro.workers.train import contract
from maestro.workers.train.digest import digest_dir

pytestmark = pytest.mark.unit

FOX = {
    "prompts": [
        {"prompt": "Describe a red fox.", "expected": "The fox is red"},
        {"prompt": "What is 1 plus 1?"},
    ]
}


def _falls(curve: list[list[float]], by: float) -> bool:
    return curve[-1][1] < curve[0][1] - by


def test_lora_trains_and_the_adapter_loads(tiny_model: Path, arith_dataset: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    s = run_job(make_spec(tiny_model, "lora", steps=200), arith_dataset, out)
    losses = json.loads((out / "checkpoints" / "step-200" / "state.json").read_text())["losses"]
    assert len(losses) == 200
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 1.0, (first, last)
    assert s["model"]["format"] == contract.FORMAT_LORA and s["model"]["kind"] == "adapter"
    assert s["model"]["digest"] == digest_dir(out / "model")
    assert s["metrics"]["steps"] == 200 and s["metrics"]["tokensPerSecond"] > 0
    assert s["evaluation"]["evalLoss"] < losses[0] and s["evaluation"]["perplexity"] > 1
    assert s["lineage"] == {
        "datasetVersion": "sha256:test",
        "baseModel": f"file://{tiny_model}",
        "image": "maestro-worker:test",
    }
    # the adapter is a normal PEFT adapter over the base: it loads and changes the output
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.tensor([[1, 5, 40, 41, 42]])
    base_logits = base(ids).logits
    tuned = PeftModel.from_pretrained(base, out / "model")
    assert not torch.allclose(tuned(ids).logits, base_logits)
    cfg = json.loads((out / "model" / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["base_model_name_or_path"] == str(tiny_model)
    card = (out / "model_card.md").read_text()
    assert "sha256:test" in card and s["model"]["digest"] in card and "library_name: peft" in card
    progress = json.loads((out / "progress.json").read_text())
    assert progress["step"] == 200 and progress["totalSteps"] == 200 and progress["phase"] == "done"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-150", "step-200"]  # keepLast 2


def test_full_finetune_learns_reloads_and_passes_prompt_gate(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maestro.workers.train.evaluate import generate

    out = tmp_path / "out"
    s = run_job(
        make_spec(tiny_model, "full", steps=200, evaluation={**FOX, "maxEvalLoss": 2.0}), arith_dataset, out
    )
    assert _falls(s["metrics"]["lossCurve"], by=3.0), s["metrics"]["lossCurve"]
    ev = s["evaluation"]
    assert ev["passed"] and ev["evalLoss"] < 2.0
    assert (ev["promptsPassed"], ev["promptsChecked"], ev["promptsTotal"]) == (1, 1, 2)
    assert s["model"]["format"] == contract.FORMAT_HF and s["model"]["kind"] == "full"
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    answer = generate(model, tok, ["Describe a red fox."], max_new_tokens=12, device=model.device)[0]
    assert answer.startswith("The fox is red"), answer


def test_lora_merge_writes_a_standalone_model_equal_to_base_plus_adapter(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    s = run_job(make_spec(tiny_model, "lora", steps=20, output={"merge": True}), arith_dataset, out)
    assert s["model"]["kind"] == "merged" and s["model"]["format"] == contract.FORMAT_HF
    assert s["model"]["digest"] == digest_dir(out / "merged")
    assert s["model"]["adapter"]["digest"] == digest_dir(out / "model")
    ids = torch.tensor([[1, 5, 40, 41, 42, 43]])
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model), out / "model"
    ).eval()
    torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)


def _cli(spec: Path, dataset: Path, out: Path, term: Path, **env: str) -> subprocess.CompletedProcess[str]:
    e = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        contract.ENV_TERMINATION_PATH: str(term),
        contract.ENV_DATASET_VERSION: "sha256:test",
        **env,
    }
    cmd = [
        sys.executable,
        "-m",
        "maestro.workers.train",
        "run",
        "--spec",
        str(spec),
        "--dataset-dir",
        str(dataset),
        "--output-dir",
        str(out),
    ]
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600)


def test_killed_pod_resumes_to_the_same_result(tiny_model: Path, arith_dataset: Path, tmp_path: Path) -> None:
    # LoRA with dropout: the resumed run must also restore the RNG to replay the same dropout masks
    spec = make_spec(
        tiny_model,
        "lora",
        steps=60,
        checkpointing={"everySteps": 20, "keepLast": 2},
        hyperparameters={"lora": {"r": 8, "alpha": 16, "dropout": 0.2}},
    )
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    reference = run_job(spec, arith_dataset, tmp_path / "ref")

    out, term = tmp_path / "out", tmp_path / "termination-log"
    killed = _cli(spec_file, arith_dataset, out, term, MAESTRO_TRAIN_FAULT_KILL_AT_STEP="30")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-20"]
    resumed = _cli(spec_file, arith_dataset, out, term)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr and "step 20/60" in resumed.stderr
    summary = contract.parse_summary(term.read_text())
    assert summary == contract.parse_summary(resumed.stdout.strip().splitlines()[-1])
    assert summary["metrics"]["resumedFromStep"] == 20
    assert summary["metrics"]["trainLoss"] == pytest.approx(reference["metrics"]["trainLoss"], abs=1e-6)
    assert summary["evaluation"]["evalLoss"] == pytest.approx(reference["evaluation"]["evalLoss"], abs=1e-6)
    curve, ref_curve = summary["metrics"]["lossCurve"], reference["metrics"]["lossCurve"]
    assert [s for s, _ in curve] == [s for s, _ in ref_curve]
    assert [x for _, x in curve] == pytest.approx([x for _, x in ref_curve], abs=1e-5)


def test_a_changed_spec_refuses_foreign_checkpoints(
    tiny_model: Path, arith_dataset: Path, tmp_path: Path
) -> None:
    from maestro.workers.train.checkpoint import CheckpointMismatch

    out = tmp_path / "out"
    run_job(make_spec(tiny_model, "lora", steps=5, checkpointing={"everySteps": 5}), arith_dataset, out)
    with pytest.raises(CheckpointMismatch, match="different training configuration"):
        run_job(make_spec(tiny_model, "lora", steps=6, checkpointing={"everySteps": 5}), arith_dataset, out)


def test_exit_codes_and_summaries_on_failure(tiny_model: Path, arith_dataset: Path, tmp_path: Path) -> None:
    term = tmp_path / "term"
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps(make_spec(tiny_model, "lora", steps=3, evaluation={"maxEvalLoss": 0.01})))
    r = _cli(gate, arith_dataset, tmp_path / "out1", term)
    assert r.returncode == contract.EXIT_EVAL_FAILED, r.stderr[-2000:]
    s = contract.parse_summary(term.read_text())
    assert s["passed"] is False and s["reason"] == contract.REASON_EVALUATION_FAILED
    assert "maxEvalLoss" in s["message"] and s["model"]["digest"].startswith("sha256:")

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(make_spec(tmp_path / "no-such-model", "lora", steps=3)))
    r = _cli(bad, arith_dataset, tmp_path / "out2", term)
    assert r.returncode == contract.EXIT_BAD_INPUT
    s = contract.parse_summary(term.read_text())
    assert s["reason"] == contract.REASON_INVALID_SPEC and "no config.json" in s["message"]

    qlora = tmp_path / "qlora.json"
    qlora.write_text(
        json.dumps(make_spec(tiny_model, "lora", steps=3) | {"method": "qlora", "resources": {"gpus": 1}})
    )
    r = _cli(qlora, arith_dataset, tmp_path / "out3", term)
    assert r.returncode == contract.EXIT_BAD_INPUT
    assert "qlora" in contract.parse_summary(term.read_text())["message"]


def test_chat_records_with_packing_and_grad_accumulation(tiny_model: Path, tmp_path: Path) -> None:
    from trainhelpers import write_jsonl

    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"What is {a} plus 2?"},
                {"role": "assistant", "content": f"{a} plus 2 is {a + 2}."},
            ]
        }
        for a in range(10)
    ] * 12
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "validation.jsonl", rows[:10])
    hyper = {"packing": True, "maxSeqLength": 48, "gradientAccumulationSteps": 2, "batchSize": 2}
    s = run_job(make_spec(tiny_model, "full", steps=40, hyperparameters=hyper), data, tmp_path / "out")
    assert _falls(s["metrics"]["lossCurve"], by=2.0), s["metrics"]["lossCurve"]
    assert "packedSequences" in (tmp_path / "out" / "model_card.md").read_text()
