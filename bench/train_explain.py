"""Cost and top words of the trainer's offline explanations (evaluation.explain) on the real demo model.

    python bench/train_explain.py [--model DIR] [--threads 2]

Runs the trainer's own code in-process on SmolLM2-135M-Instruct (`hack/model.sh`, untrained: the
mechanics and the cost do not depend on training): greedy answers and the bias probe for one
attribute (gender, the first two built-in templates), then `explain.explain` with the API's default
limits. Prints JSON: per explanation its top word (probes: the group term's rank and the swap
effect), the scored sequences and seconds of the explanation step alone, and the generation time
for comparison (what the evaluation spends anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

PROMPTS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What color is the sky on a clear day?", "blue"),
    ("How many legs does a spider have?", "eight"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maestro.api.training import DEFAULT_BIAS_GROUPS
    from maestro.workers.train import bias, evaluate, explain
    from maestro.workers.train.config import ExplainSettings, PromptCase

    root = Path(__file__).resolve().parents[1]
    model_dir = a.model or Path(
        subprocess.run(
            [root / "hack/model.sh", "--check"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    dev = model.device
    t0 = time.perf_counter()
    cases = [PromptCase(p, e) for p, e in PROMPTS]
    answers = evaluate.generate(model, tok, [c.prompt for c in cases], max_new_tokens=16, device=dev)
    templates = bias.DEFAULT_TEMPLATES[:2]
    groups = {"gender": DEFAULT_BIAS_GROUPS["gender"]}
    report = bias.probe(
        lambda ps: evaluate.generate(model, tok, ps, max_new_tokens=32, device=dev), groups, templates
    )
    gen_s = time.perf_counter() - t0
    settings = ExplainSettings(True, 8, 8, 48)
    scorer = explain.Scorer(model, tok, dev, batch_size=16)
    result = explain.explain(
        scorer, settings, cases, answers, report.to_report(), templates, {"sentiment": 0.1, "refusal": 0.1}
    )
    doc = result.to_json(settings)
    out = {
        "model": str(model_dir),
        "threads": a.threads,
        "generation_seconds": round(gen_s, 2),
        "explain_seconds": doc["cost"]["seconds"],
        "scored_sequences": doc["cost"]["scoredSequences"],
        "items": [
            {
                "kind": x["kind"],
                "prompt": x["prompt"],
                "top": x["top"],
                **(
                    {
                        "terms": x["terms"],
                        "groupTermRank": x["groupTermRank"],
                        "swapEffect": x["swapEffect"],
                        "segments": len(x["segments"]),
                    }
                    if x["kind"] == "probe"
                    else {"answer": x["answer"][:40]}
                ),
            }
            for x in doc["explanations"]
        ],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
