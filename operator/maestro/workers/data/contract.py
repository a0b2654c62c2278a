"""The contract between the LLMDataset builder/reconciler and the data worker (`maestro data validate`).

Both sides import this module, so the env names, exit codes and the termination-message shape are
defined exactly once. Stdlib and maestro.api only: the operator imports it without numpy or pyarrow.
"""

from __future__ import annotations

import json
from typing import Any, NotRequired, TypedDict

from maestro.api.common import PIIEntity

# --- environment -----------------------------------------------------------------------------------

#: The LLMDataset `.spec`, camelCase JSON (the worker also accepts `--spec FILE`).
ENV_SPEC = "MAESTRO_SPEC"
#: Where versioned outputs go: `<dir>/<version>/` with train.jsonl, validation.jsonl, report.json/.html.
ENV_OUTPUT_DIR = "MAESTRO_OUTPUT_DIR"
DEFAULT_OUTPUT_DIR = "/mnt/maestro/output"
#: Prefix the worker puts in front of `<version>/` for `artifact.uri` (e.g. `pvc://claim/datasets/`).
#: Unset: `file://<output dir>/`.
ENV_ARTIFACT_PREFIX = "MAESTRO_ARTIFACT_PREFIX"
#: Kubernetes reads the container's termination message from here (≤ 4 KiB).
ENV_TERMINATION_PATH = "MAESTRO_TERMINATION_PATH"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
#: `pvc://claim/path` sources are read from `<root>/<claim>/path`; the builder mounts claims there.
ENV_PVC_ROOT = "MAESTRO_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/maestro/source"
#: Dataset versions that LLMTrainingJobs pin (`sha256:<hex>`, comma-separated, sorted): retention
#: pruning (spec.governance.retentionDays) never deletes them. Unset or empty: nothing is pinned.
ENV_PINNED_VERSIONS = "MAESTRO_PINNED_VERSIONS"
#: Keys the worker reads from `source.credentialsSecretRef` (mount the Secret with `envFrom`).
#: s3:// uses the AWS names (AWS_ENDPOINT_URL points at MinIO & co.); https:// sends
#: `Authorization: $MAESTRO_SOURCE_AUTHORIZATION` verbatim, else `Bearer $MAESTRO_SOURCE_TOKEN` (or
#: `HF_TOKEN`); gs:// goes through fsspec/gcsfs, which reads GOOGLE_APPLICATION_CREDENTIALS.
SOURCE_CREDENTIAL_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "MAESTRO_SOURCE_AUTHORIZATION",
    "MAESTRO_SOURCE_TOKEN",
    "HF_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
)

#: The container command the builder renders; the worker reads everything else from env.
COMMAND = ("maestro", "data", "validate")

# --- exit codes ------------------------------------------------------------------------------------

EXIT_OK = 0
#: An unexpected bug in the worker (uncaught exception); retrying will not help either.
EXIT_INTERNAL = 1
#: The source or the spec is wrong (unreadable format, no records, bad URI): permanent.
EXIT_BAD_INPUT = 2
#: The data was processed but at least one quality gate failed: permanent until the data changes.
EXIT_GATES_FAILED = 3
#: Reading the source or writing outputs failed (network, permissions, disk full): retriable.
EXIT_IO_ERROR = 4
#: The source's SHA-256 differs from spec.source.sha256: permanent until the pin or the data changes.
EXIT_CHECKSUM_MISMATCH = 5
#: Records do not fit spec.schema (the invalidRecords gate, or a schema that cannot apply): permanent.
EXIT_SCHEMA_MISMATCH = 6
#: processing.pii.action is reject and PII was found (the piiReject gate): permanent.
EXIT_PII_REJECTED = 7

EXIT_REASONS = {
    EXIT_OK: "Succeeded",
    EXIT_INTERNAL: "InternalError",
    EXIT_BAD_INPUT: "InvalidInput",
    EXIT_GATES_FAILED: "GatesFailed",
    EXIT_IO_ERROR: "IOError",
    EXIT_CHECKSUM_MISMATCH: "ChecksumMismatch",
    EXIT_SCHEMA_MISMATCH: "SchemaMismatch",
    EXIT_PII_REJECTED: "PIIRejected",
}
RETRIABLE_EXIT_CODES = frozenset({EXIT_IO_ERROR})

#: PII entity names shared with the guard: the API enum is the one list.
PII_ENTITIES: tuple[str, ...] = tuple(e.value for e in PIIEntity)

MAX_SUMMARY_BYTES = 4096
#: Pruned versions (71 characters each) and prune errors listed in the summary; prunedCount has the total.
MAX_PRUNED_LISTED = 20
MAX_PRUNE_ERRORS = 5


# --- termination summary ---------------------------------------------------------------------------


class RecordCounts(TypedDict):
    total: int  # records read, valid or not
    kept: int  # train + validation
    duplicates: int  # exact duplicates (after normalization) removed
    nearDuplicates: int  # MinHash-LSH near duplicates removed
    piiRedacted: int  # kept records with at least one redaction
    piiDropped: NotRequired[int]  # records dropped for PII (action drop); also counted in `filtered`
    piiByType: dict[str, int]  # findings per entity over all scanned records
    filtered: int  # dropped by filters (length, language, quality, profanity, PII drop)
    invalid: int  # records that failed the schema mapping
    train: int
    validation: int


