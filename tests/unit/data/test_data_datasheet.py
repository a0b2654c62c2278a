"""report.html: text from the spec and from the data stays text (the template autoescapes)."""

from __future__ import annotations

import json
from pathlib import Path

import data_helpers
import pytest
from data_helpers import Run, chat, write_jsonl

from maestro.workers.data import datasheet

pytestmark = pytest.mark.unit
run_validate = data_helpers.run_validate  # the fixture, shared without a conftest.py


def test_spec_and_data_text_is_escaped(tmp_path: Path, run_validate: object) -> None:
    rows: list[object] = [chat(f"question {i} about things", f"answer {i} with detail") for i in range(20)]
    # malformed (an unknown role): the datasheet quotes the record's error, with the role in it
    rows.append({"messages": [{"role": "<script>alert(1)</script>", "content": "hi"}]})
    spec = {
        "governance": {"description": 'Tickets <img src=x onerror="alert(2)"> & more', "owner": "a&b"},
    }
    run: Run = run_validate(write_jsonl(tmp_path / "d.jsonl", rows), spec)  # type: ignore[operator]
    html = (run.version_dir / "report.html").read_text()
    assert "<script" not in html and "<img" not in html
    assert "Tickets &lt;img src=x onerror=&#34;alert(2)&#34;&gt; &amp; more" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the malformed record, shown as text
    assert "<th>owner</th><td>a&amp;b</td>" in html


def test_render_shows_every_section_and_chart(tmp_path: Path, run_validate: object) -> None:
    rows = [chat(f"she asked question {i}", f"he gave answer {i} in detail") for i in range(30)]
    spec = {"qualityGates": {"representation": {"groups": {"female": ["she"], "male": ["he"]}}}}
    run: Run = run_validate(write_jsonl(tmp_path / "d.jsonl", rows), spec)  # type: ignore[operator]
    report = json.loads((run.version_dir / "report.json").read_text())
    html = datasheet.render(report)
    assert html == (run.version_dir / "report.html").read_text()
    for title in (
        "Record flow",
        "Record length",
        "Languages (share of kept records)",
        "Records mentioning each group",
    ):
        assert f'aria-label="{title}"' in html
    assert "Imbalance (most / least mentioned): <b>1</b>" in html
    assert "<th>quality heuristics</th><td>yes</td>" in html
    assert html.count("<h2>") == 8 and html.rstrip().endswith("</body></html>")
