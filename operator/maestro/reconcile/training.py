"""LLMTrainingJob: wait for a Ready dataset and the policy, run the training Job, report results.

Progress arrives separately (the operator's progress endpoint patches status.progress); this
reconcile owns everything else in status. Succeeded is final; Failed is final for a spec (edit it, or
set the `llmops.dev/retry` annotation, to run again).
"""

from __future__ import annotations

from typing import Any

from maestro.api.conditions import ConditionType, Reason, is_permanent
from maestro.api.dataset import DatasetPhase
from maestro.api.training import LLMTrainingJobSpec, TrainingPhase
from maestro.builders import training as build
from maestro.builders.meta import LABEL_OWNER_KIND, LABEL_OWNER_NAME
from maestro.builders.pods import split_pvc_uri
from maestro.reconcile import admission
from maestro.reconcile.common import ApplyRejected, apply, commit, standard
from maestro.reconcile.context import Context, InvalidObject, Result
from maestro.reconcile.store import DATASET, TRAINING
from maestro.status import jobs
from maestro.status.conditions import Cond, cond
from maestro.workers.train import contract

Obj = dict[str, Any]
DATASET_READY = "DatasetReady"
RETRY_ANNOTATION = build.RETRY_ANNOTATION
TERMINAL = (TrainingPhase.SUCCEEDED, TrainingPhase.FAILED)


def parse_spec(obj: Obj) -> LLMTrainingJobSpec:
    try:
        return LLMTrainingJobSpec.model_validate(obj.get("spec") or {})
    except ValueError as exc:
        raise InvalidObject(str(exc)) from exc


def dataset_input(ds: Obj) -> tuple[build.DatasetInput | None, str]:
    st = ds.get("status") or {}
    art = (st.get("artifact") or {}).get("uri") or ""
    version = st.get("version") or ""
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


