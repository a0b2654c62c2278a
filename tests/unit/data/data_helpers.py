"""Helpers and the `run_validate` fixture for the dataset worker tests.

A uniquely named module instead of a conftest.py: test dirs without __init__.py share the module
name `conftest`, and other suites do `from conftest import ...`. Test modules import the fixture.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from maestro.workers.data import cli
from maestro.workers.data.contract import Summary, parse_summary


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


@pytest.fixture
def run_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Run]:
    """Run the CLI on `source` with `spec` (camelCase dict; source.uri filled in) and parse the summary."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    counter = iter(range(1000))

    def run(source: Path | str, spec: dict[str, Any] | None = None, out: Path | None = None) -> Run:
        n = next(counter)
        spec = dict(spec or {})
        uri = source if isinstance(source, str) else "file://" + str(source)
        spec["source"] = {**spec.get("source", {}), "uri": uri}
        spec_path = tmp_path / f"spec-{n}.json"
        spec_path.write_text(json.dumps(spec))
        out = out or tmp_path / f"out-{n}"
        term = tmp_path / f"termination-{n}"
        capsys.readouterr()
        code = cli.main(
            [
                "validate",
                "--spec",
                str(spec_path),
                "--output",
                str(out),
                "--termination-path",
                str(term),
                "--quiet",
            ]
        )
        stdout = capsys.readouterr().out
        last = stdout.strip().splitlines()[-1]
        assert term.read_text() == last, "the termination message and the last stdout line must agree"
        assert len(last.encode()) <= 4096
        return Run(code, parse_summary(last), out)

    return run
