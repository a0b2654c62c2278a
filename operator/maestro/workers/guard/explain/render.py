"""An explanation as a self-contained HTML heat map (every text escaped; no scripts, no fetches).

Each prompt segment is highlighted by its attribution: red where keeping it raises the response's
log-likelihood, blue where it lowers it, opacity relative to the largest magnitude. The text between
segments (template text excluded) is shown plainly so the prompt reads as written. The title of
each segment carries its exact value.
"""

from __future__ import annotations

from html import escape
from typing import Any

from maestro.text.heatmap import highlight

_STYLE = """
body{font:15px/1.6 system-ui,sans-serif;margin:24px;max-width:960px;color:#111}
.msg{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:8px 0;white-space:pre-wrap}
.role{font-size:12px;color:#666;text-transform:uppercase;display:block}
.seg{border-radius:3px;padding:0 1px}
.resp{background:#f6f6f6}
table{border-collapse:collapse;margin-top:12px}td,th{padding:2px 8px;text-align:left;font-size:13px}
"""


def to_html(exp: dict[str, Any]) -> str:
    """The heat map of one `/v1/explain` JSON answer."""
    segs = exp["segments"]
    scale = max((abs(s["attribution"]) for s in segs), default=0.0)
    parts: dict[int, list[dict[str, Any]]] = {}
    for s in segs:
        parts.setdefault(s["part"], []).append(s)
    blocks = []
    for p in exp["parts"]:
        body = highlight(p["text"], parts.get(p["index"], []), scale)
        role = escape(p.get("role") or "prompt")
        blocks.append(f'<div class="msg"><span class="role">{role}</span>{body}</div>')
    top = sorted(segs, key=lambda s: -s["attribution"])[:10]
    rows = "".join(f"<tr><td>{escape(s['text'])}</td><td>{s['attribution']:.4f}</td></tr>" for s in top)
    cost = exp.get("cost", {})
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Explanation</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Why this response</h1><p>method <b>{escape(str(exp['method']))}</b>, granularity "
        f"<b>{escape(str(exp['granularity']))}</b>, log p(response | prompt) = "
        f"{exp['log_likelihood']:.3f}; {cost.get('forward_passes', 0)} scored prompts in "
        f"{cost.get('seconds', 0)} s</p>"
        f"{''.join(blocks)}"
        f'<div class="msg resp"><span class="role">response</span>{escape(exp["response"])}</div>'
        f"<table><tr><th>top segment</th><th>attribution</th></tr>{rows}</table>"
        "</body></html>"
    )
