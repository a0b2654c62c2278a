"""Language identification: accuracy and per-call latency of maestro.text.langid's stages vs py3langid.

    .venv/bin/python bench/langid.py --json

Labelled set: `tests/unit/text/langid_corpus.tsv` (140 chat-length sentences, 20 each in en de fr es
it pt nl, parallel across languages), scored as sentences and as paragraphs (three consecutive
sentences of one language). Compared: the fast stage alone (`detect`: scripts + function words, what
the monitor runs), the fast stage with the model behind it (`detect_with_model`, what the dataset
worker runs) and py3langid alone. `und` counts as a miss in `accuracy` and is reported apart from
wrong answers, which are worse (a language filter drops the record; `und` is kept). Latency is the
median over `--repeat` passes of the mean per call, model already loaded. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
CORPUS = ROOT / "tests" / "unit" / "text" / "langid_corpus.tsv"


def load() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rows = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            lang, text = line.split("\t", 1)
            rows.append((lang, text))
    by_lang: dict[str, list[str]] = {}
    for lang, text in rows:
        by_lang.setdefault(lang, []).append(text)
    paragraphs = [
        (lang, " ".join(ts[i : i + 3])) for lang, ts in by_lang.items() for i in range(0, len(ts), 2)
    ]
    return rows, paragraphs


def score(fn: Callable[[str], str], data: list[tuple[str, str]], repeat: int) -> dict[str, Any]:
    out = [fn(t) for _, t in data]
    right = sum(o == lang for (lang, _), o in zip(data, out, strict=True))
    und = sum(o == "und" for o in out)
    per_call = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _, t in data:
            fn(t)
        per_call.append((time.perf_counter() - t0) / len(data) * 1e6)
    return {
        "n": len(data),
        "accuracy": round(right / len(data), 4),
        "undetermined": und,
        "wrong": len(data) - right - und,
        "us_per_call": round(statistics.median(per_call), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from maestro.text import langid

    model = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    langid.detect_with_model("warm the model up")  # loads it: latency below excludes the ~1 s load
    rows, paragraphs = load()
    detectors: dict[str, Callable[[str], str]] = {
        "fast": langid.detect,
        "fast+model": langid.detect_with_model,
        "py3langid": lambda t: str(model.classify(t)[0]),
    }
    result: dict[str, Any] = {
        name: {"sentences": score(fn, rows, args.repeat), "paragraphs": score(fn, paragraphs, args.repeat)}
        for name, fn in detectors.items()
    }
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(result))
        return
    for name in detectors:
        for tier in ("sentences", "paragraphs"):
            r = result[name][tier]
            print(
                f"{name:11s} {tier:10s} accuracy {r['accuracy']:.3f}  und {r['undetermined']:3d}  "
                f"wrong {r['wrong']:2d}  {r['us_per_call']:7.1f} µs/call"
            )


if __name__ == "__main__":
    main()