async def reconcile(ctx: Context, obj: Obj) -> Result:
    meta = obj["metadata"]
    ns = meta["namespace"]
    status: Obj = obj.get("status") or {}
    kept = {
        k: status[k]
        for k in ("progress", "model", "evaluation", "lineage", "jobName", "startTime", "completionTime")
        if status.get(k) is not None
    }
    try:
        spec = parse_spec(obj)
    except InvalidObject as exc:
        await commit(
            ctx,
            obj,
            {**kept, "phase": TrainingPhase.FAILED},
            standard(False, Reason.INVALID_SPEC, f"spec is invalid: {exc}", progressing=False, degraded=True),
        )
        return Result(phase=TrainingPhase.FAILED)

    name = build.job_name(obj, spec)
    if status.get("phase") in TERMINAL and status.get("jobName") == name:
        await commit(
            ctx,
            obj,
            {**kept, "phase": status["phase"]},
            _conditions_of(status),
            message=status.get("message"),
        )
        return Result(phase=status["phase"])

    job = await ctx.kube.get("batch/v1", "Job", name, ns)
    # Before a Job exists, dependencies and policy gate it. Once it runs, a later dataset change does not
    # stop it (it trains on the version it started with, recorded in lineage).
    ds_name = spec.dataset_ref.name
    ds = ctx.store.get(DATASET, ns, ds_name)
    policies, _ = admission.governing_policies(ctx.store, obj)
    violations = admission.check(obj, policies, ctx.store)
    admitted = cond(
        ConditionType.POLICY_ADMITTED,
        not violations,
        Reason.POLICY_DENIED if violations else Reason.SUCCEEDED,
        "; ".join(map(str, violations))
        if violations
        else (
            f"admitted by {', '.join(p['metadata']['name'] for p in policies)}"
            if policies
            else "no LLMPolicy governs this job"
        ),
    )
    ds_cond, ds_input = _dataset_condition(ds, ds_name, spec.dataset_ref.version)
    if job is None:

        async def wait(reason: str, message: str, degraded: bool) -> None:
            """The job cannot start yet: Waiting, with why on Ready (and Degraded when a person must act)."""
            ready = standard(False, reason, message, progressing=False, degraded=degraded)
            await commit(ctx, obj, {**kept, "phase": TrainingPhase.WAITING}, [*ready, ds_cond, admitted])

        if ds_input is None:
            await wait(ds_cond.reason, ds_cond.message, is_permanent(ds_cond.reason))
            return Result(phase=TrainingPhase.WAITING)
        if violations:
            await wait(Reason.POLICY_DENIED, admitted.message, True)
            return Result(phase=TrainingPhase.WAITING)
        children = [
            m for m in (build.build_pvc(obj, spec, ctx.settings), build.build_service(obj, spec)) if m
        ]
        manifest = build.build_job(obj, spec, ds_input, ctx.settings)
        try:
            for child in children:
                await apply(ctx, child)
            job = await apply(ctx, manifest)
        except ApplyRejected as exc:
            # Still Waiting (not terminal): the apply is tried again on the next poll and resync.
            await wait(Reason.APPLY_FAILED, str(exc), True)
            return Result(requeue_after=ctx.poll_seconds, phase=TrainingPhase.WAITING)
        await _delete_superseded(ctx, obj, keep=name)

    annotations = (job.get("metadata") or {}).get("annotations") or {}
    lineage = {
        "datasetVersion": annotations.get(build.ANNOTATION_DATASET_VERSION),
        "baseModel": spec.base_model.uri
        + (f"@{spec.base_model.revision}" if spec.base_model.revision else ""),
        "image": annotations.get(build.ANNOTATION_IMAGE),
    }
    view = jobs.view(job)
    fields: Obj = {
        **kept,
        "jobName": name,
        "lineage": {k: v for k, v in lineage.items() if v},
        "startTime": view.start_time or kept.get("startTime"),
    }
    # A policy that appears after the job started blocks nothing retroactively, but says so.
    policy_conds = [
        ds_cond
        if ds_input is not None
        else cond(DATASET_READY, True, Reason.SUCCEEDED, "the job started on a Ready dataset"),
        admitted,
    ]
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
        if view.state is jobs.JobState.RUNNING and (kept.get("progress") or {}).get("stage") == "evaluating":
            # the trainer said so through the progress endpoint: training is over, the gates are not
            phase, reason, msg = (
                TrainingPhase.EVALUATING,
                Reason.EVALUATING,
                f"Job {name} is evaluating the trained model",
            )
        degraded = bool(violations)
        await commit(
            ctx,
            obj,
            {**fields, "phase": phase},
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
            ],
        )
        return Result(phase=phase)

    pods = await ctx.kube.list(
        "v1", "Pod", ns, labels={"batch.kubernetes.io/controller-uid": job["metadata"]["uid"]}
    )
    term = jobs.termination(pods, build.CONTAINER, index="0" if spec.resources.nodes > 1 else None)
    summary: contract.Summary | None = None
    parse_error = ""
    if term is not None and term.message:
        try:
            summary = contract.parse_summary(term.message)
        except ValueError as exc:
            parse_error = str(exc)
    fields["completionTime"] = view.completion_time
    if summary is not None:
        fields.update(_results(summary, spec, build.output_claim(obj, spec), fields["lineage"]))
    conds: list[Cond]
    if (
        view.state == jobs.JobState.SUCCEEDED
        and summary is not None
        and summary.get("passed")
        and summary.get("model")
    ):
        msg = f"trained {fields['model'].get('uri')} ({fields['model'].get('digest')})"
        phase = TrainingPhase.SUCCEEDED
        progress = dict(fields.get("progress") or {})
        progress.update({"percent": 100, "etaSeconds": 0})
        fields["progress"] = progress
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
    await commit(ctx, obj, {**fields, "phase": phase}, [*conds, *policy_conds])
    return Result(phase=phase)


