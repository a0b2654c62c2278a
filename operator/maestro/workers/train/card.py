"""The model card (`model_card.md`): what the model is, what made it, how it scored.

HF-style YAML front matter (base_model, library_name, tags) so hubs and tools can read it, then
prose sections a reviewer reads before approving a deployment: lineage, hyperparameters, metrics,
evaluation and bias results, intended use and limitations.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from maestro.workers.train.config import TrainConfig


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(v: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", "<br>")


def _answer_cell(a: dict[str, Any] | None) -> str | None:
    if not a:
        return None
    passed = a.get("passed")
    mark = "✅ " if passed is True else "❌ " if passed is False else ""
    return f"{mark}{a.get('answer', '')}"


def render_card(
    *,
    name: str,
    cfg: TrainConfig,
    summary: dict[str, Any],
    dataset_schema: str | None,
    data_stats: dict[str, Any],
    bias_report: dict[str, Any] | None,
    report: dict[str, Any] | None = None,
) -> str:
    model = summary.get("model", {})
    metrics = summary.get("metrics", {})
    ev = summary.get("evaluation", {})
    lineage = summary.get("lineage", {})
    is_adapter = model.get("format") == "peft-lora"
    front = [
        "---",
        f"base_model: {json.dumps(lineage.get('baseModel'))}",
        f"library_name: {'peft' if is_adapter else 'transformers'}",
        "pipeline_tag: text-generation",
        f"tags: [maestro, {cfg.method}, fine-tuned]",
        f"model_digest: {json.dumps(model.get('digest'))}",
        f"dataset_version: {json.dumps(lineage.get('datasetVersion'))}",
        f"evaluation_passed: {json.dumps(ev.get('passed'))}",
        "---",
    ]
    h = cfg.hyper
    hyper_rows = [
        ("method", cfg.method),
        ("epochs", h.epochs),
        ("max steps", h.max_steps),
        ("learning rate", h.learning_rate),
        ("lr scheduler", h.lr_scheduler),
        ("warmup ratio", h.warmup_ratio),
        ("batch size (per device)", h.batch_size),
        ("gradient accumulation", h.gradient_accumulation_steps),
        ("max sequence length", h.max_seq_length),
        ("packing", h.packing),
        ("precision", summary.get("precision", h.precision)),
        ("seed", h.seed),
    ]
    if cfg.method != "full":
        hyper_rows.append(("lora", json.dumps(asdict(h.lora))))
    lines = [
        *front,
        "",
        f"# {name}",
        "",
        f"Fine-tuned from `{lineage.get('baseModel')}` with {cfg.method} by Maestro "
        f"({'a PEFT LoRA adapter; load it on top of the base model' if is_adapter else 'full weights'}).",
        "",
        "## Lineage",
        "",
        f"- Base model: `{lineage.get('baseModel')}`",
        f"- Dataset version: `{lineage.get('datasetVersion')}` (schema {dataset_schema or 'inferred'})",
        f"- Trainer image: `{lineage.get('image') or 'unknown'}`",
        f"- Model digest: `{model.get('digest')}` ({model.get('format')})",
        "",
        "## Training data",
        "",
        *[f"- {k}: {_fmt(v)}" for k, v in data_stats.items()],
        "",
        "## Hyperparameters",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in hyper_rows],
        "",
        "## Training metrics",
        "",
        f"- Steps: {metrics.get('steps')}, epochs: {_fmt(metrics.get('epochs'))}",
        f"- Final training loss: {_fmt(metrics.get('trainLoss'))}",
        f"- Throughput: {_fmt(metrics.get('tokensPerSecond'))} tokens/s",
        f"- Loss curve (step, loss): {metrics.get('lossCurve')}",
        "",
        "## Evaluation",
        "",
        f"- Validation loss: {_fmt(ev.get('evalLoss'))}, perplexity: {_fmt(ev.get('perplexity'))}",
    ]
    if ev.get("baseEvalLoss") is not None:
        lines.append(
            f"- Base model on the same split: loss {_fmt(ev.get('baseEvalLoss'))}, "
            f"perplexity {_fmt(ev.get('basePerplexity'))}"
        )
    if "promptsTotal" in ev:
        base_part = (
            f"; base model {ev['basePromptsPassed']}/{ev.get('promptsChecked')}"
            if "basePromptsPassed" in ev
            else ""
        )
        lines.append(
            f"- Smoke-test prompts: {ev.get('promptsPassed')}/{ev.get('promptsChecked')} contained the "
            f"expected answer ({ev.get('promptsTotal')} run; exact match {_fmt(ev.get('exactMatch'))}"
            f"{base_part})"
        )
    lines.append(f"- Gates passed: **{ev.get('passed')}**")
    for f in ev.get("failures", []):
        lines.append(f"  - failed: {f}")
    rows = (report or {}).get("prompts") or ev.get("prompts") or []
    if rows:
        lines += ["", "| prompt | expected | fine-tuned answer | base answer |", "|---|---|---|---|"]
        for r in rows:
            lines.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        r.get("prompt"),
                        r.get("expected"),
                        _answer_cell(r.get("tuned")),
                        _answer_cell(r.get("base")),
                    )
                )
                + " |"
            )
    lines += ["", "## Bias evaluation (counterfactual probe)", ""]
    if bias_report is None:
        lines.append("Not run (spec.evaluation.bias.enabled is false). Run it before serving to people.")
    else:
        lines += [
            "Templated prompts with demographic terms swapped; completions compared by VADER sentiment, "
            "refusal rate and length. Gaps are max − min across the terms of a group.",
            "",
            "| group | sentiment gap | refusal gap | length gap ratio |",
            "|---|---|---|---|",
        ]
        for g, v in bias_report.get("groups", {}).items():
            lines.append(f"| {g} | {v['sentimentGap']} | {v['refusalGap']} | {v['lengthGapRatio']} |")
        lines += ["", f"Passed: **{bias_report.get('passed')}**"]
        for f in bias_report.get("failures", []):
            lines.append(f"  - {f}")
    lines += [
        "",
        "## Intended use and limitations",
        "",
        "Intended for the task its training data describes, served behind Maestro's guard (policy proxy). "
        "It inherits the base model's limitations and licence. The evaluation above covers only the "
        "validation split, the listed prompts and the probe templates: it is evidence, not a guarantee. "
        "Do not use it for decisions about people without further, task-specific evaluation.",
        "",
    ]
    return "\n".join(lines)
