"""LLMTrainingJob: wait for a Ready dataset and the policy, run the training Job, report results.

Progress arrives separately (the operator's progress endpoint patches status.progress); this
reconcile owns everything else in status. Succeeded is final; Failed is final for a spec (edit it, or
set the `llmops.dev/retry` annotation, to run again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from maestro.api.conditions import ConditionType, Reason, is_permanent
from maestro.api.dataset import DatasetPhase, LLMDatasetStatus
from maestro.api.training import (
    EvaluationResult,
    LLMTrainingJobSpec,
    LLMTrainingJobStatus,
    Progress,
    TrackingStatus,
    TrainedModel,
    TrainingLineage,
    TrainingPhase,
)
from maestro.builders import training as build
from maestro.builders.meta import ChildRef
from maestro.builders.pods import split_pvc_uri
from maestro.builders.settings import Settings
from maestro.reconcile import admission
from maestro.reconcile.common import Plan, conditions_of, invalid_spec, run, spec_of, standard, status_of
from maestro.reconcile.context import Context, InvalidObject, Result
from maestro.reconcile.store import DATASET
from maestro.status import jobs
from maestro.status.conditions import Cond, cond
from maestro.workers.train import contract

Obj = dict[str, Any]
DATASET_READY = "DatasetReady"
RETRY_ANNOTATION = build.RETRY_ANNOTATION
TERMINAL = (TrainingPhase.SUCCEEDED, TrainingPhase.FAILED)


def dataset_input(ds: Obj) -> tuple[build.DatasetInput | None, str]:
    st = status_of(LLMDatasetStatus, ds)
    art = (st.artifact.uri if st.artifact else None) or ""
    version = st.version or ""
    if not art.startswith("pvc://"):
        return None, f"dataset artifact {art!r} is not on a claim (pvc://claim/path)"
    claim, sub = split_pvc_uri(art)
    schema = (((ds.get("spec") or {}).get("schema")) or {}).get("type", "chat")
    return build.DatasetInput(claim=claim, sub_path=sub, version=version, schema_type=schema), ""


def model_format(fmt: str, merged: bool) -> str:
    if fmt == contract.FORMAT_LORA:
        return "adapter"
    return "merged" if merged else "full"


def model_uri(uri: str, output_claim: str) -> str:
    """Paths inside the output volume become pvc://<claim>/<path> (what a deployment can mount)."""
    path = uri.removeprefix("file://")
    if path.startswith(build.OUTPUT_DIR):
        return f"pvc://{output_claim}/{path.removeprefix(build.OUTPUT_DIR).strip('/')}"
    return uri


_KEPT = {
    "progress",
    "model",
    "evaluation",
    "lineage",
    "job_name",
    "start_time",
    "completion_time",
    "tracking",
}


@dataclass(frozen=True)
class Facts:
    """What a training reconcile looks at before deciding."""

    spec: LLMTrainingJobSpec | None
    invalid: str = ""
    dataset: Obj | None = None
    policies: tuple[Obj, ...] = ()
    violations: tuple[admission.Violation, ...] = ()
    #: The Job for the current spec (None: it does not exist, or was not looked at).
    job: Obj | None = None
    pods: tuple[Obj, ...] = ()
    apply_error: str = ""


def _finished(obj: Obj, spec: LLMTrainingJobSpec) -> bool:
    """Succeeded or Failed for this spec: final (a new spec or the retry annotation runs it again)."""
    status = obj.get("status") or {}
    return status.get("phase") in TERMINAL and status.get("jobName") == build.job_name(obj, spec)