def _dataset_condition(ds: Obj | None, name: str, pin: str | None) -> tuple[Cond, build.DatasetInput | None]:
    if ds is None:
        return cond(
            DATASET_READY,
            False,
            Reason.DATASET_NOT_FOUND,
            f"LLMDataset {name!r} does not exist in this namespace; create it (the job starts once "
            "it is Ready)",
        ), None
    st = ds.get("status") or {}
    ready = st.get("phase") == DatasetPhase.READY and any(
        c.get("type") == ConditionType.READY and c.get("status") == "True" for c in st.get("conditions") or []
    )
    if not ready:
        why = st.get("message") or f"phase {st.get('phase') or 'Pending'}"
        ds_ready: Obj = next(
            (c for c in st.get("conditions") or [] if c.get("type") == ConditionType.READY), {}
        )
        current = st.get("observedGeneration") == (ds.get("metadata") or {}).get("generation")
        if current and is_permanent(str(ds_ready.get("reason") or "")):
            # no retry clears this (GateFailed, SchemaMismatch, ...): say so instead of waiting for ever
            return cond(
                DATASET_READY,
                False,
                Reason.DATASET_FAILED,
                f"LLMDataset {name!r} failed ({ds_ready.get('reason')}): {why}; fix the dataset (the job "
                "starts once it is Ready)",
            ), None
        return cond(
            DATASET_READY, False, Reason.DATASET_NOT_READY, f"LLMDataset {name!r} is not Ready: {why}"
        ), None
    if pin and st.get("version") != pin:
        return cond(
            DATASET_READY,
            False,
            Reason.DATASET_VERSION_MISMATCH,
            f"LLMDataset {name!r} is at version {st.get('version')}, the job pins {pin}",
        ), None
    inp, problem = dataset_input(ds)
    if inp is None:
        return cond(DATASET_READY, False, Reason.DATASET_NOT_READY, f"LLMDataset {name!r}: {problem}"), None
    return cond(
        DATASET_READY, True, Reason.SUCCEEDED, f"LLMDataset {name!r} version {inp.version} is Ready"
    ), inp


def _results(summary: contract.Summary, spec: LLMTrainingJobSpec, output_claim: str, lineage: Obj) -> Obj:
    out: Obj = {}
    model = summary.get("model")
    if model:
        out["model"] = {
            "uri": model_uri(model["uri"], output_claim),
            "digest": model["digest"],
            "format": model_format(model["format"], spec.output.merge),
        }
    ev = summary.get("evaluation")
    if ev is not None:
        out["evaluation"] = _evaluation_status(ev)
    metrics = summary.get("metrics")
    if metrics:
        out["progress"] = {
            k: v
            for k, v in {
                "step": metrics.get("steps"),
                "totalSteps": metrics.get("steps"),
                "loss": metrics.get("trainLoss"),
                "tokensPerSecond": metrics.get("tokensPerSecond"),
                "epoch": metrics.get("epochs"),
            }.items()
            if v is not None
        }
    lin = summary.get("lineage")
    if lin:
        out["lineage"] = {**lineage, **{k: v for k, v in lin.items() if v}}
    return out


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


def _evaluation_status(ev: contract.Evaluation) -> Obj:
    """The trainer's evaluation summary → status.evaluation (fine-tuned and base side by side)."""
    raw: Any = ev
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


async def _delete_superseded(ctx: Context, obj: Obj, keep: str) -> None:
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    for job in await ctx.kube.list(
        "batch/v1", "Job", ns, labels={LABEL_OWNER_KIND: TRAINING, LABEL_OWNER_NAME: name}
    ):
        if job["metadata"]["name"] != keep:
            await ctx.kube.delete("batch/v1", "Job", job["metadata"]["name"], ns)


def _conditions_of(status: Obj) -> list[Cond]:
    return [
        Cond(c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
        for c in status.get("conditions") or []
    ]
