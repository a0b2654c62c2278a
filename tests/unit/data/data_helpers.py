"""Helpers for the dataset worker tests (a uniquely named module: every test dir has a conftest)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.workers.data.contract import Summary


@dataclass
class Run:
    code: int
    summary: Summary
    out: Path

    @property
    def version_dir(self) -> Path:
        assert self.summary["version"], self.summary
        return self.out / self.summary["version"]

    def lines(self, split: str) -> list[dict[str, Any]]:
        text = (self.version_dir / f"{split}.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    def report(self) -> dict[str, Any]:
        return json.loads((self.version_dir / "report.json").read_text(encoding="utf-8"))

    def gate(self, name: str) -> dict[str, Any]:
        return next(g for g in self.summary["gates"] if g["name"] == name)


def chat(user: str, assistant: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(rec if isinstance(rec, str) else json.dumps(rec))
            fh.write("\n")
    return path
