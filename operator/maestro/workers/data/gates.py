"""Quality gates: each is a named comparison of a measured value with a spec threshold.

Gates are evaluated on the cleaned data and all reported, passed or not, so a failing dataset shows
every problem at once. Two are special: failing `invalidRecords` means the records do not fit the
schema (exit code EXIT_SCHEMA_MISMATCH), failing `piiReject` that PII was found where the spec rejects
it (EXIT_PII_REJECTED); the operator reports those differently from a dataset that merely misses a bar.
"""

from __future__ import annotations

import math
from typing import Any

from maestro.workers.data.config import Config
from maestro.workers.data.pipeline import Result

INVALID_GATE = "invalidRecords"
PII_REJECT_GATE = "piiReject"


def _ratio(num: int, den: int) -> float:
    return round(num / den, 6) if den else 0.0


def evaluate(cfg: Config, res: Result) -> list[dict[str, Any]]:
    g = cfg.gates
    gates: list[dict[str, Any]] = []

    def gate(name: str, passed: bool, value: Any, threshold: Any, message: str) -> None:
        entry: dict[str, Any] = {"name": name, "passed": bool(passed), "value": value, "threshold": threshold}
        if not passed:
            entry["message"] = message
        gates.append(entry)

    invalid_ratio = _ratio(res.invalid, res.total)
    gate(
        INVALID_GATE,
        invalid_ratio <= g.max_invalid_ratio,
        invalid_ratio,
        g.max_invalid_ratio,
        f"{res.invalid} of {res.total} records are malformed; first: {res.first_error}",
    )
    gate(
        "minRecords",
        res.kept >= g.min_records,
        res.kept,
        g.min_records,
        f"only {res.kept} records kept after cleaning, {g.min_records} required",
    )
    if g.max_duplicate_ratio is not None:
        dup = _ratio(res.duplicates + res.near_duplicates, res.valid)
        gate(
            "maxDuplicateRatio",
            dup <= g.max_duplicate_ratio,
            dup,
            g.max_duplicate_ratio,
            f"{res.duplicates} exact and {res.near_duplicates} near duplicates in {res.valid} valid records",
        )
    if g.max_pii_ratio is not None:
        pii = _ratio(res.pii_records, res.scanned)
        gate(
            "maxPIIRatio",
            pii <= g.max_pii_ratio,
            pii,
            g.max_pii_ratio,
            f"{res.pii_records} of {res.scanned} scanned records hold PII",
        )
    if cfg.pii_action == "reject":
        gate(
            PII_REJECT_GATE,
            res.pii_records == 0,
            res.pii_records,
            0,
            f"processing.pii.action is reject and {res.pii_records} records hold PII "
            f"({', '.join(f'{k}={v}' for k, v in res.pii_by_type.most_common(5))})",
        )
    if g.allowed_languages:
        # undetermined (too short to tell) is not evidence of another language
        other = sum(
            n for lang, n in res.languages.items() if lang not in g.allowed_languages and lang != "und"
        )
        top = [f"{lang}={n}" for lang, n in res.languages.most_common() if lang not in g.allowed_languages]
        gate(
            "allowedLanguages",
            other == 0,
            other,
            0,
            f"{other} kept records are in languages outside {sorted(g.allowed_languages)}: "
            + ", ".join(top[:5]),
        )
    if res.representation is not None:
        imb = res.representation["imbalance"]
        counts = res.representation["counts"]
        never = [m for m, n in counts.items() if n == 0]
        passed = imb is None or imb <= g.max_imbalance
        message = (
            f"{', '.join(never)} never mentioned while others are ({counts})"
            if never
            else f"mentions per group {counts} are imbalanced beyond {g.max_imbalance}x"
        )
        # JSON has no infinity: a never-mentioned group reports value null and fails
        gate(
            "representation",
            passed,
            None if imb is None or math.isinf(imb) else imb,
            g.max_imbalance,
            message,
        )
    return gates
