"""LLMDataset: claim + validation Job per spec; the worker's summary becomes status.

Level-based and restart-safe: the Job name is derived from the spec, so re-running this after a
crash finds the same Job; a terminal status for the current generation is final (nothing is re-run).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from maestro.api.conditions import ConditionType, Reason
from maestro.api.dataset import DatasetPhase, LLMDatasetSpec
from maestro.builders import dataset as build
from maestro.builders.meta import LABEL_OWNER_KIND, LABEL_OWNER_NAME, digest
from maestro.reconcile import admission
from maestro.reconcile.common import ApplyRejected, apply, commit, standard
from maestro.reconcile.context import Context, InvalidObject, Result
from maestro.reconcile.store import DATASET
from maestro.status import jobs
from maestro.status.conditions import Cond, cond
from maestro.workers.data import contract

Obj = dict[str, Any]

#: Failures that go away by themselves: the validation is re-run after RETRY_POLLS poll intervals.
RETRY_REASONS = {Reason.SOURCE_UNAVAILABLE}
RETRY_POLLS = 2

_EXIT_REASON = {
    contract.EXIT_BAD_INPUT: Reason.VALIDATION_FAILED,
    contract.EXIT_GATES_FAILED: Reason.GATE_FAILED,
    contract.EXIT_IO_ERROR: Reason.SOURCE_UNAVAILABLE,
    contract.EXIT_INTERNAL: Reason.VALIDATION_FAILED,
    contract.EXIT_CHECKSUM_MISMATCH: Reason.CHECKSUM_MISMATCH,
    contract.EXIT_SCHEMA_MISMATCH: Reason.SCHEMA_MISMATCH,
    contract.EXIT_PII_REJECTED: Reason.PII_REJECTED,
}
#: Exit codes whose reason is more specific than "a gate failed" even when the summary lists gates.
_SPECIFIC_EXITS = {contract.EXIT_CHECKSUM_MISMATCH, contract.EXIT_SCHEMA_MISMATCH, contract.EXIT_PII_REJECTED}


def parse_spec(obj: Obj) -> LLMDatasetSpec:
    try:
        return LLMDatasetSpec.model_validate(obj.get("spec") or {})
    except ValueError as exc:
        raise InvalidObject(str(exc)) from exc


def normalize_version(version: str | None) -> str | None:
    """Worker version directories are `sha256-<hex>`; status and datasetRef pins use `sha256:<hex>`."""
    if version and version.startswith("sha256-"):
        return "sha256:" + version.removeprefix("sha256-")
    return version


def summary_status(summary: contract.Summary) -> Obj:
    """The worker's summary in the LLMDataset status shape."""
    rec: Obj = dict(summary.get("records") or {})
    kept = int(rec.get("kept") or 0)
    stats: Obj = dict(summary.get("stats") or {})
    languages = {
        k: round(float(v) * kept) if isinstance(v, float) and v <= 1 else int(v)
        for k, v in (stats.get("languages") or {}).items()
    }
    length = stats.get("lengthChars") or {}
    out: Obj = {
        "version": normalize_version(summary.get("version")),
        "records": {
            k: v
            for k, v in {
                "total": rec.get("total"),
                "kept": rec.get("kept"),
                "duplicates": int(rec.get("duplicates") or 0) + int(rec.get("nearDuplicates") or 0),
                "piiRedacted": rec.get("piiRedacted"),
                "piiDropped": rec.get("piiDropped"),
                "filtered": rec.get("filtered"),
                "invalid": rec.get("invalid"),
                "train": rec.get("train"),
                "validation": rec.get("validation"),
            }.items()
            if v is not None
        },
        "stats": {
            k: v
            for k, v in {
                "languages": languages,
                "lengthChars": {k: v for k, v in length.items() if k in ("min", "max", "mean", "p50", "p95")}
                or None,
                "piiByEntity": rec.get("piiByType") or {},
                "estimatedTokens": stats.get("estimatedTokens"),
            }.items()
            if v is not None
        },
        "gates": [
            {
                k: v
                for k, v in {
                    "name": str(g.get("name")),
                    "passed": bool(g.get("passed")),
                    "value": None if g.get("value") is None else str(g.get("value")),
                    "threshold": None if g.get("threshold") is None else str(g.get("threshold")),
                }.items()
                if v is not None
            }
            for g in summary.get("gates") or []
        ],
    }
    art = summary.get("artifact")
    if art:
        out["artifact"] = {"uri": art.get("uri"), "reportUri": art.get("reportUri")}
    if summary.get("sourceSha256"):
        out["sourceDigest"] = "sha256:" + str(summary.get("sourceSha256"))
    return out


