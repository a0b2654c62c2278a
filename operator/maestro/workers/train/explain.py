"""Offline explanations in the evaluation report: which prompt words the trained model's answers rest on.

Computed in-process on the fine-tuned model (the one that is gated and served), in torch, with no
model server: leave-one-out occlusion over the words of a prompt (the segments of
`maestro.text.segments`, the same spans the guard's `/v1/explain` uses), each perturbed prompt
scored as a log-likelihood of a fixed response, many perturbations per forward pass.

- Evaluation prompts (those with `expected`): the response is the expected text, so a word's
  attribution is how much log p(expected | prompt) falls when that word is deleted: the words the
  gated answer depends on. The model's own answer is recorded next to it.
- Bias probes: for each attribute, the two terms at the ends of its largest gap (sentiment or
  refusal, whichever is furthest over its threshold, relative), and per template their two answers
  A (the high term's) and B (the low term's). The explained score is the contrast
  c(prompt) = log p(A | prompt) - log p(B | prompt): how strongly the prompt favours the high term's
  answer over the low term's. Occlusion over the high-term prompt (the group term is one segment,
  even when it is several words) says which words drive that preference; `swapEffect` =
  c(high prompt) - c(low prompt) is what swapping the group term alone does. This measures the
  model's likelihoods of the two answers it actually gave, not the sentiment lexicon or the refusal
  detector themselves: a large group-term attribution means the term, rather than the rest of the
  template, decides between the more and the less positive (or refused) answer.

Cost is bounded by the spec (`evaluation.explain`: maxPrompts, maxProbes, maxSegments): one
explanation scores segments + 1 sequences (probes: twice that, plus two), so at most
(maxPrompts + 2 * maxProbes) * (maxSegments + 1) + 2 * maxProbes sequences in all.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.text.heatmap import highlight
from maestro.text.segments import Segment, masked, spans
from maestro.workers.train.config import ExplainSettings, PromptCase
from maestro.workers.train.data import Encoder

HTML_FILE = "explanations.html"
JSON_FILE = "explanations.json"


class Scorer:
    """log p(response | prompt) under the model, the prompt rendered with the chat template, batched."""

    def __init__(self, model: Any, tokenizer: Any, device: Any, batch_size: int = 16) -> None:
        self.model = model
        self.tok = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.enc = Encoder(tokenizer, max_len=10**9)
        pad = tokenizer.pad_token_id
        self.pad = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
        self.sequences = 0  # scored (prompt, response) pairs, for the cost report

    def _ids(self, prompt: str, response: str) -> tuple[list[int], int]:
        rendered = self.enc.render_prompt(prompt)
        p = list(self.tok(rendered, add_special_tokens=not self.enc.has_template)["input_ids"])
        r = list(self.tok(response, add_special_tokens=False)["input_ids"])
        return p + r, len(p)

    def logp(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of the response tokens' log-probabilities for each (prompt, response)."""
        import torch

        encoded = [self._ids(p, r) for p, r in pairs]
        out: list[float] = [0.0] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # less padding
        self.model.eval()
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                width = max(len(encoded[i][0]) for i in idx)
                ids = torch.full((len(idx), width), self.pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):  # right padding: positions stay those of the unpadded text
                    seq = encoded[i][0]
                    ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False
                ).logits.float()
                logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
                target = ids[:, 1:].to(self.device)
                tok_lp = logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1).cpu()
                for row, i in enumerate(idx):
                    seq, plen = encoded[i]
                    # token t is predicted at position t-1: the response's tokens are plen..len-1
                    out[i] = float(tok_lp[row, plen - 1 : len(seq) - 1].sum())
        self.sequences += len(encoded)
        return out


def word_segments(
    text: str, max_segments: int, whole: Sequence[tuple[int, int]] = ()
) -> tuple[list[Segment], int]:
    """The prompt's word segments, at most `max_segments`; and how many words they cover.

    Spans inside a `whole` range (a bias probe's group term) become that one segment. Past the cap,
    runs of neighbouring words are joined into one segment (the fewest words per segment that fits),
    so every word is still attributed, more coarsely; a `whole` span is never joined with others.
    """
    words = spans(text, "word")
    units: list[tuple[int, int, bool]] = []  # (start, end, is a whole span)
    for s, e in words:
        w = next(((a, b) for a, b in whole if a <= s and e <= b), None)
        if w is None:
            units.append((s, e, False))
        elif not units or units[-1][:2] != w:
            units.append((w[0], w[1], True))
    per = 1
    while True:
        merged: list[tuple[int, int]] = []
        run: list[tuple[int, int]] = []
        for s, e, fixed in units:
            if fixed:
                if run:
                    merged.append((run[0][0], run[-1][1]))
                    run = []
                merged.append((s, e))
                continue
            run.append((s, e))
            if len(run) == per:
                merged.append((run[0][0], run[-1][1]))
                run = []
        if run:
            merged.append((run[0][0], run[-1][1]))
        if len(merged) <= max_segments or per >= len(units):
            break
        per += 1
    merged = merged[:max_segments]  # only when whole spans alone exceed the cap
    return [Segment(0, s, e, text[s:e]) for s, e in merged], len(words)


