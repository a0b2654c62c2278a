"""LLMDataset: claim + validation Job per spec; the worker's summary becomes status.

Level-based and restart-safe: the Job name is derived from the spec, so re-running this after a
crash finds the same Job; a terminal status for the current generation is final (nothing is re-run),
with two exceptions: a source error is retried after a pause, and a Ready copy is validated again
once governance.retentionDays have passed since its validation finished (status.expiresAt).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

from maestro.api.conditions import ConditionType, Reason
from maestro.api.dataset import (
    DatasetArtifact,
    DatasetPhase,
    DatasetStats,
    GateResult,
    LengthStats,
    LLMDatasetSpec,
    LLMDatasetStatus,
    RecordCounts,
)
from maestro.builders import dataset as build
from maestro.builders.meta import ChildRef
from maestro.builders.settings import Settings
from maestro.reconcile import admission
from maestro.reconcile.common import Plan, conditions_of, invalid_spec, run, spec_of, standard, status_of
from maestro.reconcile.context import Context, InvalidObject, Result
from maestro.reconcile.store import DATASET, TRAINING, Store
from maestro.status import jobs
from maestro.status.conditions import Cond, cond, now_rfc3339
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


def normalize_version(version: str | None) -> str | None:
    """Worker version directories are `sha256-<hex>`; status and datasetRef pins use `sha256:<hex>`."""
    if version and version.startswith("sha256-"):
        return "sha256:" + version.removeprefix("sha256-")
    return version


def summary_status(summary: contract.Summary) -> LLMDatasetStatus:
    """The worker's summary in the LLMDataset status shape."""
    rec: Obj = dict(summary.get("records") or {})
    kept = int(rec.get("kept") or 0)
    stats: Obj = dict(summary.get("stats") or {})
    languages = {
        k: round(float(v) * kept) if isinstance(v, float) and v <= 1 else int(v)
        for k, v in (stats.get("languages") or {}).items()
    }
    length = {k: v for k, v in (stats.get("lengthChars") or {}).items() if k in LengthStats.model_fields}
    art = summary.get("artifact")
    pruned = [str(normalize_version(str(v))) for v in summary.get("prunedVersions") or []]
    pruned = pruned[: contract.MAX_PRUNED_LISTED]
    prune_errors = [str(e)[:300] for e in summary.get("pruneErrors") or []][: contract.MAX_PRUNE_ERRORS]
    return LLMDatasetStatus(
        version=normalize_version(summary.get("version")),
        records=RecordCounts(
            total=rec.get("total"),
            kept=rec.get("kept"),
            duplicates=int(rec.get("duplicates") or 0) + int(rec.get("nearDuplicates") or 0),
            pii_redacted=rec.get("piiRedacted"),
            pii_dropped=rec.get("piiDropped"),
            filtered=rec.get("filtered"),
            invalid=rec.get("invalid"),
            train=rec.get("train"),
            validation=rec.get("validation"),
        ),
        stats=DatasetStats(
            languages=languages,
            length_chars=LengthStats.model_validate(length) if length else None,
            pii_by_entity=rec.get("piiByType") or {},
            estimated_tokens=stats.get("estimatedTokens"),
        ),
        gates=[
            GateResult(
                name=str(g.get("name")),
                passed=bool(g.get("passed")),
                value=None if g.get("value") is None else str(g.get("value")),
                threshold=None if g.get("threshold") is None else str(g.get("threshold")),
            )
            for g in summary.get("gates") or []
        ],
        artifact=DatasetArtifact(uri=art.get("uri"), report_uri=art.get("reportUri")) if art else None,
        source_digest="sha256:" + str(summary["sourceSha256"]) if summary.get("sourceSha256") else None,
        pruned_versions=pruned or None,
        pruned_count=summary.get("prunedCount"),
        prune_errors=prune_errors or None,
    )


