"""Evaluation after training: eval loss / perplexity, exact match on a prompt set, generation.

Eval loss uses the same completion-only labels as training, token-weighted over the whole split,
so it is directly comparable with the training loss curve.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from maestro.workers.train.config import PromptCase
from maestro.workers.train.data import IGNORE_INDEX, Encoder, Example, collate
from maestro.workers.train.loop import token_ce_sum


@dataclass
class LossResult:
    loss: float | None
    perplexity: float | None
    tokens: int


def eval_loss(
    model: Any, examples: Sequence[Example], pad_id: int, device: Any, batch_size: int = 8
) -> LossResult:
    import torch

    if not examples:
        return LossResult(None, None, 0)
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # less padding
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            t = collate([examples[j] for j in order[i : i + batch_size]], pad_id)
            logits = model(
                input_ids=t["input_ids"].to(device),
                attention_mask=t["attention_mask"].to(device),
                use_cache=False,
            ).logits
            labels = t["labels"].to(device)
            total += float(token_ce_sum(logits, labels))
            count += int((labels[:, 1:] != IGNORE_INDEX).sum())
    if count == 0:
        return LossResult(None, None, 0)
    loss = total / count
    return LossResult(loss, math.exp(min(loss, 700.0)), count)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    device: Any,
    batch_size: int = 64,
) -> list[str]:
    """Greedy completions for user prompts, rendered with the chat template (deterministic).

    Large batches: decoding is bound by per-step overhead, so on CPU 42 prompts in one batch finish
    in half the time of three batches of 16; the KV cache stays small (64 × ~100 tokens).
    """
    import torch

    enc = Encoder(tokenizer, max_len=10**9)
    model.eval()
    out: list[str] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for i in range(0, len(prompts), batch_size):
        rendered = [enc.render_prompt(p) for p in prompts[i : i + batch_size]]
        ids = [tokenizer(r, add_special_tokens=not enc.has_template)["input_ids"] for r in rendered]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for j, x in enumerate(ids):  # left padding: generation continues right after each prompt
            input_ids[j, width - len(x) :] = torch.tensor(x)
            mask[j, width - len(x) :] = 1
        with torch.inference_mode():
            gen = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        for row in gen[:, width:]:
            out.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return out


def normalize(text: str) -> str:
    """Case, surrounding punctuation and runs of whitespace do not count."""
    return re.sub(r"\s+", " ", text.strip().casefold()).strip(" .!?\"'")


@dataclass
class PromptResults:
    passed: int  # prompts with `expected` whose answer contains it (case-insensitive)
    checked: int  # prompts with `expected`
    total: int
    exact_match: float | None  # share of checked prompts answered exactly (normalized)
    rows: list[dict[str, Any]]

    @property
    def all_passed(self) -> bool:
        return self.passed == self.checked


def check_prompts(cases: Sequence[PromptCase], outputs: Sequence[str]) -> PromptResults:
    rows = []
    for c, o in zip(cases, outputs, strict=True):
        row: dict[str, Any] = {"prompt": c.prompt, "output": o}
        if c.expected is not None:
            row["expected"] = c.expected
            row["contains"] = normalize(c.expected) in normalize(o)
            row["exact"] = normalize(o) == normalize(c.expected)
        rows.append(row)
    checked = [r for r in rows if "expected" in r]
    exact = sum(r["exact"] for r in checked) / len(checked) if checked else None
    return PromptResults(sum(r["contains"] for r in checked), len(checked), len(rows), exact, rows)
