"""Prompt-injection detection: detection rates and latency of maestro.text.injection on its corpus.

    .venv/bin/python bench/injection.py [--split dev|test|all] [--misses] [--repeat 5]

Labelled set: `bench/injection/corpus.jsonl` (see `bench/injection/README.md`): attacks of the five
families in several languages, with obfuscated and encoded variants, and benign prompts, many of which
use the attacks' vocabulary. A prompt counts as flagged when `InjectionDetector().scan` returns any
finding at the default threshold, whatever its family: that is what the guard acts on. Reported per
split: TPR per family, language and obfuscation variant; FPR overall, per benign category and
language; how often the best finding's family is the labelled one. Latency is per `detect` call
(the guard's path) and per `scan` call, over every corpus prompt, median of `--repeat` passes per
prompt; then for three 100 KB documents: the repository's own docs (real technical prose), benign corpus
prompts glued together (dense in the attacks' vocabulary and in obfuscation-like text, several
languages), and the same with every 25th prompt an attack. Prints one JSON object; `--misses` adds
the missed attacks and the false alarms of the chosen split.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
CORPUS = ROOT / "bench" / "injection" / "corpus.jsonl"


def load() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def rate(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def grouped(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        groups[str(row.get(key, "-"))].append(row["flagged"])
    return {
        k: {"n": len(v), "flagged": sum(v), "rate": rate(sum(v), len(v))} for k, v in sorted(groups.items())
    }


def evaluate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    attacks = [r for r in rows if r["label"] == "attack"]
    benign = [r for r in rows if r["label"] == "benign"]
    tp, fp = sum(r["flagged"] for r in attacks), sum(r["flagged"] for r in benign)
    same = sum(r["top_family"] == r["family"] for r in attacks if r["flagged"])
    return {
        "attacks": len(attacks),
        "benign": len(benign),
        "tpr": rate(tp, len(attacks)),
        "fpr": rate(fp, len(benign)),
        "tpr_by_family": grouped(attacks, "family"),
        "tpr_by_lang": grouped(attacks, "lang"),
        "tpr_by_variant": grouped([r for r in attacks if "variant" in r], "variant"),
        "fpr_by_category": grouped(benign, "family"),
        "fpr_by_lang": grouped(benign, "lang"),
        "top_family_matches_label": rate(same, tp),
    }


def per_call_us(fn: Any, texts: list[str], repeat: int) -> dict[str, float]:
    samples = []
    for text in texts:
        best = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(text)
            best.append(time.perf_counter() - t0)
        samples.append(statistics.median(best) * 1e6)
    samples.sort()
    return {
        "p50_us": round(samples[len(samples) // 2], 1),
        "p99_us": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 1),
        "max_us": round(samples[-1], 1),
    }


def big_documents(rows: list[dict[str, Any]]) -> dict[str, str]:
    rng = random.Random(0)
    benign = [r["text"] for r in rows if r["label"] == "benign" and r["family"] == "benign_general"]
    attacks = [r["text"] for r in rows if r["label"] == "attack"]
    doc = []
    while sum(map(len, doc)) < 100_000:
        doc.append(rng.choice(benign))
    mixed = list(doc)
    for i in range(0, len(mixed), 25):
        mixed[i] = rng.choice(attacks)
    prose = "\n\n".join(
        p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    )
    return {
        "docs_100kb": (prose * (100_000 // max(1, len(prose)) + 1))[:100_000],
        "benign_100kb": " ".join(doc)[:100_000],
        "attack_dense_100kb": " ".join(mixed)[:100_000],
    }


def ms(fn: Any, text: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("dev", "test", "all"), default="all", help="split for --misses")
    ap.add_argument("--misses", action="store_true", help="list missed attacks and false alarms")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from maestro.text.injection import InjectionDetector, detect

    detector = InjectionDetector()
    rows = load()
    for row in rows:
        found = detector.scan(row["text"])
        row["flagged"] = bool(found)
        row["top_family"] = found[0].family if found else None
        row["top_rule"] = found[0].rule if found else None
    result: dict[str, Any] = {
        split: evaluate([r for r in rows if r["split"] == split]) for split in ("dev", "test")
    }
    result["all"] = {k: v for k, v in evaluate(rows).items() if k in ("attacks", "benign", "tpr", "fpr")}
    texts = [r["text"] for r in rows]
    result["latency"] = {
        "prompts": len(texts),
        "mean_chars": round(statistics.mean(map(len, texts)), 1),
        "detect": per_call_us(detect, texts, args.repeat),
        "scan": per_call_us(detector.scan, texts, args.repeat),
    }
    for name, doc in big_documents(rows).items():
        result["latency"][name] = {
            "detect_ms": ms(detect, doc, args.repeat),
            "scan_ms": ms(detector.scan, doc, args.repeat),
        }
    if args.misses:
        chosen = [r for r in rows if args.split in ("all", r["split"])]
        result["missed"] = [
            {"family": r["family"], "lang": r["lang"], "variant": r.get("variant"), "text": r["text"]}
            for r in chosen
            if r["label"] == "attack" and not r["flagged"]
        ]
        result["false_alarms"] = [
            {"family": r["family"], "rule": r["top_rule"], "text": r["text"]}
            for r in chosen
            if r["label"] == "benign" and r["flagged"]
        ]
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