@dataclass(frozen=True)
class Facts:
    """What a dataset reconcile looks at before deciding."""

    spec: LLMDatasetSpec | None
    #: Why the spec does not parse (spec is None then).
    invalid: str = ""
    policies: tuple[Obj, ...] = ()
    violations: tuple[admission.Violation, ...] = ()
    #: The validation Job for the current spec; None when it does not exist or was not looked at.
    job: Obj | None = None
    looked: bool = False
    #: The Job's pods, listed once it finished (their termination message is the worker's summary).
    pods: tuple[Obj, ...] = ()
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: The API server refused a child for good (set when deciding again after the apply).
    apply_error: str = ""
    #: Versions on this dataset's claim that retention must keep (see `pinned_versions`), sorted.
    pinned: tuple[str, ...] = ()


def _terminal(obj: Obj) -> bool:
    """Results for this generation are final (Ready, or Failed)."""
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"].get("generation") and status.get("phase") in (
        DatasetPhase.READY,
        DatasetPhase.FAILED,
    )


async def observe(ctx: Context, obj: Obj) -> Facts:
    try:
        spec = spec_of(LLMDatasetSpec, obj)
    except InvalidObject as exc:
        return Facts(spec=None, invalid=str(exc))
    policies, _ = admission.governing_policies(ctx.store, obj)
    violations = admission.check(obj, policies, ctx.store)
    facts = Facts(spec=spec, policies=tuple(policies), violations=tuple(violations))
    if violations or _terminal(obj):
        return facts
    if spec.governance.retention_days is not None:
        facts = replace(facts, pinned=pinned_versions(ctx.store, obj, spec))
    ns = obj["metadata"]["namespace"]
    job = await ctx.kube.get("batch/v1", "Job", build.job_name(obj, spec), ns)
    pods: list[Obj] = []
    if jobs.view(job).state in (jobs.JobState.SUCCEEDED, jobs.JobState.FAILED) and job is not None:
        pods = await ctx.kube.list(
            "v1", "Pod", ns, labels={"batch.kubernetes.io/controller-uid": job["metadata"]["uid"]}
        )
    return replace(facts, job=job, looked=True, pods=tuple(pods))


def _claim_of(ds: Obj) -> str:
    """The claim a dataset object writes its versions to (`build.claim_name`, from the raw spec)."""
    pvc = ((ds.get("spec") or {}).get("storage") or {}).get("pvc") or {}
    return build.claim_for(ds["metadata"]["name"], pvc.get("claimName"))


def pinned_versions(store: Store, obj: Obj, spec: LLMDatasetSpec) -> tuple[str, ...]:
    """The versions retention must not delete from this dataset's claim: those an LLMTrainingJob
    trained on (status.lineage.datasetVersion: the model's lineage must keep pointing at data that
    exists) or pins (spec.datasetRef.version). A claim named by several datasets holds all their
    versions, so their training jobs count too, and so do their current versions."""
    meta = obj["metadata"]
    ns, claim = meta["namespace"], build.claim_name(obj, spec)
    names = {meta["name"]}
    versions: set[str] = set()
    for other in store.list(DATASET, ns):
        if other["metadata"]["name"] != meta["name"] and _claim_of(other) == claim:
            names.add(other["metadata"]["name"])
            versions.add(str((other.get("status") or {}).get("version") or ""))
    for tj in store.list(TRAINING, ns):
        ref = (tj.get("spec") or {}).get("datasetRef") or {}
        if ref.get("name") in names:
            lineage = (tj.get("status") or {}).get("lineage") or {}
            versions |= {str(ref.get("version") or ""), str(lineage.get("datasetVersion") or "")}
    versions.discard("")
    return tuple(sorted(versions))


def expires_at(spec: LLMDatasetSpec, status: LLMDatasetStatus) -> dt.datetime | None:
    """When a Ready copy's retention ends (completionTime + governance.retentionDays); None without
    retentionDays, before a validation finished, or when nothing was validated."""
    days = spec.governance.retention_days
    if days is None or status.phase != DatasetPhase.READY:
        return None
    done = _parse_time(status.completion_time)
    return None if done is None else done + dt.timedelta(days=days)


async def reconcile(ctx: Context, obj: Obj) -> Result:
    return await run(ctx, obj, observe, decide)