async def observe(ctx: Context, obj: Obj) -> Facts:
    try:
        spec = spec_of(LLMTrainingJobSpec, obj)
    except InvalidObject as exc:
        return Facts(spec=None, invalid=str(exc))
    if _finished(obj, spec):
        return Facts(spec=spec)
    ns = obj["metadata"]["namespace"]
    job = await ctx.kube.get("batch/v1", "Job", build.job_name(obj, spec), ns)
    policies, _ = admission.governing_policies(ctx.store, obj)
    pods: list[Obj] = []
    if job is not None and jobs.view(job).state in (jobs.JobState.SUCCEEDED, jobs.JobState.FAILED):
        pods = await ctx.kube.list(
            "v1", "Pod", ns, labels={"batch.kubernetes.io/controller-uid": job["metadata"]["uid"]}
        )
    return Facts(
        spec=spec,
        dataset=ctx.store.get(DATASET, ns, spec.dataset_ref.name),
        policies=tuple(policies),
        violations=tuple(admission.check(obj, policies, ctx.store)),
        job=job,
        pods=tuple(pods),
    )


async def reconcile(ctx: Context, obj: Obj) -> Result:
    return await run(ctx, obj, observe, decide)


def decide(obj: Obj, facts: Facts, settings: Settings, poll_seconds: float) -> Plan:
    """Pure: the training job's children and status from its spec and what was observed."""
    status = status_of(LLMTrainingJobStatus, obj)
    kept = LLMTrainingJobStatus.model_construct(**{k: getattr(status, k) for k in _KEPT})  # validated: reused
    if facts.spec is None:
        return invalid_spec(kept.model_copy(update={"phase": TrainingPhase.FAILED}), facts.invalid)
    spec = facts.spec
    if _finished(obj, spec):
        return Plan(
            kept.model_copy(update={"phase": status.phase}), conditions_of(obj), message=status.message
        )
    name = build.job_name(obj, spec)
    violations = facts.violations
    admitted = cond(
        ConditionType.POLICY_ADMITTED,
        not violations,
        Reason.POLICY_DENIED if violations else Reason.SUCCEEDED,
        "; ".join(map(str, violations))
        if violations
        else (
            f"admitted by {', '.join(p['metadata']['name'] for p in facts.policies)}"
            if facts.policies
            else "no LLMPolicy governs this job"
        ),
    )
    ds_cond, ds_input = _dataset_condition(facts.dataset, spec.dataset_ref.name, spec.dataset_ref.version)
    job = facts.job
    children: dict[ChildRef, Obj | None] = {}
    if job is None:
        # Before a Job exists, dependencies and policy gate it. Once it runs, a later dataset change does
        # not stop it (it trains on the version it started with, recorded in lineage).

        def wait(reason: str, message: str, degraded: bool, requeue: float | None = None) -> Plan:
            """The job cannot start yet: Waiting, with why on Ready (and Degraded when a person must act)."""
            ready = standard(False, reason, message, progressing=False, degraded=degraded)
            return Plan(
                kept.model_copy(update={"phase": TrainingPhase.WAITING}),
                [*ready, ds_cond, admitted],
                requeue_after=requeue,
            )

        if ds_input is None:
            return wait(ds_cond.reason, ds_cond.message, is_permanent(ds_cond.reason))
        if violations:
            return wait(Reason.POLICY_DENIED, admitted.message, True)
        if facts.apply_error:
            # Still Waiting (not terminal): the apply is tried again on the next poll and resync.
            return wait(Reason.APPLY_FAILED, facts.apply_error, True, poll_seconds)
        for child in (build.build_pvc(obj, spec, settings), build.build_service(obj, spec)):
            if child is not None:
                children[ChildRef.of(child)] = child
        job = build.build_job(obj, spec, ds_input, settings)
        children[ChildRef.of(job)] = job

    annotations = (job.get("metadata") or {}).get("annotations") or {}
    lineage = TrainingLineage(
        dataset_version=annotations.get(build.ANNOTATION_DATASET_VERSION) or None,
        base_model=spec.base_model.uri + (f"@{spec.base_model.revision}" if spec.base_model.revision else ""),
        image=annotations.get(build.ANNOTATION_IMAGE) or None,
    )
    view = jobs.view(job) if facts.job is not None else jobs.JobView(jobs.JobState.PENDING)
    fields = kept.model_copy(
        update={"job_name": name, "lineage": lineage, "start_time": view.start_time or kept.start_time}
    )
    # the Job exists once its children are applied: superseded Jobs of this object go then
    exclusive = {("batch/v1", "Job"): name} if children else {}
    # A policy that appears after the job started blocks nothing retroactively, but says so.
    policy_conds = [
        ds_cond
        if ds_input is not None
        else cond(DATASET_READY, True, Reason.SUCCEEDED, "the job started on a Ready dataset"),
        admitted,
    ]
    tracking = _job_tracking(job)
    reason: str
    if view.state in (jobs.JobState.PENDING, jobs.JobState.RUNNING, jobs.JobState.SUSPENDED):
        phase, reason, msg = {
            jobs.JobState.SUSPENDED: (
                TrainingPhase.QUEUED,
                Reason.QUEUED,
                f"Job {name} waits in Kueue queue {spec.queue_name}",
            ),
            jobs.JobState.PENDING: (
                TrainingPhase.PENDING,
                Reason.WAITING_FOR_RESOURCES,
                f"Job {name} waits for its pods to be scheduled and start",
            ),
            jobs.JobState.RUNNING: (TrainingPhase.RUNNING, Reason.TRAINING, f"Job {name} is training"),
        }[view.state]
        if view.state is jobs.JobState.RUNNING and kept.progress and kept.progress.stage == "evaluating":
            # the trainer said so through the progress endpoint: training is over, the gates are not
            phase, reason, msg = (
                TrainingPhase.EVALUATING,
                Reason.EVALUATING,
                f"Job {name} is evaluating the trained model",
            )
        degraded = bool(violations)
        return Plan(
            fields.model_copy(update={"phase": phase}),
            [
                *standard(
                    False,
                    Reason.POLICY_DENIED if degraded else reason,
                    admitted.message if degraded else msg,
                    progressing=True,
                    degraded=degraded,
                ),
                cond(ConditionType.TRAINED, False, reason, msg),
                *policy_conds,
                *(
                    [
                        cond(
                            ConditionType.TRACKED,
                            None,
                            Reason.TRACKING,
                            f"the trainer logs to MLflow at {tracking.uri}, "
                            f"experiment {tracking.experiment!r}"
                            if tracking.backend == "mlflow"
                            else f"the trainer logs a W&B run offline to the output claim, project "
                            f"{tracking.experiment!r} (upload it with `wandb sync`)",
                        )
                    ]
                    if tracking is not None
                    else []
                ),
            ],
            children=children,
            force=bool(children),
            exclusive=exclusive,
        )
    return _finished_plan(
        fields, spec, view, list(facts.pods), build.output_claim(obj, spec), name, policy_conds, tracking
    )


