"""Token heat maps: a text with its attributed spans highlighted, as escaped HTML.

Shared by the guard's `/v1/explain?format=html` and the trainer's `explanations.html`, so both read
the same way: red where keeping a span raises the response's log-likelihood, blue where it lowers
it, opacity relative to the largest magnitude on the page. Every text is escaped; the output holds
no scripts and fetches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any


def color(value: float, scale: float) -> str:
    """The background of a span attributed `value` when the largest magnitude is `scale`."""
    a = 0.0 if scale <= 0 else min(1.0, abs(value) / scale)
    rgb = "220,38,38" if value >= 0 else "37,99,235"
    return f"rgba({rgb},{a * 0.85:.3f})"


def highlight(text: str, segments: Iterable[Mapping[str, Any]], scale: float) -> str:
    """`text` escaped, each segment ({start, end, attribution, index}, in order) a coloured span.

    The text between segments is shown plainly, so the prompt reads as written; each span's title
    carries its exact value.
    """
    out, pos = [], 0
    for s in segments:
        out.append(escape(text[pos : s["start"]]))
        shown = escape(str(s.get("text", text[s["start"] : s["end"]])))
        out.append(
            f'<span class="seg" data-index="{s["index"]}" title="{s["attribution"]:.4f}" '
            f'style="background:{color(s["attribution"], scale)}">{shown}</span>'
        )
        pos = s["end"]
    out.append(escape(text[pos:]))
    return "".join(out)
