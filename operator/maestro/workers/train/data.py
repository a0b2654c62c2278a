"""Dataset records → token ids + labels: chat templates, completion-only loss, truncation, packing.

Input is the data worker's normalized JSONL (one record per line): chat `{"messages": [...]}`,
prompt-completion `{"prompt", "completion"}` or text `{"text"}`. Loss is taken on assistant turns
(chat) or completions only: the prompt tokens get label -100. Assistant spans are found by
rendering the conversation prefix by prefix with the tokenizer's own chat template, so any
prefix-stable template works without knowing its markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100
SCHEMAS = ("chat", "prompt-completion", "text")


class DataError(ValueError):
    """The dataset cannot be used as given: permanent, names file and line."""


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass
class DataStats:
    records: int = 0
    examples: int = 0
    truncated: int = 0
    dropped_no_labels: int = 0
    tokens: int = 0
    label_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record); skips blank lines, fails on malformed JSON with the line number."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object")
            yield n, rec


def infer_schema(record: dict[str, Any]) -> str:
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt-completion"
    if "text" in record:
        return "text"
    raise DataError(f"cannot tell the schema of a record with keys {sorted(record)}")


def to_messages(record: dict[str, Any], schema: str) -> list[dict[str, str]]:
    """Normalize chat and prompt-completion records to a message list."""
    if schema == "chat":
        msgs = record.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise DataError("chat record needs a non-empty 'messages' list")
        for m in msgs:
            if (
                not isinstance(m, dict)
                or not isinstance(m.get("role"), str)
                or not isinstance(m.get("content"), str)
            ):
                raise DataError("each message needs string 'role' and 'content'")
        return [{"role": m["role"], "content": m["content"]} for m in msgs]
    if schema == "prompt-completion":
        p, c = record.get("prompt"), record.get("completion")
        if not isinstance(p, str) or not isinstance(c, str):
            raise DataError("prompt-completion record needs string 'prompt' and 'completion'")
        return [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
    raise DataError(f"schema {schema!r} has no messages")


class Encoder:
    """Turns records into Examples with one tokenizer; remembers whether it has a chat template."""

    def __init__(self, tokenizer: Any, max_len: int) -> None:
        self.tok = tokenizer
        self.max_len = max_len
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        eos = tokenizer.eos_token_id
        self.eos: list[int] = [] if eos is None else [int(eos)]

    def render_prompt(self, prompt: str) -> str:
        """The text a model sees for a one-turn user prompt, ready for generation."""
        if self.has_template:
            text: str = self.tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            return text
        return prompt

    def _spans(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """Full rendered text + char spans of assistant turns (what the loss is taken on)."""
        full: str = self.tok.apply_chat_template(messages, tokenize=False)
        spans: list[tuple[int, int]] = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = (
                self.tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
                if i
                else ""
            )
            upto = self.tok.apply_chat_template(messages[: i + 1], tokenize=False)
            if not (full.startswith(upto) and upto.startswith(before)):
                raise DataError(
                    "the tokenizer's chat template is not prefix-stable (rendering a conversation prefix "
                    "does not give a prefix of the full rendering), so assistant turns cannot be located for "
                    "completion-only loss; use a template without history-dependent markup"
                )
            spans.append((len(before), len(upto)))
        return full, spans

    def encode(self, record: dict[str, Any], schema: str, stats: DataStats) -> Example | None:
        stats.records += 1
        if schema == "text":
            text = record.get("text")
            if not isinstance(text, str):
                raise DataError("text record needs a string 'text'")
            ids = list(self.tok(text, add_special_tokens=True)["input_ids"]) + self.eos
            labels = list(ids)
        elif self.has_template:
            full, spans = self._spans(to_messages(record, schema))
            enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            labels = [
                t if any(a <= start < b for a, b in spans) else IGNORE_INDEX
                for t, (start, _end) in zip(ids, enc["offset_mapping"], strict=True)
            ]
        else:  # no template: prompt + completion + EOS, loss on the completion
            msgs = to_messages(record, schema)
            if schema == "chat":
                raise DataError("chat data needs a tokenizer with a chat template; the base model has none")
            p_ids = list(self.tok(msgs[0]["content"], add_special_tokens=True)["input_ids"])
            c_ids = list(self.tok(msgs[1]["content"], add_special_tokens=False)["input_ids"]) + self.eos
            ids = p_ids + c_ids
            labels = [IGNORE_INDEX] * len(p_ids) + c_ids
        if len(ids) > self.max_len:
            stats.truncated += 1
            ids, labels = ids[: self.max_len], labels[: self.max_len]
        if len(ids) < 2 or all(x == IGNORE_INDEX for x in labels[1:]):
            stats.dropped_no_labels += 1
            return None
        stats.examples += 1
        stats.tokens += len(ids)
        stats.label_tokens += sum(1 for x in labels[1:] if x != IGNORE_INDEX)
        return Example(ids, labels)


def load_examples(
    path: Path,
    schema: str | None,
    tokenizer: Any,
    max_len: int,
    *,
    packing: bool = False,
    limit: int | None = None,
) -> tuple[list[Example], DataStats]:
    """Encode a JSONL split. Errors carry the file and line so the user can fix the record."""
    if not path.is_file():
        raise DataError(f"dataset split {path} does not exist")
    enc = Encoder(tokenizer, max_len)
    stats = DataStats()
    out: list[Example] = []
    for n, rec in read_jsonl(path):
        if limit is not None and len(out) >= limit:
            break
        try:
            ex = enc.encode(rec, schema or infer_schema(rec), stats)
        except DataError as e:
            raise DataError(f"{path}:{n}: {e}") from None
        if ex is not None:
            out.append(ex)
    if packing:
        out = pack(out, max_len)
        stats.extra["packedSequences"] = len(out)
    return out, stats


def pack(examples: Sequence[Example], max_len: int) -> list[Example]:
    """Concatenate examples (each ends with EOS) and cut into max_len blocks: no padding waste.

    Labels travel with their tokens, so completion-only masking survives packing. The first label of
    each example is masked so no block learns to predict a document start from the previous one.
    """
    ids: list[int] = []
    labels: list[int] = []
    for ex in examples:
        ids.extend(ex.input_ids)
        labels.append(IGNORE_INDEX)
        labels.extend(ex.labels[1:])
    blocks = []
    for i in range(0, len(ids), max_len):
        b_ids, b_labels = ids[i : i + max_len], labels[i : i + max_len]
        if len(b_ids) >= 2 and any(x != IGNORE_INDEX for x in b_labels[1:]):
            blocks.append(Example(b_ids, b_labels))
    return blocks


def collate(batch: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-pad a micro-batch into tensors: input_ids, attention_mask, labels."""
    import torch

    width = max(len(ex.input_ids) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ex in enumerate(batch):
        n = len(ex.input_ids)
        ids[i, :n] = torch.tensor(ex.input_ids)
        labels[i, :n] = torch.tensor(ex.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