def _finished_plan(
    fields: LLMTrainingJobStatus,
    spec: LLMTrainingJobSpec,
    view: jobs.JobView,
    pods: list[Obj],
    output_claim: str,
    name: str,
    policy_conds: list[Cond],
    tracking: build.ResolvedTracking | None = None,
) -> Plan:
    """The Job is done: the trainer's summary becomes the results."""
    term = jobs.termination(pods, build.CONTAINER, index="0" if spec.resources.nodes > 1 else None)
    summary: contract.Summary | None = None
    parse_error = ""
    if term is not None and term.message:
        try:
            summary = contract.parse_summary(term.message)
        except ValueError as exc:
            parse_error = str(exc)
    fields = fields.model_copy(update={"completion_time": view.completion_time})
    if summary is not None:
        fields = _results(summary, spec, output_claim, fields)
    conds: list[Cond]
    if (
        view.state == jobs.JobState.SUCCEEDED
        and summary is not None
        and summary.get("passed")
        and summary.get("model")
        and fields.model is not None
    ):
        msg = f"trained {fields.model.uri} ({fields.model.digest})"
        phase = TrainingPhase.SUCCEEDED
        progress = (fields.progress or Progress()).model_copy(update={"percent": 100, "eta_seconds": 0})
        fields = fields.model_copy(update={"progress": progress})
        conds = [
            *standard(True, Reason.SUCCEEDED, msg, progressing=False),
            cond(ConditionType.TRAINED, True, Reason.SUCCEEDED, msg),
            cond(ConditionType.EVALUATION_PASSED, True, Reason.SUCCEEDED, "every evaluation gate passed"),
        ]
    else:
        phase = TrainingPhase.FAILED
        reason, msg = _failure(view, term, summary, parse_error, name)
        trained = bool(summary and summary.get("model"))
        conds = [
            *standard(False, reason, msg, progressing=False, degraded=True),
            cond(
                ConditionType.TRAINED,
                trained,
                Reason.SUCCEEDED if trained else reason,
                "the model was written" if trained else msg,
            ),
        ]
        if trained:
            conds.append(cond(ConditionType.EVALUATION_PASSED, False, reason, msg))
    tracked = _tracked_condition(summary, tracking) if tracking is not None else None
    if tracked is None and tracking is not None and phase == TrainingPhase.FAILED:
        where = f"{tracking.uri or tracking.backend} (experiment {tracking.experiment!r})"
        tracked = cond(
            ConditionType.TRACKED,
            False,
            Reason.TRACKING_INCOMPLETE,
            # reported, without a run: it failed before creating one (data, model, config errors)
            f"the job failed before its run was created at {where}"
            if summary is not None
            # killed (OOM, eviction, deadline): nothing ended the run or said where it is
            else f"the trainer stopped without reporting its run at {where}; the run may still show "
            "RUNNING there",
        )
    if tracked is not None:
        conds.append(tracked)
    return Plan(fields.model_copy(update={"phase": phase}), [*conds, *policy_conds])