def decide(obj: Obj, facts: Facts, settings: Settings, poll_seconds: float) -> Plan:
    """Pure: the dataset's children and status from its spec and what was observed."""
    status = status_of(LLMDatasetStatus, obj)
    if facts.spec is None:
        return invalid_spec(LLMDatasetStatus(phase=DatasetPhase.FAILED), facts.invalid)
    spec = facts.spec
    if facts.violations:
        msg = "; ".join(map(str, facts.violations))
        return Plan(
            _keep(status, phase=status.phase or DatasetPhase.PENDING),
            [
                *standard(False, Reason.POLICY_DENIED, msg, progressing=False, degraded=True),
                cond(ConditionType.POLICY_ADMITTED, False, Reason.POLICY_DENIED, msg),
            ],
        )
    admitted = cond(
        ConditionType.POLICY_ADMITTED,
        True,
        Reason.SUCCEEDED,
        f"admitted by {', '.join(p['metadata']['name'] for p in facts.policies)}"
        if facts.policies
        else "no LLMPolicy governs this dataset",
    )
    job_name = build.job_name(obj, spec)
    job_ref = ChildRef("batch/v1", "Job", job_name)
    retry_after = poll_seconds * RETRY_POLLS
    if _terminal(obj):
        ready = status.condition(ConditionType.READY)
        if status.phase == DatasetPhase.FAILED and ready is not None and ready.reason in RETRY_REASONS:
            # The source could not be read (network, credentials, storage): that fixes itself, so the
            # validation runs again after a pause instead of staying Failed until someone edits the spec.
            wait = _seconds_since(status.completion_time, facts.now)
            if wait is not None and wait < retry_after:
                return Plan(
                    status, conditions_of(obj), message=status.message, requeue_after=retry_after - wait
                )
            return Plan(
                _keep(status, phase=DatasetPhase.VALIDATING),
                [
                    *standard(
                        False,
                        Reason.VALIDATION_PENDING,
                        "retrying validation after a source error: " + (ready.message or ""),
                        progressing=True,
                    ),
                    cond(ConditionType.VALIDATED, False, Reason.VALIDATION_PENDING, "retrying"),
                    admitted,
                ],
                delete=(job_ref,),
                requeue_after=1.0,
            )
        expiry = expires_at(spec, status)
        expires = None if expiry is None else now_rfc3339(expiry)
        left = None if expiry is None else (expiry - facts.now).total_seconds()
        if left is not None and left <= 0:
            # The copy outlived governance.retentionDays: validate again. The worker deletes expired,
            # unpinned versions first, then copies the source anew (a fresh retention period); a
            # source that is gone fails the validation with its usual reason.
            msg = (
                f"version {status.version} expired at {expires} "
                f"(governance.retentionDays {spec.governance.retention_days}): validating again"
            )
            return Plan(
                _keep(status, phase=DatasetPhase.VALIDATING).model_copy(update={"expires_at": expires}),
                [
                    *standard(False, Reason.RETENTION_EXPIRED, msg, progressing=True),
                    cond(ConditionType.VALIDATED, False, Reason.RETENTION_EXPIRED, msg),
                    admitted,
                ],
                delete=(job_ref,),
                requeue_after=1.0,
            )
        # Terminal for this generation: results are final until the spec changes (or they expire).
        return Plan(
            _keep(status, phase=status.phase).model_copy(update={"expires_at": expires}),
            [*conditions_of(obj, without=(ConditionType.POLICY_ADMITTED,)), admitted],
            message=status.message,
            requeue_after=left,
        )

    if facts.apply_error:
        # Not terminal (phase stays Pending): the apply is tried again on the next poll and resync.
        msg = facts.apply_error
        return Plan(
            _keep(status, phase=DatasetPhase.PENDING),
            [
                *standard(False, Reason.APPLY_FAILED, msg, progressing=False, degraded=True),
                cond(ConditionType.VALIDATED, False, Reason.APPLY_FAILED, msg),
                admitted,
            ],
            requeue_after=retry_after,
        )
    job = facts.job
    if job is not None and (job.get("metadata") or {}).get("deletionTimestamp"):
        # a retry waits for the old Job to be gone
        return Plan(status, conditions_of(obj), message=status.message, requeue_after=1.0)
    children: dict[ChildRef, Obj | None] = {}
    pvc = build.build_pvc(obj, spec, settings)
    if pvc is not None:
        children[ChildRef.of(pvc)] = pvc
    view = jobs.view(job)
    if job is None:
        # created by this plan: it starts out pending
        children[job_ref] = build.build_job(obj, spec, settings, facts.pinned)
        view = jobs.JobView(jobs.JobState.PENDING)
    plan_children: Mapping[ChildRef, Obj | None] = children
    exclusive = {("batch/v1", "Job"): job_name} if job is None else {}
    if view.state not in (jobs.JobState.SUCCEEDED, jobs.JobState.FAILED):
        reason: str = (
            Reason.VALIDATION_RUNNING if view.state == jobs.JobState.RUNNING else Reason.VALIDATION_PENDING
        )
        msg = f"validation Job {job_name} is {view.state.lower()}"
        return Plan(
            _keep(status, phase=DatasetPhase.VALIDATING).model_copy(update={"start_time": view.start_time}),
            [
                *standard(False, reason, msg, progressing=True),
                cond(ConditionType.VALIDATED, False, reason, msg),
                admitted,
            ],
            children=plan_children,
            force=job is None,
            exclusive=exclusive,
        )
    finished = _finished(status, view, list(facts.pods), job_name, admitted, plan_children, retry_after)
    expiry = expires_at(spec, cast(LLMDatasetStatus, finished.status))
    if expiry is not None:
        # report the new copy's expiry at once, and look again then (the terminal path takes over)
        finished.status = finished.status.model_copy(update={"expires_at": now_rfc3339(expiry)})
        finished.requeue_after = max((expiry - facts.now).total_seconds(), 1.0)
    return finished


