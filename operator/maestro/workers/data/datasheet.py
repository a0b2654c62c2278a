"""report.html: a human datasheet (HF dataset-card sections, Gebru et al. questions) with inline SVG
charts. One self-contained file: no JavaScript, no CDN, no external fonts, so it renders offline
and from an artifact store that serves files as-is.
"""

from __future__ import annotations

from html import escape
from typing import Any

_COLORS = {"bar": "#3b6ea8", "ok": "#1f7a3a", "bad": "#b3261e", "muted": "#666"}


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def hbar_chart(items: list[tuple[str, float]], title: str, width: int = 560, unit: str = "") -> str:
    """Horizontal bars with labels and values; an empty list renders a 'none' note."""
    if not items:
        return f'<p class="muted">{escape(title)}: none.</p>'
    row, label_w, value_w = 22, 150, 90
    height = row * len(items) + 30
    top = max(v for _, v in items) or 1
    bar_w = width - label_w - value_w
    parts = [
        f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="0" y="14" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(items):
        y = 24 + i * row
        w = max(1.0, bar_w * value / top) if value else 0
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" font-size="12" text-anchor="end">{escape(label)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{_COLORS["bar"]}"/>'
        )
        parts.append(
            f'<text x="{label_w + w + 4:.1f}" y="{y + 14}" font-size="12">{escape(_fmt(value))}{unit}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(
    edges: list[int], counts: list[int], title: str, width: int = 560, height: int = 200
) -> str:
    if not counts:
        return f'<p class="muted">{escape(title)}: no records.</p>'
    left, bottom, top_pad = 50, 36, 22
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    peak = max(counts) or 1
    bw = plot_w / len(counts)
    parts = [
        f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="0" y="14" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" '
        'stroke="#999"/>',
        f'<text x="{left - 4}" y="{top_pad + 10}" font-size="11" text-anchor="end">{peak:,}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" font-size="11" text-anchor="end">0</text>',
    ]
    for i, c in enumerate(counts):
        h = plot_h * c / peak
        x = left + i * bw
        tip = f"{edges[i]:,}–{edges[i + 1]:,} chars: {c:,} records"
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top_pad + plot_h - h:.1f}" width="{max(bw - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{_COLORS["bar"]}"><title>{escape(tip)}</title></rect>'
        )
    step = max(1, len(counts) // 6)
    for i in range(0, len(edges), step):
        x = left + i * bw
        parts.append(
            f'<text x="{x:.1f}" y="{top_pad + plot_h + 14}" font-size="10" '
            f'text-anchor="middle">{edges[i]:,}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle">'
        "characters per record (log scale)</text></svg>"
    )
    return "".join(parts)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _gate_table(gates: list[dict[str, Any]]) -> str:
    rows = []
    for g in gates:
        ok = g["passed"]
        status = f'<span class="{"ok" if ok else "bad"}">{"passed" if ok else "FAILED"}</span>'
        rows.append(
            f"<tr><td>{escape(g['name'])}</td><td>{status}</td><td>{escape(_fmt(g.get('value')))}</td>"
            f"<td>{escape(_fmt(g.get('threshold')))}</td><td>{escape(g.get('message', ''))}</td></tr>"
        )
    return (
        '<table class="grid"><tr><th>gate</th><th>result</th><th>value</th><th>threshold</th>'
        "<th>detail</th></tr>" + "".join(rows) + "</table>"
    )


def render(report: dict[str, Any]) -> str:
    rec, stats, pii, gov = report["records"], report["stats"], report["pii"], report.get("governance") or {}
    proc, src = report["processing"], report["source"]
    passed = report["passed"]
    consent = gov.get("consent") or {}
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
    warnings = list(report.get("warnings") or [])
    if pii["recordsWithPII"] and not gov.get("containsPersonalData"):
        warnings.append(
            "governance.containsPersonalData is false, but PII was found in "
            f"{pii['recordsWithPII']:,} records (action: {proc['pii']['action']})"
        )
    if gov.get("containsPersonalData") and not consent.get("obtained"):
        warnings.append("the data holds personal data but governance.consent.obtained is false")
    rep = stats.get("representation")
    rep_html = (
        hbar_chart(sorted(rep["counts"].items(), key=lambda kv: -kv[1]), "Records mentioning each group")
        + f"<p>Imbalance (most / least mentioned): <b>{escape(_fmt(rep['imbalance']))}</b></p>"
        if rep
        else '<p class="muted">No representation groups configured (qualityGates.representation).</p>'
    )
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Datasheet {escape(report["version"] or "")}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em;
  color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; margin: .5em 0; }} td, th {{ padding: .25em .6em; text-align: left; }}