def _masks(n: int) -> list[list[bool]]:
    """All kept, then each segment left out once (leave-one-out occlusion)."""
    return [[True] * n] + [[j != i for j in range(n)] for i in range(n)]


def _variants(text: str, segs: Sequence[Segment]) -> list[str]:
    return [masked(text, [0], segs, keep) for keep in _masks(len(segs))]


def _seg_rows(segs: Sequence[Segment], attributions: Sequence[float]) -> list[dict[str, Any]]:
    return [
        {"index": i, "start": s.start, "end": s.end, "text": s.text, "attribution": round(a, 5)}
        for i, (s, a) in enumerate(zip(segs, attributions, strict=True))
    ]


def explain_prompt(scorer: Scorer, case: PromptCase, answer: str, max_segments: int) -> dict[str, Any]:
    """Occlusion of one evaluation prompt on log p(expected | prompt)."""
    assert case.expected is not None
    segs, words = word_segments(case.prompt, max_segments)
    ys = scorer.logp([(v, case.expected) for v in _variants(case.prompt, segs)])
    attr = [ys[0] - y for y in ys[1:]]
    rows = _seg_rows(segs, attr)
    top = max(rows, key=lambda r: r["attribution"], default=None)
    return {
        "kind": "prompt",
        "prompt": case.prompt,
        "response": case.expected,
        "answer": answer,
        "score": "log p(expected | prompt)",
        "value": round(ys[0], 5),
        "words": words,
        "segments": rows,
        "top": top["text"] if top else None,
    }


def _term_span(template: str, term: str) -> tuple[str, list[tuple[int, int]]]:
    parts = template.split("{group}")
    text, found, pos = "", [], 0
    for i, p in enumerate(parts):
        text += p
        pos += len(p)
        if i < len(parts) - 1:
            found.append((pos, pos + len(term)))
            text += term
            pos += len(term)
    return text, found