class LengthStats(TypedDict, total=False):
    min: int
    max: int
    mean: float
    p50: int
    p95: int


class Stats(TypedDict, total=False):
    languages: dict[str, int]  # language code (ISO 639-1, "und" = undetermined) -> kept records
    lengthChars: LengthStats  # characters per kept record (messages joined by a newline)
    estimatedTokens: int  # characters / 4
    profanityRate: float  # share of kept records with a profane word
    distinct1: float  # distinct unigrams / unigrams over a content-hash sample
    distinct2: float


class Gate(TypedDict):
    name: str  # invalidRecords, minRecords, maxDuplicateRatio, maxPIIRatio, piiReject, allowedLanguages,
    # representation
    passed: bool
    value: float | int | None
    threshold: float | int | None
    message: NotRequired[str]  # why it failed (only on failure)


class Artifact(TypedDict):
    uri: str
    reportUri: str


class Summary(TypedDict):
    version: str | None  # "sha256-<hex>" content digest of the processed output; None before output
    passed: bool
    exitCode: int
    records: RecordCounts
    stats: Stats
    gates: list[Gate]
    artifact: Artifact | None
    reason: NotRequired[str]  # one line, present when passed is False
    sourceSha256: NotRequired[str]  # sha256 of the raw source bytes read
    gatesTruncated: NotRequired[bool]  # only failed gates kept to fit MAX_SUMMARY_BYTES
    # retention (spec.governance.retentionDays), done before the source is read, so also on failure:
    prunedVersions: NotRequired[list[str]]  # "sha256-<hex>" directories deleted (≤ MAX_PRUNED_LISTED)
    prunedCount: NotRequired[int]  # how many were deleted (prunedVersions may list fewer)
    pruneErrors: NotRequired[list[str]]  # "<version>: <why>" for expired versions that could not be deleted


_REQUIRED = ("version", "passed", "exitCode", "records", "stats", "gates", "artifact")


def parse_summary(text: str) -> Summary:
    """Parse a termination message into a Summary; raise ValueError naming what is wrong.

    Kubernetes may show the tail of the container log instead of the file when the worker died
    early, so the operator must expect garbage here and fall back to the exit code.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"termination message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("termination message is not a JSON object")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"termination message lacks {', '.join(missing)}")
    if not isinstance(data["records"], dict) or not isinstance(data["gates"], list):
        raise ValueError("termination message: records must be an object and gates a list")
    for gate in data["gates"]:
        if not isinstance(gate, dict) or "name" not in gate or "passed" not in gate:
            raise ValueError(f"termination message: malformed gate {gate!r}")
    summary: Summary = data  # type: ignore[assignment]
    return summary


def dump_summary(summary: Summary | dict[str, Any]) -> str:
    """Serialize compactly, shedding optional detail step by step until it fits in MAX_SUMMARY_BYTES.

    What the operator writes to status goes last: version, records, the failed gates and the reason.
    """
    data: dict[str, Any] = json.loads(json.dumps(summary))
    stats: dict[str, Any] = data.get("stats") or {}

    def top_languages(n: int) -> None:
        langs = stats.get("languages")
        if isinstance(langs, dict) and len(langs) > n:
            stats["languages"] = dict(sorted(langs.items(), key=lambda kv: -kv[1])[:n])

    def drop_extras() -> None:
        for key in [k for k in stats if k not in ("languages", "lengthChars")]:
            stats.pop(key)

    def trim_text() -> None:
        if "reason" in data:
            data["reason"] = str(data["reason"])[:300]
        for gate in data.get("gates", []):
            gate["name"] = str(gate.get("name", ""))[:64]
            if "message" in gate:
                gate["message"] = str(gate["message"])[:120]

    def drop_messages() -> None:
        for gate in data.get("gates", []):
            gate.pop("message", None)

    def failed_only() -> None:
        gates = data.get("gates", [])
        failed = [g for g in gates if not g.get("passed")]
        if len(failed) < len(gates):
            data["gates"] = failed
            data["gatesTruncated"] = True

    def few_failed() -> None:
        if len(data.get("gates", [])) > 10:
            data["gates"] = data["gates"][:10]
            data["gatesTruncated"] = True

    def few_pruned() -> None:
        # prunedCount stays exact: the status then says that the list is cut, not that it is complete
        if len(data.get("prunedVersions") or []) > 3:
            data["prunedVersions"] = data["prunedVersions"][:3]
        if data.get("pruneErrors"):
            data["pruneErrors"] = [str(e)[:120] for e in data["pruneErrors"][:2]]

    def no_pruned_lists() -> None:
        data.pop("prunedVersions", None)
        if data.get("pruneErrors"):
            data["pruneErrors"] = [str(data["pruneErrors"][0])[:120]]

    def no_stats() -> None:
        data["stats"] = {}

    steps = (
        drop_extras,
        lambda: top_languages(10),
        trim_text,
        drop_messages,
        few_pruned,
        lambda: top_languages(3),
        failed_only,
        few_failed,
        no_pruned_lists,
        no_stats,
    )
    text = _compact(data)
    for step in steps:
        if len(text.encode()) <= MAX_SUMMARY_BYTES:
            break
        step()
        text = _compact(data)
    return text


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=False)