def _job_tracking(job: Obj) -> build.ResolvedTracking | None:
    """What the Job's trainer was told about tracking ($MAESTRO_TRACKING in its pod template), not what
    the operator's default says now: a default changed mid-run does not change where this run went."""
    containers = ((((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")) or []
    for c in containers:
        for e in c.get("env") or []:
            if e.get("name") == contract.ENV_TRACKING and e.get("value"):
                try:
                    t = json.loads(e["value"])
                    return build.ResolvedTracking(
                        uri=str(t["uri"]),
                        experiment=str(t["experiment"]),
                        registered_model_name=str(t["registeredModelName"]),
                        credentials_secret=None,
                        backend=str(t.get("backend") or "mlflow"),
                    )
                except (ValueError, KeyError, TypeError):
                    return None
    return None


def _tracked_condition(summary: contract.Summary | None, tracking: build.ResolvedTracking) -> Cond | None:
    """Tracked from the trainer's outcome: True with the run and version, False with why (the job's
    phase does not depend on it). None when the trainer reported nothing (it failed before the end)."""
    out = summary.get("tracking") if summary is not None else None
    if not out:
        return None
    where = out.get("runUrl") or out.get("runDir") or f"{tracking.uri} (experiment {tracking.experiment!r})"
    ended = " (ended FAILED with the job)" if out.get("runStatus") == "FAILED" else ""
    resumed = f", resumed after {out['attempt'] - 1} pod restart(s)" if (out.get("attempt") or 1) > 1 else ""
    if out.get("ok"):
        rm = out.get("registeredModel")
        version = f"; registered {rm['name']} version {rm['version']}" if rm else ""
        return cond(ConditionType.TRACKED, True, Reason.SUCCEEDED, f"run {where}{ended}{resumed}{version}")
    reason = (
        Reason.TRACKING_FAILED
        if out.get("reason") == contract.REASON_TRACKING_FAILED
        else Reason.TRACKER_UNREACHABLE
    )
    hint = (
        "check the credentials Secret and the experiment/model names"
        if reason == Reason.TRACKING_FAILED
        else "the run may be incomplete; the model and status are unaffected"
    )
    return cond(
        ConditionType.TRACKED, False, reason, f"tracking at {where} failed: {out.get('error') or '?'}; {hint}"
    )


def _dataset_condition(ds: Obj | None, name: str, pin: str | None) -> tuple[Cond, build.DatasetInput | None]:
    if ds is None:
        return cond(
            DATASET_READY,
            False,
            Reason.DATASET_NOT_FOUND,
            f"LLMDataset {name!r} does not exist in this namespace; create it (the job starts once "
            "it is Ready)",
        ), None
    st = status_of(LLMDatasetStatus, ds)
    ds_ready = st.condition(ConditionType.READY)
    if not (st.phase == DatasetPhase.READY and ds_ready is not None and ds_ready.status == "True"):
        why = st.message or f"phase {st.phase or 'Pending'}"
        current = st.observed_generation == (ds.get("metadata") or {}).get("generation")
        if current and ds_ready is not None and is_permanent(ds_ready.reason):
            # no retry clears this (GateFailed, SchemaMismatch, ...): say so instead of waiting for ever
            return cond(
                DATASET_READY,
                False,
                Reason.DATASET_FAILED,
                f"LLMDataset {name!r} failed ({ds_ready.reason}): {why}; fix the dataset (the job "
                "starts once it is Ready)",
            ), None
        return cond(
            DATASET_READY, False, Reason.DATASET_NOT_READY, f"LLMDataset {name!r} is not Ready: {why}"
        ), None
    if pin and st.version != pin:
        return cond(
            DATASET_READY,
            False,
            Reason.DATASET_VERSION_MISMATCH,
            f"LLMDataset {name!r} is at version {st.version}, the job pins {pin}",
        ), None
    inp, problem = dataset_input(ds)
    if inp is None:
        return cond(DATASET_READY, False, Reason.DATASET_NOT_READY, f"LLMDataset {name!r}: {problem}"), None
    return cond(
        DATASET_READY, True, Reason.SUCCEEDED, f"LLMDataset {name!r} version {inp.version} is Ready"
    ), inp


def _results(
    summary: contract.Summary, spec: LLMTrainingJobSpec, output_claim: str, fields: LLMTrainingJobStatus
) -> LLMTrainingJobStatus:
    """The trainer's summary → model, evaluation, final progress and lineage."""
    update: dict[str, Any] = {}
    model = summary.get("model")
    if model:
        update["model"] = TrainedModel(
            uri=model_uri(model["uri"], output_claim),
            digest=model["digest"],
            format=model_format(model["format"], spec.output.merge),
        )
    ev = summary.get("evaluation")
    if ev is not None:
        update["evaluation"] = EvaluationResult.model_validate(_evaluation_status(ev, output_claim))
    metrics = summary.get("metrics")
    if metrics:
        update["progress"] = Progress(
            step=metrics.get("steps"),
            total_steps=metrics.get("steps"),
            loss=metrics.get("trainLoss"),
            tokens_per_second=metrics.get("tokensPerSecond"),
            epoch=metrics.get("epochs"),
        )
    tr = summary.get("tracking")
    if tr:
        update["tracking"] = TrackingStatus.model_validate(
            _compact(
                {
                    "backend": tr.get("backend"),
                    "experimentId": tr.get("experimentId"),
                    "runId": tr.get("runId"),
                    "runUrl": tr.get("runUrl"),
                    "registeredModel": tr.get("registeredModel"),
                    "runStatus": tr.get("runStatus"),
                    "runDir": tr.get("runDir"),
                    "error": None if tr.get("ok") else tr.get("error"),
                }
            )
        )
    lin = summary.get("lineage")
    if lin:
        current = fields.lineage.model_dump(by_alias=True, exclude_none=True) if fields.lineage else {}
        update["lineage"] = TrainingLineage.model_validate({**current, **{k: v for k, v in lin.items() if v}})
    return fields.model_copy(update=update)


def _compact(d: Obj) -> Obj:
    return {k: v for k, v in d.items() if v is not None}


def _bias_status(bias: Any) -> Obj | None:
    if not isinstance(bias, dict):
        return None
    keys = ("sentimentGap", "refusalGap", "lengthGapRatio", "worstGroup", "passed")
    return _compact({k: bias.get(k) for k in keys}) or None


def _answer_status(a: Any) -> Obj | None:
    if not isinstance(a, dict):
        return None
    return _compact({"passed": a.get("passed"), "answer": a.get("answer")}) or None


def _evaluation_status(ev: contract.Evaluation, output_claim: str | None = None) -> Obj:
    """The trainer's evaluation summary → status.evaluation (fine-tuned and base side by side).

    The explanations report (evaluation.explain) is linked as the output volume knows it
    (pvc://claim/explanations.html, like status.model.uri) when `output_claim` is given.
    """
    raw: Any = ev
    ex = raw.get("explanations") if isinstance(raw.get("explanations"), dict) else {}
    ex_uri = ex.get("uri") if isinstance(ex.get("uri"), str) else None
    if ex_uri is not None and output_claim is not None:
        ex_uri = model_uri(ex_uri, output_claim)
    ex_seconds = ex.get("seconds") if isinstance(ex.get("seconds"), int | float) else None
    prompts = [
        _compact(
            {
                "prompt": p.get("prompt"),
                "expected": p.get("expected"),
                "tuned": _answer_status(p.get("tuned")),
                "base": _answer_status(p.get("base")),
            }
        )
        for p in (raw.get("prompts") or [])[:16]
        if isinstance(p, dict)
    ]
    return _compact(
        {
            "evalLoss": ev.get("evalLoss"),
            "perplexity": ev.get("perplexity"),
            "baseEvalLoss": ev.get("baseEvalLoss"),
            "basePerplexity": ev.get("basePerplexity"),
            "promptsPassed": ev.get("promptsPassed"),
            "promptsChecked": ev.get("promptsChecked"),
            "promptsTotal": ev.get("promptsTotal"),
            "basePromptsPassed": ev.get("basePromptsPassed"),
            "prompts": prompts or None,
            "bias": _bias_status(ev.get("bias")),
            "explanationsUri": ex_uri,
            "explanationSeconds": ex_seconds,
            "passed": ev.get("passed"),
        }
    )


def _failure(
    view: jobs.JobView,
    term: jobs.Termination | None,
    summary: contract.Summary | None,
    parse_error: str,
    job: str,
) -> tuple[str, str]:
    if view.state == jobs.JobState.SUCCEEDED:
        detail = parse_error or ("the summary has no model" if summary else "no termination message")
        return Reason.TRAINING_FAILED, f"Job {job} completed but its result is unusable: {detail}"
    if view.failure_reason == "DeadlineExceeded":
        return Reason.DEADLINE_EXCEEDED, (
            f"Job {job} ran longer than activeDeadlineSeconds; raise it or reduce the work (maxSteps, epochs)"
        )
    if term is not None and term.oom_killed:
        return Reason.OOM_KILLED, term.oom_message(
            "raise spec.resources.memory or lower hyperparameters.batchSize / maxSeqLength"
        )
    code = term.exit_code if term else -1
    text = ""
    if summary is not None:
        text = summary.get("message") or summary.get("reason") or ""
    elif term is not None:
        text = term.message[:500] or term.reason
    if code == contract.EXIT_EVAL_FAILED:
        raw: Any = summary or {}
        ev: dict[str, Any] = dict(raw.get("evaluation") or {})
        bias_failed = (ev.get("bias") or {}).get("passed") is False
        failures = "; ".join(ev.get("failures") or []) or text
        return (
            Reason.BIAS_GATE_FAILED if bias_failed else Reason.EVALUATION_FAILED,
            f"evaluation gates failed: {failures}",
        )
    if code == contract.EXIT_BAD_INPUT:
        return (
            Reason.TRAINING_FAILED,
            f"the trainer rejected its input (exit 2): {text}; fix the spec or dataset",
        )
    if view.failure_reason == "BackoffLimitExceeded":
        return (
            Reason.BACKOFF_LIMIT_EXCEEDED,
            f"Job {job} failed {view.failure_message or ''} (last exit {code}): {text}",
        )
    return Reason.TRAINING_FAILED, f"Job {job} failed (exit {code}): {text or view.failure_message}"