async def reconcile(ctx: Context, obj: Obj) -> Result:
    meta = obj["metadata"]
    status: Obj = obj.get("status") or {}
    try:
        spec = parse_spec(obj)
    except InvalidObject as exc:
        await commit(
            ctx,
            obj,
            {"phase": DatasetPhase.FAILED},
            [
                *standard(
                    False, Reason.INVALID_SPEC, f"spec is invalid: {exc}", progressing=False, degraded=True
                )
            ],
        )
        return Result(phase=DatasetPhase.FAILED)

    policies, _ = admission.governing_policies(ctx.store, obj)
    violations = admission.check(obj, policies, ctx.store)
    if violations:
        msg = "; ".join(map(str, violations))
        await commit(
            ctx,
            obj,
            {**_keep(status), "phase": status.get("phase") or DatasetPhase.PENDING},
            [
                *standard(False, Reason.POLICY_DENIED, msg, progressing=False, degraded=True),
                cond(ConditionType.POLICY_ADMITTED, False, Reason.POLICY_DENIED, msg),
            ],
        )
        return Result(phase=DatasetPhase.PENDING)
    admitted = cond(
        ConditionType.POLICY_ADMITTED,
        True,
        Reason.SUCCEEDED,
        f"admitted by {', '.join(p['metadata']['name'] for p in policies)}"
        if policies
        else "no LLMPolicy governs this dataset",
    )

    if status.get("observedGeneration") == meta.get("generation") and status.get("phase") in (
        DatasetPhase.READY,
        DatasetPhase.FAILED,
    ):
        ready: Obj = next(
            (c for c in status.get("conditions") or [] if c.get("type") == ConditionType.READY), {}
        )
        if status.get("phase") == DatasetPhase.FAILED and ready.get("reason") in RETRY_REASONS:
            # The source could not be read (network, credentials, storage): that fixes itself, so the
            # validation runs again after a pause instead of staying Failed until someone edits the spec.
            wait = _seconds_since(status.get("completionTime"))
            if wait is not None and wait < ctx.poll_seconds * RETRY_POLLS:
                return Result(requeue_after=ctx.poll_seconds * RETRY_POLLS - wait, phase=DatasetPhase.FAILED)
            await ctx.kube.delete("batch/v1", "Job", build.job_name(obj, spec), meta["namespace"])
            await commit(
                ctx,
                obj,
                {**_keep_results(status), "phase": DatasetPhase.VALIDATING},
                [
                    *standard(
                        False,
                        Reason.VALIDATION_PENDING,
                        "retrying validation after a source error: " + str(ready.get("message", "")),
                        progressing=True,
                    ),
                    cond(ConditionType.VALIDATED, False, Reason.VALIDATION_PENDING, "retrying"),
                    admitted,
                ],
            )
            return Result(requeue_after=1.0, phase=DatasetPhase.VALIDATING)
        # Terminal for this generation: results are final until the spec changes.
        await commit(
            ctx, obj, _keep(status), [*_conditions_of(status), admitted], message=status.get("message")
        )
        return Result(phase=status.get("phase"))

    pvc = build.build_pvc(obj, spec, ctx.settings)
    job_manifest = build.build_job(obj, spec, ctx.settings)
    job_name = job_manifest["metadata"]["name"]
    ns = meta["namespace"]
    try:
        if pvc is not None and ctx.applied.get(meta["uid"]) != digest(pvc):
            await apply(ctx, pvc)
            ctx.applied[meta["uid"]] = digest(pvc)
        job = await ctx.kube.get("batch/v1", "Job", job_name, ns)
        if job is not None and (job.get("metadata") or {}).get("deletionTimestamp"):
            return Result(requeue_after=1.0, phase=DatasetPhase.VALIDATING)  # a retry waits for the old Job
        if job is None:
            job = await apply(ctx, job_manifest)
            await _delete_superseded(ctx, obj, keep=job_name)
    except ApplyRejected as exc:
        # Not terminal (phase stays Pending): the apply is tried again on the next poll and resync.
        msg = str(exc)
        await commit(
            ctx,
            obj,
            {**_keep_results(status), "phase": DatasetPhase.PENDING},
            [
                *standard(False, Reason.APPLY_FAILED, msg, progressing=False, degraded=True),
                cond(ConditionType.VALIDATED, False, Reason.APPLY_FAILED, msg),
                admitted,
            ],
        )
        return Result(requeue_after=ctx.poll_seconds * RETRY_POLLS, phase=DatasetPhase.PENDING)
    view = jobs.view(job)
    base = {"startTime": view.start_time}
    if view.state in (
        jobs.JobState.PENDING,
        jobs.JobState.RUNNING,
        jobs.JobState.SUSPENDED,
        jobs.JobState.MISSING,
    ):
        reason: str = (
            Reason.VALIDATION_RUNNING if view.state == jobs.JobState.RUNNING else Reason.VALIDATION_PENDING
        )
        msg = f"validation Job {job_name} is {view.state.lower()}"
        await commit(
            ctx,
            obj,
            {**_keep_results(status), **base, "phase": DatasetPhase.VALIDATING},
            [
                *standard(False, reason, msg, progressing=True),
                cond(ConditionType.VALIDATED, False, reason, msg),
                admitted,
            ],
        )
        return Result(phase=DatasetPhase.VALIDATING)

    pods = await ctx.kube.list(
        "v1", "Pod", ns, labels={"batch.kubernetes.io/controller-uid": job["metadata"]["uid"]}
    )
    term = jobs.termination(pods, build.CONTAINER)
    summary: contract.Summary | None = None
    parse_error = ""
    if term is not None and term.message:
        try:
            summary = contract.parse_summary(term.message)
        except ValueError as exc:
            parse_error = str(exc)
    fields: Obj = {**base, "completionTime": view.completion_time}
    if summary is not None:
        fields.update(summary_status(summary))
    conds: list[Cond]
    reason = ""
    if view.state == jobs.JobState.SUCCEEDED and summary is not None and summary.get("passed"):
        msg = f"validated version {fields.get('version')}: {len(fields.get('gates') or [])} gates passed"
        phase = DatasetPhase.READY
        conds = [
            *standard(True, Reason.SUCCEEDED, msg, progressing=False),
            cond(ConditionType.VALIDATED, True, Reason.SUCCEEDED, msg),
            cond(ConditionType.GATES_PASSED, True, Reason.SUCCEEDED, msg),
        ]
    else:
        phase = DatasetPhase.FAILED
        reason, msg = _failure(view, term, summary, parse_error, job_name)
        gates_failed = bool(summary and any(not g.get("passed") for g in summary.get("gates") or []))
        conds = [
            *standard(False, reason, msg, progressing=False, degraded=True),
            cond(ConditionType.VALIDATED, summary is not None, reason, msg),
            cond(
                ConditionType.GATES_PASSED,
                False if summary is not None else None,
                Reason.GATE_FAILED if gates_failed else reason,
                msg,
            ),
        ]
    fields["phase"] = phase
    await commit(ctx, obj, fields, [*conds, admitted])
    if phase == DatasetPhase.FAILED and reason in RETRY_REASONS:
        return Result(requeue_after=ctx.poll_seconds * RETRY_POLLS, phase=phase)
    return Result(phase=phase)


