"""report.html: a human datasheet (HF dataset-card sections, Gebru et al. questions) with inline SVG
charts. One self-contained file: no JavaScript, no CDN, no external fonts, so it renders offline
and from an artifact store that serves files as-is.

The markup is templates/datasheet.html.j2, rendered with autoescaping: the report carries text from
the spec and from the data itself (descriptions, malformed records, gate messages), and none of it
may become markup. This module computes what the template shows: derived warnings and the charts'
geometry.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2

from maestro.text import langid

TEMPLATE = "datasheet.html.j2"
COLORS = {"bar": "#3b6ea8", "ok": "#1f7a3a", "bad": "#b3261e", "muted": "#666"}
#: The languages the function-word identifier has profiles for (named in the limitations section).
LANGID_PROFILES = langid.LANGUAGES
CHART_WIDTH = 560


def fmt(v: Any) -> str:
    """A report value as a person reads it: thousands separators, 4 significant digits, yes/no, — for none."""
    if v is None or isinstance(v, jinja2.Undefined):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def hbar_chart(items: list[tuple[str, float]], title: str, unit: str = "") -> dict[str, Any]:
    """Horizontal bars with labels and values, scaled to the largest; no items: a 'none' note."""
    row, label_width, value_width = 22, 150, 90
    top = max((v for _, v in items), default=0) or 1
    span = CHART_WIDTH - label_width - value_width
    bars = [
        {
            "y": 24 + i * row,
            "width": max(1.0, span * value / top) if value else 0,
            "label": label,
            "value": value,
        }
        for i, (label, value) in enumerate(items)
    ]
    return {
        "title": title,
        "unit": unit,
        "width": CHART_WIDTH,
        "height": row * len(items) + 30,
        "row": row,
        "label_width": label_width,
        "bars": bars,
    }


def histogram_chart(edges: list[int], counts: list[int], title: str, height: int = 200) -> dict[str, Any]:
    """Vertical bars over log-spaced length bins (report.length_histogram); ~6 axis labels."""
    left, bottom, top = 50, 36, 22
    plot_width, plot_height = CHART_WIDTH - left - 10, height - bottom - top
    peak = max(counts, default=0) or 1
    bar_step = plot_width / len(counts) if counts else 0.0
    bins = [
        {"x": left + i * bar_step, "height": plot_height * c / peak, "lo": lo, "hi": hi, "count": c}
        for i, (lo, hi, c) in enumerate(zip(edges, edges[1:], counts, strict=False))
    ]
    tick_every = max(1, len(counts) // 6)
    ticks = [{"x": left + i * bar_step, "label": edges[i]} for i in range(0, len(edges), tick_every)]
    return {
        "title": title,
        "width": CHART_WIDTH,
        "height": height,
        "left": left,
        "top": top,
        "plot_width": plot_width,
        "plot_height": plot_height,
        "peak": peak,
        "bar_width": max(bar_step - 2, 1),
        "bins": bins,
        "ticks": ticks if counts else [],
    }


def warnings_of(report: dict[str, Any]) -> list[str]:
    """The worker's warnings plus what the governance block claims and the data contradicts."""
    gov, pii = report.get("governance") or {}, report["pii"]
    consent = gov.get("consent") or {}
    warnings = list(report.get("warnings") or [])
    if pii["recordsWithPII"] and not gov.get("containsPersonalData"):
        warnings.append(
            "governance.containsPersonalData is false, but PII was found in "
            f"{pii['recordsWithPII']:,} records (action: {report['processing']['pii']['action']})"
        )
    if gov.get("containsPersonalData") and not consent.get("obtained"):
        warnings.append("the data holds personal data but governance.consent.obtained is false")
    return warnings


def render(report: dict[str, Any]) -> str:
    """report.json's dict (report.build_report) → the datasheet HTML."""
    rec, stats, pii = report["records"], report["stats"], report["pii"]
    gov = report.get("governance") or {}
    rep = stats.get("representation")
    flow = [
        ("read", rec["total"]),
        ("invalid", rec["invalid"]),
        ("exact duplicates", rec["duplicates"]),
        ("near duplicates", rec["nearDuplicates"]),
        ("filtered", rec["filtered"]),
        ("kept", rec["kept"]),
        ("train", rec["train"]),
        ("validation", rec["validation"]),
    ]
    langs = list(stats.get("languageShares", {}).items())[:12]
    charts = {
        "flow": hbar_chart(flow, "Record flow"),
        "lengths": histogram_chart(
            stats["lengthHistogram"]["edges"], stats["lengthHistogram"]["counts"], "Record length"
        ),
        "languages": hbar_chart(
            [(k, round(v * 100, 2)) for k, v in langs], "Languages (share of kept records)", unit="%"
        ),
        "filtered": hbar_chart(list(report["filteredByReason"].items()), "Records filtered, by reason"),
        "pii": hbar_chart(list(pii["byType"].items()), "PII findings by type"),
        "representation": hbar_chart(
            sorted(rep["counts"].items(), key=lambda kv: -kv[1]), "Records mentioning each group"
        )
        if rep
        else None,
    }
    files = [(name, f"{m['records']:,} records, sha256 {m['sha256']}") for name, m in report["files"].items()]
    return _template().render(
        report=report,
        src=report["source"],
        proc=report["processing"],
        rec=rec,
        stats=stats,
        pii=pii,
        gov=gov,
        consent=gov.get("consent") or {},
        representation=rep,
        charts=charts,
        invalid_examples=report["invalid"]["examples"],
        warnings=warnings_of(report),
        files=files,
        colors=COLORS,
        langid_profiles=LANGID_PROFILES,
    )


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("maestro.workers.data", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.filters["thousands"] = lambda n: f"{n:,}"
    return env.get_template(TEMPLATE)