def _probe_pairs(
    bias_report: Mapping[str, Any], templates: Sequence[str], thresholds: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Per attribute: the metric furthest over its threshold and its two extreme terms' answers."""
    by_cell: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s in bias_report.get("samples", []):
        by_cell[(s["group"], s["term"], s["prompt"])] = s
    pairs: list[dict[str, Any]] = []
    groups = bias_report.get("groups", {})
    ranked = sorted(
        groups.items(),
        key=lambda g: (
            -max(
                g[1]["sentimentGap"] / max(thresholds["sentiment"], 1e-9),
                g[1]["refusalGap"] / max(thresholds["refusal"], 1e-9),
            )
        ),
    )
    for name, g in ranked:
        s_ratio = g["sentimentGap"] / max(thresholds["sentiment"], 1e-9)
        r_ratio = g["refusalGap"] / max(thresholds["refusal"], 1e-9)
        metric, key = ("refusal", "refusal_rate") if r_ratio > s_ratio else ("sentiment", "sentiment")
        ranked_terms = sorted(g["terms"], key=lambda t: g["terms"][t][key])  # stable: ties keep order
        lo, hi = ranked_terms[0], ranked_terms[-1]  # distinct: a group has at least two terms
        pairs.append({"group": name, "metric": metric, "hi": hi, "lo": lo, "gap": g[f"{metric}Gap"]})
    out = []
    for p in pairs:
        for t in templates:
            hi_prompt, _ = _term_span(t, p["hi"])
            lo_prompt, _ = _term_span(t, p["lo"])
            a = by_cell.get((p["group"], p["hi"], hi_prompt))
            b = by_cell.get((p["group"], p["lo"], lo_prompt))
            if a is None or b is None or a["output"] == b["output"]:
                continue  # the same answer: no preference to explain
            out.append({**p, "template": t, "a": a, "b": b})
    # round-robin over attributes (worst first) so a cap covers every attribute before repeating one
    order: list[dict[str, Any]] = []
    buckets: dict[str, list[dict[str, Any]]] = {}
    for x in out:
        buckets.setdefault(x["group"], []).append(x)
    while any(buckets.values()):
        for g in list(buckets):
            if buckets[g]:
                order.append(buckets[g].pop(0))
    return order


def explain_probe(scorer: Scorer, pair: Mapping[str, Any], max_segments: int) -> dict[str, Any]:
    """Occlusion of the high-term prompt on c = log p(A | prompt) - log p(B | prompt)."""
    text, whole = _term_span(pair["template"], pair["hi"])
    lo_text, _ = _term_span(pair["template"], pair["lo"])
    segs, words = word_segments(text, max_segments, whole)
    a, b = pair["a"]["output"], pair["b"]["output"]
    variants = [*_variants(text, segs), lo_text]
    ys = scorer.logp([(v, a) for v in variants] + [(v, b) for v in variants])
    k = len(variants)
    contrast = [ya - yb for ya, yb in zip(ys[:k], ys[k:], strict=True)]
    attr = [contrast[0] - c for c in contrast[1:-1]]
    rows = _seg_rows(segs, attr)
    for r, s in zip(rows, segs, strict=True):
        r["groupTerm"] = any(w[0] <= s.start and s.end <= w[1] for w in whole)
    total = sum(abs(r["attribution"]) for r in rows)
    term_attr = sum(r["attribution"] for r in rows if r["groupTerm"])
    ranked = sorted(rows, key=lambda r: -r["attribution"])
    term_rank = next((i + 1 for i, r in enumerate(ranked) if r["groupTerm"]), None)
    metric_key = "refusal" if pair["metric"] == "refusal" else "sentiment"
    return {
        "kind": "probe",
        "group": pair["group"],
        "metric": pair["metric"],
        "gap": round(float(pair["gap"]), 4),
        "terms": {"high": pair["hi"], "low": pair["lo"]},
        "template": pair["template"],
        "prompt": text,
        "lowPrompt": lo_text,
        "response": a,
        "lowResponse": b,
        "responseScores": {"high": pair["a"][metric_key], "low": pair["b"][metric_key]},
        "score": "log p(high-term answer | prompt) - log p(low-term answer | prompt)",
        "value": round(contrast[0], 5),
        "swapEffect": round(contrast[0] - contrast[-1], 5),
        "groupTermAttribution": round(term_attr, 5),
        "groupTermShare": round(abs(term_attr) / total, 4) if total > 0 else None,
        "groupTermRank": term_rank,
        "words": words,
        "segments": rows,
        "top": ranked[0]["text"] if ranked else None,
    }


@dataclass
class Explanations:
    """What the evaluation explained, and what it cost."""

    items: list[dict[str, Any]]
    seconds: float
    sequences: int
    skipped_prompts: int  # evaluation prompts with `expected` beyond maxPrompts
    skipped_probes: int  # probe pairs beyond maxProbes

    def to_json(self, settings: ExplainSettings) -> dict[str, Any]:
        return {
            "method": "occlusion",
            "granularity": "word",
            "limits": {
                "maxPrompts": settings.max_prompts,
                "maxProbes": settings.max_probes,
                "maxSegments": settings.max_segments,
            },
            "cost": {"seconds": round(self.seconds, 3), "scoredSequences": self.sequences},
            "skipped": {"prompts": self.skipped_prompts, "probes": self.skipped_probes},
            "explanations": self.items,
        }

    def summary(self) -> dict[str, Any]:
        """The compact form for the termination message (the files hold the rest)."""
        return {
            "html": HTML_FILE,
            "json": JSON_FILE,
            "prompts": sum(1 for x in self.items if x["kind"] == "prompt"),
            "probes": sum(1 for x in self.items if x["kind"] == "probe"),
            "seconds": round(self.seconds, 3),
        }


def explain(
    scorer: Scorer,
    settings: ExplainSettings,
    cases: Sequence[PromptCase],
    answers: Sequence[str],
    bias_report: Mapping[str, Any] | None,
    templates: Sequence[str],
    thresholds: Mapping[str, float],
) -> Explanations:
    """Explain up to maxPrompts evaluation prompts with `expected`, then up to maxProbes probe pairs.

    `bias_report` is `BiasReport.to_report()` (its samples hold every probe answer), `templates` the
    probe templates it ran, `thresholds` {sentiment, refusal}: the gates that rank the attributes.
    """
    t0 = time.perf_counter()
    items: list[dict[str, Any]] = []
    checked = [(c, a) for c, a in zip(cases, answers, strict=True) if c.expected is not None]
    for c, a in checked[: settings.max_prompts]:
        items.append(explain_prompt(scorer, c, a, settings.max_segments))
    pairs = _probe_pairs(bias_report, templates, thresholds) if bias_report else []
    for p in pairs[: settings.max_probes]:
        items.append(explain_probe(scorer, p, settings.max_segments))
    return Explanations(
        items=items,
        seconds=time.perf_counter() - t0,
        sequences=scorer.sequences,
        skipped_prompts=max(0, len(checked) - settings.max_prompts),
        skipped_probes=max(0, len(pairs) - settings.max_probes),
    )


_STYLE = """
body{font:15px/1.6 system-ui,sans-serif;margin:24px;max-width:1000px;color:#111}
section{border-top:1px solid #ccc;margin-top:18px;padding-top:6px}
.msg{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:6px 0;white-space:pre-wrap}
.role{font-size:12px;color:#666;text-transform:uppercase;display:block}
.seg{border-radius:3px;padding:0 1px}.resp{background:#f6f6f6}.meta{font-size:13px;color:#444}
"""


def _block(role: str, body: str, cls: str = "msg") -> str:
    return f'<div class="{cls}"><span class="role">{html.escape(role)}</span>{body}</div>'


def _section(x: Mapping[str, Any]) -> str:
    e = html.escape
    segs = x["segments"]
    scale = max((abs(s["attribution"]) for s in segs), default=0.0)
    heat = highlight(x["prompt"], segs, scale)
    if x["kind"] == "prompt":
        head = f"<h2>Prompt: {e(x['prompt'][:80])}</h2>"
        meta = (
            f"<p class=meta>score {e(x['score'])} = {x['value']:.3f}; top word <b>{e(str(x['top']))}</b>; "
            f"{len(segs)} segments over {x['words']} words</p>"
        )
        return (
            f"<section>{head}{meta}{_block('prompt', heat)}"
            f"{_block('expected (explained)', e(x['response']), 'msg resp')}"
            f"{_block('model answer', e(x['answer']), 'msg resp')}</section>"
        )
    share = x["groupTermShare"]
    head = (
        f"<h2>Bias probe: {e(x['group'])} ({e(x['metric'])} gap {x['gap']}): "
        f"{e(x['terms']['high'])} vs {e(x['terms']['low'])}</h2>"
    )
    meta = (
        f"<p class=meta>score {e(x['score'])} = {x['value']:.3f}; swapping the term alone changes it by "
        f"{x['swapEffect']:.3f}; group term attribution {x['groupTermAttribution']:.3f} "
        f"(rank {x['groupTermRank']}, share {'n/a' if share is None else f'{share:.0%}'}); "
        f"top word <b>{e(str(x['top']))}</b></p>"
    )
    rs, metric, terms = x["responseScores"], x["metric"], x["terms"]
    hi_label = f"its answer ({metric} {rs['high']})"
    lo_label = f"answer with {terms['low']} ({metric} {rs['low']})"
    return (
        f"<section>{head}{meta}{_block(str(terms['high']) + ' prompt', heat)}"
        f"{_block(hi_label, e(x['response']), 'msg resp')}"
        f"{_block(lo_label, e(x['lowResponse']), 'msg resp')}</section>"
    )


def to_html(doc: Mapping[str, Any]) -> str:
    """The report page: one heat map per explanation; every model or user text escaped, no scripts."""
    cost = doc["cost"]
    sk = doc["skipped"]
    body = "".join(_section(x) for x in doc["explanations"]) or "<p>Nothing to explain.</p>"
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Evaluation explanations</title>'
        f"<style>{_STYLE}</style></head><body><h1>Evaluation explanations</h1>"
        "<p class=meta>Leave-one-out occlusion over words on the fine-tuned model: red words raise the "
        "explained score when kept, blue ones lower it. "
        f"{cost['scoredSequences']} scored sequences in {cost['seconds']} s; "
        f"not explained (over the limits): {sk['prompts']} prompts, {sk['probes']} probe pairs.</p>"
        f"{body}</body></html>"
    )


def write(out_dir: Path, doc: Mapping[str, Any]) -> None:
    (out_dir / JSON_FILE).write_text(json.dumps(doc, indent=1, default=str))
    (out_dir / HTML_FILE).write_text(to_html(doc))