def _seconds_since(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        then = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


def _failure(
    view: jobs.JobView,
    term: jobs.Termination | None,
    summary: contract.Summary | None,
    parse_error: str,
    job_name: str,
) -> tuple[str, str]:
    if summary is not None:
        code = term.exit_code if term else contract.EXIT_INTERNAL
        failed = [g for g in summary.get("gates") or [] if not g.get("passed")]
        if code in _SPECIFIC_EXITS:
            return _EXIT_REASON[code], str(summary.get("reason") or contract.EXIT_REASONS[code])
        if failed:
            names = ", ".join(
                f"{g.get('name')} (value {g.get('value')}, threshold {g.get('threshold')})" for g in failed
            )
            return Reason.GATE_FAILED, f"quality gates failed: {names}; fix the data or the thresholds"
        reason_text = summary.get("reason") or "the worker reported failure"
        return _EXIT_REASON.get(code, Reason.VALIDATION_FAILED), str(reason_text)
    if term is not None and term.oom_killed:
        return Reason.OOM_KILLED, term.oom_message(
            "the data worker streams its source, so this is near-dedup state or one huge record: "
            "disable processing.dedup.near or split the source"
        )
    if term is not None:
        reason = _EXIT_REASON.get(term.exit_code, Reason.VALIDATION_FAILED)
        detail = term.message[:500] if term.message else term.reason
        return reason, f"validation Job {job_name} failed (exit {term.exit_code}): {detail}" + (
            f" [{parse_error}]" if parse_error else ""
        )
    if view.failure_reason == "DeadlineExceeded":
        return Reason.DEADLINE_EXCEEDED, f"validation Job {job_name} exceeded its deadline"
    return Reason.VALIDATION_FAILED, (
        f"validation Job {job_name} {view.state.lower()} without a readable summary"
        f" ({view.failure_reason or parse_error or 'no termination message'})"
    )


async def _delete_superseded(ctx: Context, obj: Obj, keep: str) -> None:
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    for job in await ctx.kube.list(
        "batch/v1", "Job", ns, labels={LABEL_OWNER_KIND: DATASET, LABEL_OWNER_NAME: name}
    ):
        if job["metadata"]["name"] != keep:
            await ctx.kube.delete("batch/v1", "Job", job["metadata"]["name"], ns)


_RESULT_FIELDS = (
    "version",
    "records",
    "stats",
    "gates",
    "artifact",
    "sourceDigest",
    "startTime",
    "completionTime",
)


def _keep(status: Obj) -> Obj:
    return {k: status.get(k) for k in ("phase", *_RESULT_FIELDS) if status.get(k) is not None}


def _keep_results(status: Obj) -> Obj:
    """While a new version validates, the last good version stays visible (training may keep using it)."""
    return {k: status.get(k) for k in _RESULT_FIELDS if status.get(k) is not None}


def _conditions_of(status: Obj) -> list[Cond]:
    return [
        Cond(c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
        for c in status.get("conditions") or []
        if c.get("type") != ConditionType.POLICY_ADMITTED
    ]
