"""Drift reference from a training dataset: compare live traffic with what the model learned from.

By default the monitor learns its reference from the first N requests, which answers "has the
traffic changed since we went live?". A reference built from the LLMDataset the model was trained
on answers the sharper question "is the model now seeing prompts unlike its training data?".
The texts are measured as the guard measures them (a chat prompt is its message contents joined
by newlines), binned with the same fixed edges, and written in the monitor's reference format
(`MAESTRO_DRIFT_REFERENCE_FILE`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from maestro.workers.monitor import contract as c
from maestro.workers.monitor.drift import DriftMonitor, save_reference_file
from maestro.workers.monitor.signals import UNDETERMINED, TextAnalyzer


def texts_of(
    record: dict[str, Any], prompt_field: str, completion_field: str
) -> tuple[str | None, str | None]:
    """(prompt, response) of one dataset record: prompt-completion, chat (`messages`) or text."""
    messages = record.get("messages")
    if isinstance(messages, list) and messages:
        contents = [m.get("content") for m in messages if isinstance(m, dict)]
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        answer: str | None = None
        if last.get("role") == "assistant" and isinstance(last.get("content"), str):
            contents, answer = contents[:-1], last["content"]
        joined = "\n".join(p for p in contents if isinstance(p, str))
        return joined or None, answer
    prompt = record.get(prompt_field)
    response = record.get(completion_field)
    return (
        prompt if isinstance(prompt, str) else None,
        response if isinstance(response, str) else None,
    )


def read_jsonl(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e})") from e
                if isinstance(record, dict):
                    yield record


def build_reference(
    records: Iterable[dict[str, Any]],
    *,
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    limit: int = 100_000,
    analyzer: TextAnalyzer | None = None,
) -> tuple[DriftMonitor, int]:
    """A DriftMonitor whose references are the dataset's distributions; returns it and the count."""
    analyzer = analyzer or TextAnalyzer()
    drift = DriftMonitor(c.DRIFT_FEATURES, reference_size=limit + 1, window=1, threshold=0)
    n = 0
    for record in records:
        if n >= limit:
            break
        prompt, response = texts_of(record, prompt_field, completion_field)
        if prompt is None and response is None:
            continue
        n += 1
        for direction, text in (("prompt", prompt), ("response", response)):
            if text is None:
                continue
            drift.observe_length(f"{direction}_chars", len(text))
            language = analyzer.language(text)
            if language != UNDETERMINED or len(text) >= 20:  # the same rule as for live traffic
                drift.observe(f"{direction}_language", language)
    for feature in drift.features.values():
        feature.frozen = feature.reference_count > 0
    return drift, n


def write_reference(
    inputs: list[Path], out: Path, *, prompt_field: str, completion_field: str, limit: int
) -> tuple[int, list[str]]:
    """Build from JSONL files (a file or an LLMDataset version directory) and write `out`."""
    files: list[Path] = []
    for p in inputs:
        files += sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files:
        raise ValueError(f"no JSONL files in {', '.join(map(str, inputs))}")
    drift, n = build_reference(
        read_jsonl(files), prompt_field=prompt_field, completion_field=completion_field, limit=limit
    )
    if n == 0:
        raise ValueError(
            f"no usable records in {', '.join(map(str, files))}: expected '{prompt_field}'/"
            f"'{completion_field}' fields or chat 'messages'"
        )
    save_reference_file(drift, str(out))
    return n, [name for name, f in drift.features.items() if f.frozen]
