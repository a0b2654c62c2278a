"""report.json (every stat and gate) and the ≤ 4 KiB termination summary, built from a Result."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any, cast

import numpy as np

from maestro import __version__
from maestro.workers.data.config import Config
from maestro.workers.data.contract import (
    EXIT_GATES_FAILED,
    EXIT_OK,
    EXIT_PII_REJECTED,
    EXIT_SCHEMA_MISMATCH,
    Summary,
)
from maestro.workers.data.gates import INVALID_GATE, PII_REJECT_GATE
from maestro.workers.data.pipeline import Result

REPORT_SCHEMA = "llmops.dev/dataset-report/v1"


def length_stats(res: Result) -> dict[str, Any]:
    if not res.lengths:
        return {"min": 0, "max": 0, "mean": 0.0, "p50": 0, "p95": 0}
    a = np.frombuffer(res.lengths, dtype=np.uint32)
    p50, p95 = np.percentile(a, [50, 95], method="inverted_cdf")
    return {
        "min": int(a.min()),
        "max": int(a.max()),
        "mean": round(float(a.mean()), 1),
        "p50": int(p50),
        "p95": int(p95),
    }


def length_histogram(res: Result, bins: int = 24) -> dict[str, list[float]]:
    """Log-spaced bins (record lengths span orders of magnitude)."""
    if not res.lengths:
        return {"edges": [], "counts": []}
    a = np.frombuffer(res.lengths, dtype=np.uint32).astype(np.float64)
    lo, hi = max(1.0, a.min()), max(2.0, a.max() + 1)
    edges = np.unique(np.round(np.geomspace(lo, hi, bins + 1)))
    if len(edges) < 2:
        edges = np.array([lo, hi])
    counts, edges = np.histogram(a, bins=edges)
    return {"edges": [int(e) for e in edges], "counts": [int(c) for c in counts]}


def outcome(gates: list[dict[str, Any]]) -> tuple[int, str | None]:
    """(exit code, one-line reason) from the gate results."""
    failed = [g for g in gates if not g["passed"]]
    if not failed:
        return EXIT_OK, None
    # Malformed records say the schema is wrong, rejected PII that the data is; either outranks a bar.
    code, first = EXIT_GATES_FAILED, failed[0]
    for name, special in ((INVALID_GATE, EXIT_SCHEMA_MISMATCH), (PII_REJECT_GATE, EXIT_PII_REJECTED)):
        hit = next((g for g in failed if g["name"] == name), None)
        if hit is not None:
            code, first = special, hit
            break
    more = f" (+{len(failed) - 1} more failed gates)" if len(failed) > 1 else ""
    return code, f"{first['name']}: {first['message']}{more}"


def artifact_uris(res: Result, output_dir: str, prefix: str | None) -> dict[str, str]:
    if prefix:
        base = prefix if prefix.endswith("/") else prefix + "/"
    else:
        base = "file://" + os.path.abspath(output_dir).rstrip("/") + "/"
    root = f"{base}{res.version}/"
    return {"uri": root, "reportUri": root + "report.json", "datasheetUri": root + "report.html"}


def records_block(res: Result) -> dict[str, Any]:
    return {
        "total": res.total,
        "kept": res.kept,
        "duplicates": res.duplicates,
        "nearDuplicates": res.near_duplicates,
        "piiRedacted": res.pii_redacted,
        "piiDropped": res.pii_dropped,
        "piiByType": dict(res.pii_by_type.most_common()),
        "filtered": sum(res.filtered.values()),
        "invalid": res.invalid,
        "train": res.train,
        "validation": res.validation,
    }


def build_report(
    cfg: Config, res: Result, gates: list[dict[str, Any]], artifact: dict[str, str] | None
) -> dict[str, Any]:
    code, reason = outcome(gates)
    kept = res.kept or 1
    return {
        "schema": REPORT_SCHEMA,
        "version": res.version,
        "generatedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "worker": {"maestro": __version__},
        "passed": code == EXIT_OK,
        "exitCode": code,
        "reason": reason,
        "source": {
            "uri": res.source_uri,
            "format": res.source_format,
            "sha256": res.source_sha256,
            "bytes": res.source_bytes,
            "recordType": res.kind,
        },
        "processing": {
            "exactDedup": cfg.exact_dedup,
            "nearDedup": {
                "enabled": cfg.near_dedup,
                "threshold": cfg.near_threshold,
                "numPerm": cfg.num_perm,
                "candidatesVerified": res.near_candidates,
                "indexBytes": res.near_index_bytes,
            },
            "pii": {
                "action": cfg.pii_action,
                "entities": sorted(cfg.pii_entities),
                "notChecked": res.pii_unsupported,
            },
            "filters": {
                "minChars": cfg.filters.min_chars,
                "maxChars": cfg.filters.max_chars,
                "languages": sorted(cfg.filters.languages or []),
                "maxProfanity": cfg.filters.max_profanity,
                "heuristics": True,  # Gopher/C4 rules always run (quality.FilterConfig)
            },
            "split": {"validationRatio": cfg.validation_ratio, "seed": cfg.seed},
        },
        "records": records_block(res),
        "filteredByReason": dict(res.filtered.most_common()),
        "invalid": {"count": res.invalid, "examples": res.invalid_examples},
        "pii": {
            "recordsScanned": res.scanned,
            "recordsWithPII": res.pii_records,
            "ratio": round(res.pii_records / res.scanned, 6) if res.scanned else 0.0,
            "byType": dict(res.pii_by_type.most_common()),
        },
        "stats": {
            "languages": dict(res.languages.most_common()),
            "languageShares": {k: round(v / kept, 4) for k, v in res.languages.most_common()},
            "lengthChars": length_stats(res),
            "lengthHistogram": length_histogram(res),
            "estimatedTokens": res.chars // 4,
            "profanityRate": round(res.profane_records / kept, 6) if res.kept else 0.0,
            **res.diversity,
            "representation": res.representation,
        },
        "gates": gates,
        "governance": cfg.governance,
        "artifact": artifact,
        "files": {
            "train.jsonl": {"sha256": res.train_sha256, "records": res.train},
            "validation.jsonl": {"sha256": res.validation_sha256, "records": res.validation},
        },
        "warnings": res.warnings,
        "timing": {
            "seconds": round(res.seconds, 3),
            "recordsPerSecond": round(res.total / res.seconds, 1) if res.seconds else None,
        },
    }


def build_summary(report: dict[str, Any]) -> Summary:
    """The subset the operator writes to LLMDataset.status (see contract.Summary)."""
    stats = report["stats"]
    summary: dict[str, Any] = {
        "version": report["version"],
        "passed": report["passed"],
        "exitCode": report["exitCode"],
        "records": report["records"],
        "stats": {
            "languages": stats["languages"],
            "lengthChars": stats["lengthChars"],
            "estimatedTokens": stats["estimatedTokens"],
            "profanityRate": stats["profanityRate"],
            "distinct1": stats.get("distinct1"),
            "distinct2": stats.get("distinct2"),
        },
        "gates": report["gates"],
        "artifact": {"uri": report["artifact"]["uri"], "reportUri": report["artifact"]["reportUri"]}
        if report.get("artifact")
        else None,
        "sourceSha256": report["source"]["sha256"],
    }
    if report.get("reason"):
        summary["reason"] = report["reason"]
    return summary  # type: ignore[return-value]


def failure_summary(code: int, reason: str) -> Summary:
    """Summary for a run that produced no dataset (bad input before the end, I/O error)."""
    records = {
        k: 0
        for k in (
            "total",
            "kept",
            "duplicates",
            "nearDuplicates",
            "piiRedacted",
            "filtered",
            "invalid",
            "train",
            "validation",
        )
    }
    summary: dict[str, Any] = {
        "version": None,
        "passed": False,
        "exitCode": code,
        "records": {**records, "piiByType": {}},
        "stats": {},
        "gates": [],
        "artifact": None,
        "reason": reason.splitlines()[0][:1000] if reason else "",
    }
    return cast(Summary, summary)


def write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    os.replace(tmp, path)
