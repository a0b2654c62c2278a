"""Fixtures for the dataset worker tests: write sources, run `maestro data validate` in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from data_helpers import Run

from maestro.workers.data import cli
from maestro.workers.data.contract import parse_summary


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