table.grid td, table.grid th {{ border: 1px solid #ddd; }} table.kv th {{ color: #555; font-weight: normal; }}
.ok {{ color: {_COLORS["ok"]}; font-weight: bold; }} .bad {{ color: {_COLORS["bad"]}; font-weight: bold; }}
.muted {{ color: {_COLORS["muted"]}; }} .banner {{ padding: .6em 1em; border-radius: 4px; }}
.banner.ok {{ background: #e6f4ea; }} .banner.bad {{ background: #fce8e6; }}
code {{ font-size: .9em; background: #f4f4f4; padding: 0 .2em; }}
svg {{ display: block; margin: .8em 0; }}
</style></head><body>
<h1>Datasheet — <code>{escape(report["version"] or "no version")}</code></h1>
<p class="banner {"ok" if passed else "bad"}">{
        "All quality gates passed."
        if passed
        else "Quality gates failed: " + escape(report.get("reason") or "")
    }</p>

<h2>Dataset details</h2>
{
        _table(
            [
                ("source", src["uri"]),
                ("format", src["format"]),
                ("record type", src["recordType"]),
                ("source sha256", src["sha256"]),
                ("source bytes", src["bytes"]),
                ("generated", report["generatedAt"]),
                ("worker", report["worker"]["maestro"]),
            ]
        )
    }
<p>{escape(gov.get("description") or "No description given (governance.description).")}</p>

<h2>Governance</h2>
{
        _table(
            [
                ("license", gov.get("license")),
                ("owner", gov.get("owner")),
                ("consent obtained", consent.get("obtained")),
                ("legal basis", consent.get("basis")),
                ("contains personal data", gov.get("containsPersonalData")),
                ("retention (days)", gov.get("retentionDays")),
            ]
        )
    }

<h2>Quality gates</h2>
{_gate_table(report["gates"])}

<h2>Composition</h2>
{hbar_chart(flow, "Record flow")}
{
        _table(
            [
                ("estimated tokens", stats.get("estimatedTokens")),
                ("length p50 (chars)", stats["lengthChars"]["p50"]),
                ("length p95 (chars)", stats["lengthChars"]["p95"]),
                ("length max (chars)", stats["lengthChars"]["max"]),
                ("distinct-1", stats.get("distinct1")),
                ("distinct-2", stats.get("distinct2")),
            ]
        )
    }
{histogram_svg(stats["lengthHistogram"]["edges"], stats["lengthHistogram"]["counts"], "Record length")}
{hbar_chart([(k, round(v * 100, 2)) for k, v in langs], "Languages (share of kept records)", unit="%")}

<h2>Collection and preprocessing</h2>
{
        _table(
            [
                ("exact dedup", proc["exactDedup"]),
                ("near dedup", proc["nearDedup"]["enabled"]),
                ("near-dup threshold (Jaccard)", proc["nearDedup"]["threshold"]),
                ("PII action", proc["pii"]["action"]),
                ("PII entities", ", ".join(proc["pii"]["entities"])),
                ("min chars", proc["filters"]["minChars"]),
                ("max chars", proc["filters"]["maxChars"]),
                ("languages kept", ", ".join(proc["filters"]["languages"]) or "all"),
                ("max profanity", proc["filters"]["maxProfanity"]),
                ("quality heuristics", proc["filters"]["heuristics"]),
                ("validation ratio", proc["split"]["validationRatio"]),
                ("split seed", proc["split"]["seed"]),
            ]
        )
    }
{hbar_chart(list(report["filteredByReason"].items()), "Records filtered, by reason")}
{
        "<p><b>Malformed records</b> (first "
        + str(len(report["invalid"]["examples"]))
        + "):</p><ul>"
        + "".join(f"<li><code>{escape(e)}</code></li>" for e in report["invalid"]["examples"])
        + "</ul>"
        if report["invalid"]["examples"]
        else ""
    }

<h2>Personal and sensitive information</h2>
{
        _table(
            [
                ("records scanned", pii["recordsScanned"]),
                ("records with PII", pii["recordsWithPII"]),
                ("share", pii["ratio"]),
                ("records redacted", rec["piiRedacted"]),
                ("records dropped", rec["piiDropped"]),
            ]
        )
    }
{hbar_chart(list(pii["byType"].items()), "PII findings by type")}

<h2>Bias, risks and limitations</h2>
{rep_html}
{_table([("records with profanity (share of kept)", stats.get("profanityRate"))])}
<p class="muted">Language identification uses function-word profiles ({
        ", ".join(["en", "de", "fr", "es", "it", "pt", "nl", "sv", "pl", "tr", "id"])
    }) and Unicode scripts; short records
are "und". Profanity and representation use built-in English lexicons: counts, not judgements.</p>
{"<ul>" + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>" if warnings else ""}

<h2>Files</h2>
{
        _table(
            [
                (name, f"{meta['records']:,} records, sha256 {meta['sha256']}")
                for name, meta in report["files"].items()
            ]
        )
    }
</body></html>
"""
    return html