def _finished(
    status: LLMDatasetStatus,
    view: jobs.JobView,
    pods: list[Obj],
    job_name: str,
    admitted: Cond,
    children: Mapping[ChildRef, Obj | None],
    retry_after: float,
) -> Plan:
    """The validation Job is done: its worker's summary becomes the status."""
    term = jobs.termination(pods, build.CONTAINER)
    summary: contract.Summary | None = None
    parse_error = ""
    if term is not None and term.message:
        try:
            summary = contract.parse_summary(term.message)
        except ValueError as exc:
            parse_error = str(exc)
    new = LLMDatasetStatus(start_time=view.start_time, completion_time=view.completion_time)
    if summary is not None:
        new = summary_status(summary).model_copy(
            update={"start_time": view.start_time, "completion_time": view.completion_time}
        )
    conds: list[Cond]
    reason = ""
    if view.state == jobs.JobState.SUCCEEDED and summary is not None and summary.get("passed"):
        msg = f"validated version {new.version}: {len(new.gates)} gates passed"
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
    return Plan(
        new.model_copy(update={"phase": phase}),
        [*conds, admitted],
        children=children,
        requeue_after=retry_after if phase == DatasetPhase.FAILED and reason in RETRY_REASONS else None,
    )


def _parse_time(timestamp: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp as the API server writes it (…Z, whole seconds); None when absent or odd."""
    if not timestamp:
        return None
    try:
        return dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _seconds_since(timestamp: str | None, now: dt.datetime) -> float | None:
    then = _parse_time(timestamp)
    return None if then is None else (now - then).total_seconds()


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


#: What a dataset keeps in status while it validates again or is blocked: its last results.
_RESULT_FIELDS = {
    "version",
    "records",
    "stats",
    "gates",
    "artifact",
    "source_digest",
    "start_time",
    "completion_time",
    "expires_at",
    "pruned_versions",
    "pruned_count",
    "prune_errors",
}


def _keep(status: LLMDatasetStatus, *, phase: DatasetPhase | None) -> LLMDatasetStatus:
    """The last results, with `phase`: while a new version validates, the last good one stays visible
    (training may keep using it)."""
    # already validated values: constructed, not validated again (this runs on every reconcile)
    return LLMDatasetStatus.model_construct(phase=phase, **{k: getattr(status, k) for k in _RESULT_FIELDS})
