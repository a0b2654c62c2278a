"""LLMDeployment: resolve the model and policy, apply the serving children, report the rollout.

Once an endpoint runs, a dependency or policy problem never tears it down: the children stay as they
are, and conditions say what blocks the next rollout.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from maestro.api.conditions import ConditionType, Reason
from maestro.api.deployment import (
    DEFAULT_VLLM_IMAGE,
    AdapterStatus,
    AppliedPolicy,
    DeploymentLineage,
    DeploymentPhase,
    LLMDeploymentSpec,
    LLMDeploymentStatus,
    ServedModel,
)
from maestro.api.experiments import PromptStatus, VariantSignals, VariantStatus
from maestro.api.policy import LLMPolicySpec
from maestro.api.rollout import RevisionRecord
from maestro.api.training import LLMTrainingJobStatus, LoRA, TrainedModel, TrainingPhase
from maestro.builders import guard_config, serving
from maestro.builders.meta import ChildRef
from maestro.builders.pods import split_pvc_uri
from maestro.builders.settings import Settings
from maestro.k8s import metrics as prometheus
from maestro.reconcile import admission
from maestro.reconcile import rollout as rollout_plan
from maestro.reconcile.common import Plan, invalid_spec, run, spec_of, standard, status_of
from maestro.reconcile.context import Built, Context, InvalidObject, Result
from maestro.reconcile.store import TRAINING
from maestro.status import deployments
from maestro.status import experiment as variant_stats
from maestro.status.conditions import Cond, cond, find

Obj = dict[str, Any]

#: Shortest window a canary step's signals are read over: two scrapes at the chart's 30 s interval.
MIN_CANARY_WINDOW_S = 60


@dataclass(frozen=True)
class Blocked:
    reason: str
    message: str
    #: No watch event ends this wait (e.g. a claim appearing): poll.
    poll: bool = False


@dataclass(frozen=True)
class TrainedJob:
    """A Succeeded LLMTrainingJob as a deployment uses it: its object and its status, read as a model."""

    obj: Obj
    status: LLMTrainingJobStatus
    model: TrainedModel


def _training_model(
    ctx: Context, ns: str, name: str, need_eval: bool
) -> tuple[TrainedJob | None, Blocked | None]:
    tj = ctx.store.get(TRAINING, ns, name)
    if tj is None:
        return None, Blocked(
            Reason.TRAINING_JOB_NOT_FOUND, f"LLMTrainingJob {name!r} does not exist in this namespace"
        )
    st = status_of(LLMTrainingJobStatus, tj)
    if st.phase == TrainingPhase.FAILED:
        return None, Blocked(
            Reason.TRAINING_JOB_FAILED,
            f"LLMTrainingJob {name!r} failed: {st.message or 'see its conditions'}; "
            "fix it and re-run it (or point model at another job or uri)",
        )
    if st.phase != TrainingPhase.SUCCEEDED or st.model is None or not st.model.uri:
        return None, Blocked(
            Reason.TRAINING_JOB_NOT_SUCCEEDED,
            f"LLMTrainingJob {name!r} has not succeeded yet (phase {st.phase or 'Pending'})",
        )
    if need_eval and (st.evaluation is None or st.evaluation.passed is not True):
        return None, Blocked(
            Reason.EVALUATION_NOT_PASSED,
            f"the policy requires evaluation to pass and LLMTrainingJob {name!r} has no passed evaluation",
        )
    return TrainedJob(tj, st, st.model), None


def lora_rank(tj: Obj) -> int:
    """The LoRA rank an adapter from this training job has: spec.hyperparameters.lora.r (its default
    when unset), so vLLM can be told --max-lora-rank."""
    hp = (tj.get("spec") or {}).get("hyperparameters") or {}
    r = (hp.get("lora") or {}).get("r")
    return r if isinstance(r, int) and r > 0 else LoRA().r


def resolve_model(
    ctx: Context, obj: Obj, spec: LLMDeploymentSpec, need_eval: bool
) -> tuple[serving.ResolvedModel | None, Obj, Blocked | None]:
    """The model to serve and its lineage, or why it cannot be served yet."""
    ns = obj["metadata"]["namespace"]
    served = spec.model.served_model_name or obj["metadata"]["name"]
    adapters: dict[str, str] = {}
    ranks: dict[str, int] = {}
    digests: dict[str, str] = {}
    lineage: Obj = {}
    for adapter in spec.adapters:
        if adapter.training_job_ref is not None:
            tj, blocked = _training_model(ctx, ns, adapter.training_job_ref.name, need_eval)
            if blocked:
                users = [v.name for v in spec.variants if v.adapter == adapter.name]
                served_by = f" (serving variant {', '.join(users)})" if users else ""
                return (
                    None,
                    lineage,
                    Blocked(blocked.reason, f"adapter {adapter.name}{served_by}: {blocked.message}"),
                )
            assert tj is not None and tj.model.uri
            adapters[adapter.name] = tj.model.uri
            ranks[adapter.name] = lora_rank(tj.obj)
            if tj.model.digest:
                digests[adapter.name] = tj.model.digest
        elif adapter.uri:
            adapters[adapter.name] = adapter.uri
    if spec.model.training_job_ref is not None:
        tj_name = spec.model.training_job_ref.name
        tj, blocked = _training_model(ctx, ns, tj_name, need_eval)
        if blocked:
            return None, lineage, blocked
        assert tj is not None and tj.model.uri
        model, model_uri = tj.model, tj.model.uri
        tlin = tj.status.lineage
        base = (tj.obj.get("spec") or {}).get("baseModel") or {}
        lineage = {
            "trainingJob": tj_name,
            "datasetVersion": tlin.dataset_version if tlin else None,
            "baseModel": (tlin.base_model if tlin else None) or base.get("uri"),
        }
        if model.format == "adapter":
            adapters[served] = model_uri
            ranks[served] = lora_rank(tj.obj)
            if model.digest:
                digests[served] = model.digest
            return (
                serving.ResolvedModel(
                    uri=base.get("uri", ""),
                    served_name=f"{served}-base",
                    digest=model.digest,
                    adapters=adapters,
                    revision=base.get("revision"),
                    adapter_ranks=ranks,
                    adapter_digests=digests,
                ),
                lineage,
                None,
            )
        return (
            serving.ResolvedModel(
                uri=model_uri,
                served_name=served,
                digest=model.digest,
                adapters=adapters,
                adapter_ranks=ranks,
                adapter_digests=digests,
            ),
            lineage,
            None,
        )
    assert spec.model.uri is not None
    lineage = {"baseModel": spec.model.uri}
    return (
        serving.ResolvedModel(
            uri=spec.model.uri,
            served_name=served,
            adapters=adapters,
            revision=spec.model.revision,
            adapter_ranks=ranks,
            adapter_digests=digests,
        ),
        lineage,
        None,
    )


async def _check_claims(ctx: Context, ns: str, model: serving.ResolvedModel) -> Blocked | None:
    """A pvc:// model whose claim does not exist can never start: say so instead of a Pending pod."""
    for uri in [model.uri, *model.adapters.values()]:
        if uri.startswith("pvc://"):
            try:
                claim, _ = split_pvc_uri(uri)
            except ValueError as exc:
                return Blocked(Reason.INVALID_SPEC, str(exc))
            if await ctx.kube.get("v1", "PersistentVolumeClaim", claim, ns) is None:
                return Blocked(
                    Reason.SOURCE_UNAVAILABLE,
                    f"model uri {uri}: PersistentVolumeClaim {claim!r} does not exist in namespace "
                    f"{ns}; create it or fix the uri",
                    poll=True,
                )
    return None


@dataclass(frozen=True)
class Facts:
    """What a deployment reconcile looks at before deciding."""

    spec: LLMDeploymentSpec | None
    invalid: str = ""
    policies: tuple[Obj, ...] = ()
    #: policyRef names a policy that does not exist.
    missing_policy: str | None = None
    violations: tuple[admission.Violation, ...] = ()
    model: serving.ResolvedModel | None = None
    lineage: Obj = field(default_factory=dict)
    #: Why the model cannot be served yet (a dependency, a missing claim).
    model_blocked: Blocked | None = None
    #: The serving Deployment as last seen (None: it does not exist).
    deployment: Obj | None = None
    #: Its pods, listed only while a rollout is stuck or in progress (they say why).
    pods: tuple[Obj, ...] | None = None
    caps: serving.Capabilities = field(default_factory=serving.Capabilities)
    apply_error: str = ""
    #: The children last applied and the key of their inputs (reused when the key is unchanged).
    built: Built | None = None
    #: While a canary runs: the stable and canary arms' signals over the current step (None: none
    #: could be read, `signals_error` says why).
    canary_signals: dict[str, VariantSignals] | None = None
    signals_error: str | None = None
    #: When the facts were gathered (the canary's step clock).
    now: dt.datetime | None = None
    #: spec.variants' traffic over the analysis window, from Prometheus (None: not read).
    variant_signals: Mapping[str, VariantSignals] | None = None
    #: Why it could not be read (Prometheus unreachable or refusing the query).
    analysis_error: str = ""


async def observe(ctx: Context, obj: Obj) -> Facts:
    ns = obj["metadata"]["namespace"]
    try:
        spec = spec_of(LLMDeploymentSpec, obj)
    except InvalidObject as exc:
        return Facts(spec=None, invalid=str(exc))
    policies, missing_ref = admission.governing_policies(ctx.store, obj)
    model, lineage, blocked = resolve_model(ctx, obj, spec, admission.requires_evaluation(policies))
    if blocked is None and model is not None:
        blocked = await _check_claims(ctx, ns, model)
    deployment = await ctx.child("apps/v1", "Deployment", serving.deployment_name(obj), ns)
    pods: tuple[Obj, ...] | None = None
    rollout = deployments.view(deployment)
    if rollout is not None and not rollout.complete and rollout.desired > 0 and rollout.observed:
        # Only pods say why a rollout is stuck (crash loop, image pull); not worth a list before the
        # Deployment controller has even looked at the new template.
        pods = tuple(await ctx.kube.list("v1", "Pod", ns, labels=serving.selector(obj)))
    signals, signals_error = await _canary_signals(ctx, obj)
    variant_signals, analysis_error = await _variant_signals(ctx, obj, spec, deployment is not None)
    return Facts(
        spec=spec,
        policies=tuple(policies),
        missing_policy=missing_ref,
        violations=tuple(admission.check(obj, policies, ctx.store)),
        model=model,
        lineage=lineage,
        model_blocked=blocked,
        deployment=deployment,
        pods=pods,
        caps=ctx.caps,
        built=ctx.built.get(obj["metadata"].get("uid", "")),
        canary_signals=signals,
        signals_error=signals_error,
        now=dt.datetime.now(dt.UTC),
        variant_signals=variant_signals,
        analysis_error=analysis_error,
    )


async def _variant_signals(
    ctx: Context, obj: Obj, spec: LLMDeploymentSpec, serving_exists: bool
) -> tuple[Mapping[str, VariantSignals] | None, str]:
    """spec.variants' signals from Prometheus when the operator has one and the endpoint exists; the
    last read is reused within the analysis interval (status writes trigger reconciles too)."""
    url = ctx.settings.prometheus_url
    if not spec.variants or not url or not serving_exists:
        return None, ""
    uid = obj["metadata"].get("uid", "")
    now = time.monotonic()
    last = ctx.analyses.get(uid)
    if last is not None and now - last[0] < ctx.settings.analysis_interval_seconds:
        cached: tuple[Mapping[str, VariantSignals] | None, str] = last[1]
        return cached
    try:
        read: tuple[Mapping[str, VariantSignals] | None, str] = (
            await prometheus.variant_signals(
                url,
                obj["metadata"]["namespace"],
                serving.metrics_service_name(obj),
                ctx.settings.analysis_window,
            ),
            "",
        )
    except prometheus.PrometheusError as exc:
        read = (None, str(exc))
    ctx.analyses[uid] = (now, read)
    return read


async def _canary_signals(ctx: Context, obj: Obj) -> tuple[dict[str, VariantSignals] | None, str | None]:
    """The two arms' signals over the canary's current step, while one runs (read from Prometheus:
    the guard's per-variant series under the variant names `stable` and `canary`). The window is the
    step's age, at least MIN_CANARY_WINDOW_S so that two scrapes fall inside it."""
    canary = status_of(LLMDeploymentStatus, obj).canary
    if canary is None:
        return None, None
    url = ctx.settings.prometheus_url
    if not url:
        return None, "PrometheusNotConfigured: set the chart's analysis.prometheus.url"
    started = rollout_plan.parse_time(canary.step_started)
    age = (dt.datetime.now(dt.UTC) - started).total_seconds() if started else 0.0
    window = f"{max(MIN_CANARY_WINDOW_S, math.ceil(age))}s"
    try:
        signals = await prometheus.variant_signals(
            url, obj["metadata"]["namespace"], serving.metrics_service_name(obj), window
        )
    except prometheus.PrometheusError as exc:
        return None, f"PrometheusUnavailable: {exc}"
    return dict(signals), None


async def reconcile(ctx: Context, obj: Obj) -> Result:
    return await run(ctx, obj, observe, decide)


def _admission(facts: Facts) -> tuple[Cond, Blocked | None]:
    """PolicyAdmitted, and what blocks the next rollout on the policy side."""
    policies = facts.policies
    if facts.missing_policy:
        msg = f"policyRef names LLMPolicy {facts.missing_policy!r}, which does not exist"
        return cond(ConditionType.POLICY_ADMITTED, False, Reason.POLICY_NOT_FOUND, msg), Blocked(
            Reason.POLICY_NOT_FOUND, msg
        )
    if len(policies) > 1:
        # One guard enforces one policy: picking one silently (by name) would hide the others' rules.
        names = ", ".join(repr(p["metadata"]["name"]) for p in policies)
        msg = (
            f"LLMPolicies {names} all select this deployment and one guard enforces one policy; "
            "set spec.policyRef to the one to enforce, or narrow the policies' selectors"
        )
        return cond(ConditionType.POLICY_ADMITTED, False, Reason.CONFLICTING_POLICIES, msg), Blocked(
            Reason.CONFLICTING_POLICIES, msg
        )
    if facts.violations:
        msg = "; ".join(map(str, facts.violations))
        return cond(ConditionType.POLICY_ADMITTED, False, Reason.POLICY_DENIED, msg), Blocked(
            Reason.POLICY_DENIED, msg
        )
    return cond(
        ConditionType.POLICY_ADMITTED,
        True,
        Reason.SUCCEEDED,
        f"admitted by LLMPolicy {policies[0]['metadata']['name']}"
        if policies
        else "no LLMPolicy governs this deployment",
    ), None


def _policy_spec(policy: Obj | None) -> LLMPolicySpec | None:
    if policy is None:
        return None
    try:
        return LLMPolicySpec.model_validate(policy.get("spec") or {})
    except ValueError:
        return None


def decide(obj: Obj, facts: Facts, settings: Settings, poll_seconds: float) -> Plan:
    """Pure: the serving children and the deployment's status from its spec and what was observed."""
    name = obj["metadata"]["name"]
    status = status_of(LLMDeploymentStatus, obj)
    if facts.spec is None:
        return invalid_spec(LLMDeploymentStatus(phase=DeploymentPhase.FAILED), facts.invalid)
    spec = facts.spec
    admitted, blocked = _admission(facts)
    dep_blocked = facts.model_blocked
    deps = cond(
        ConditionType.DEPENDENCIES_READY,
        dep_blocked is None,
        dep_blocked.reason if dep_blocked else Reason.SUCCEEDED,
        dep_blocked.message if dep_blocked else "the model is available",
    )
    blocked = (
        blocked
        or dep_blocked
        or (Blocked(Reason.APPLY_FAILED, facts.apply_error) if facts.apply_error else None)
    )
    policy = facts.policies[0] if facts.policies else None
    policy_spec = _policy_spec(policy)
    model = facts.model
    served_name = spec.model.served_model_name or name
    plan_rollout: rollout_plan.RolloutPlan | None = None
    plan_rollout_cand_uri: str | None = None
    split: guard_config.CanarySplit | None = None
    if blocked is None and model is not None:
        cand = _candidate(spec, model, facts.lineage, served_name, policy_spec, settings)
        plan_rollout = rollout_plan.decide(
            spec.rollout,
            cand,
            status.history,
            status.canary,
            facts.canary_signals,
            facts.signals_error,
            facts.now or dt.datetime.now(dt.UTC),
            variant_stats.error_rate_p_value,
            _canary_unavailable(status.canary, facts),
        )
        model, split = _serve(model, plan_rollout, served_name, cand)
        plan_rollout_cand_uri = cand.model_uri
    children: Mapping[ChildRef, Obj | None] = {}
    key = _children_key(obj, model, policy, facts.caps, settings, split)
    if blocked is None and model is not None and facts.built is not None and facts.built.key == key:
        children = facts.built.children
    elif blocked is None and model is not None:
        doc = guard_config.render(
            policy["metadata"]["name"] if policy_spec and policy else None,
            policy_spec,
            spec.model.served_model_name or name,
            guard_config.experiments(
                spec, spec.model.served_model_name or name, f"{obj['metadata']['namespace']}/{name}", split
            ),
            # vLLM-CPU's LoRA kernels crash on prompt logprobs in a shared batch (GuardConfig)
            prompt_logprobs=spec.resources.gpus > 0 or not model.adapters,
        )
        auth = policy_spec.request.auth if policy_spec else None
        secret = auth.api_keys_secret_ref.name if auth and auth.api_keys_secret_ref else None
        children = serving.build_children(obj, spec, model, settings, facts.caps, doc, api_keys_secret=secret)

    deployment = facts.deployment
    rollout = deployments.view(deployment, None if facts.pods is None else list(facts.pods))
    fields = LLMDeploymentStatus(
        selector=serving.selector_string(obj),
        endpoint=serving.endpoint(obj) if deployment is not None else None,
        replicas=rollout.replicas if rollout else 0,
        ready_replicas=rollout.ready if rollout else 0,
        model=status.model,
        adapters=status.adapters,
        lineage=status.lineage,
        policy=status.policy,
        prompt=status.prompt,
        variants=status.variants,
        history=plan_rollout.history if plan_rollout else status.history,
        canary=plan_rollout.canary if plan_rollout else status.canary,
    )
    if model is not None and blocked is None:
        fields.model = ServedModel(
            uri=model.uri or None,
            digest=model.digest or None,
            served_name=spec.model.served_model_name or name,
        )
        lineage = {**facts.lineage, "promptDigest": spec.prompt.digest if spec.prompt else None}
        if plan_rollout is not None and plan_rollout.stable.model_uri != plan_rollout_cand_uri:
            # rolled back: the lineage is the stable revision's, not the spec's
            stable = plan_rollout.stable
            lineage |= {
                "trainingJob": stable.training_job,
                "datasetVersion": stable.dataset_version,
                "baseModel": stable.base_model or lineage.get("baseModel"),
            }
        fields.lineage = (
            DeploymentLineage.model_validate({k: v for k, v in lineage.items() if v})
            if any(lineage.values())
            else None
        )
        ready = bool(rollout and rollout.complete and rollout.ready > 0)
        fields.adapters = [
            AdapterStatus(name=a, uri=uri, digest=model.adapter_digests.get(a), ready=ready)
            for a, uri in sorted(model.adapters.items())
        ]
    # The policy reaches running guards through the ConfigMap volume (kubelet sync + the guard's
    # reload poll), not through a rollout: once the ConfigMap is applied and the pods are up, it is the
    # policy in force (within that propagation delay, documented on status.policy).
    if rollout is not None and rollout.complete and children:
        fields.policy = (
            AppliedPolicy(name=policy["metadata"]["name"], digest=guard_config.policy_digest(policy_spec))
            if (policy is not None and policy_spec is not None)
            else None
        )
        fields.prompt, fields.variants = experiment_status(spec, spec.model.served_model_name or name)
        if facts.variant_signals is not None:
            fields.variants = variant_stats.with_signals(
                fields.variants, facts.variant_signals, settings.analysis_min_effect
            )
        elif facts.analysis_error:
            fields.variants = variant_stats.keep_statistics(fields.variants, status.variants)
    conds, phase, requeue = _conditions(rollout, blocked, deployment is None, poll_seconds)
    fields.phase = DeploymentPhase(phase)
    if blocked is not None and blocked.poll:
        requeue = poll_seconds
    analyzed = _analyzed(spec, facts, settings, deployment is not None)
    if analyzed and settings.prometheus_url:  # statistics age: read them again at the interval
        interval = settings.analysis_interval_seconds
        requeue = interval if requeue is None else min(requeue, interval)
    rolled_out: list[Cond] = []
    if plan_rollout is not None:
        rolled_out = [plan_rollout.condition]
        if plan_rollout.requeue_after is not None:
            requeue = min(requeue or plan_rollout.requeue_after, plan_rollout.requeue_after)
    elif status.history:
        previous = find(obj.get("status", {}).get("conditions"), ConditionType.ROLLED_OUT)
        if previous is not None:  # blocked: the rollout state stands as it was
            rolled_out = [
                Cond(
                    previous["type"],
                    previous["status"],
                    previous.get("reason", ""),
                    previous.get("message", ""),
                )
            ]
    return Plan(
        fields,
        [*conds, deps, admitted, *rolled_out, *analyzed],
        children=children,
        force=deployment is None,
        requeue_after=requeue,
        children_key=key if children else None,
        events=tuple(plan_rollout.events) if plan_rollout else (),
    )


def _analyzed(spec: LLMDeploymentSpec, facts: Facts, settings: Settings, serving_exists: bool) -> list[Cond]:
    """The Analyzed condition of a deployment with variants (none without): whether status.variants
    carries statistics, or why not."""
    if not spec.variants or not serving_exists:
        return []
    if not settings.prometheus_url:
        return [
            cond(
                ConditionType.ANALYZED,
                False,
                Reason.PROMETHEUS_NOT_CONFIGURED,
                "the operator reads no Prometheus: set the chart's analysis.prometheus.url "
                "(MAESTRO_PROMETHEUS_URL) for per-variant statistics in status.variants",
            )
        ]
    if facts.variant_signals is None:
        return [
            cond(
                ConditionType.ANALYZED,
                False,
                Reason.PROMETHEUS_UNAVAILABLE,
                f"{facts.analysis_error or 'Prometheus was not read'}; retrying every "
                f"{settings.analysis_interval_seconds:g} s",
            )
        ]
    total = sum(round(s.requests) for s in facts.variant_signals.values())
    return [
        cond(
            ConditionType.ANALYZED,
            True,
            Reason.VARIANTS_ANALYZED,
            f"{total} requests over the last {settings.analysis_window}; variants compared with "
            f"{spec.variants[0].name} (the baseline)",
        )
    ]


#: Pod states that say the canary's pods cannot serve (a broken adapter makes vLLM exit at start).
CANARY_FATAL = frozenset({Reason.CRASH_LOOP, Reason.OOM_KILLED, Reason.IMAGE_PULL_FAILED})


def _canary_unavailable(canary: object, facts: Facts) -> str | None:
    """Why the pods of a running canary's template cannot start, else None."""
    if canary is None or facts.pods is None:
        return None
    view = deployments.view(facts.deployment, list(facts.pods))
    if view is None or view.complete or view.stuck_reason not in CANARY_FATAL:
        return None
    return f"its pods cannot start: {view.stuck_reason}: {view.stuck_message}"


def _candidate(
    spec: LLMDeploymentSpec,
    model: serving.ResolvedModel,
    lineage: Obj,
    served: str,
    policy: LLMPolicySpec | None,
    settings: Settings,
) -> rollout_plan.Candidate:
    """The revision the spec resolves to: an adapter (a training job's LoRA, served under the
    deployment's name on `model.uri`) or whole weights."""
    image = spec.runtime.image if spec.runtime.image != DEFAULT_VLLM_IMAGE else settings.vllm_image
    cand = rollout_plan.Candidate(
        model_uri=model.uri,
        model_digest=model.digest,
        training_job=lineage.get("trainingJob"),
        dataset_version=lineage.get("datasetVersion"),
        prompt_digest=spec.prompt.digest if spec.prompt else None,
        policy_digest=guard_config.policy_digest(policy) if policy is not None else None,
        image=image,
    )
    if served in model.adapters and model.served_name != served:
        return replace(
            cand,
            model_uri=model.adapters[served],
            model_digest=model.adapter_digests.get(served),
            adapter=True,
            lora_rank=model.adapter_ranks.get(served),
            base_model=model.uri,
        )
    return cand


def _serve(
    model: serving.ResolvedModel, plan: rollout_plan.RolloutPlan, served: str, cand: rollout_plan.Candidate
) -> tuple[serving.ResolvedModel, guard_config.CanarySplit | None]:
    """What vLLM loads and how the guard splits: the stable revision under the deployment's name (it
    differs from the spec's model after a rollback) and, while a canary runs, the canary's adapter
    next to it under `<name>-canary`."""
    stable, canary = plan.stable, plan.canary_record
    if not stable.adapter or served not in model.adapters:
        return model, None
    if canary is None and rollout_plan.same_model(stable, cand):
        return model, None  # the spec's model serves everything: as resolved
    adapters, ranks, digests = dict(model.adapters), dict(model.adapter_ranks), dict(model.adapter_digests)

    def load(name: str, rec: RevisionRecord) -> None:
        adapters[name] = rec.model_uri or ""
        ranks.pop(name, None)
        digests.pop(name, None)
        if rec.lora_rank:
            ranks[name] = rec.lora_rank
        if rec.model_digest:
            digests[name] = rec.model_digest

    load(served, stable)
    split = None
    if canary is not None and plan.canary is not None:
        load(served + rollout_plan.CANARY_SUFFIX, canary)
        split = guard_config.CanarySplit(served, served + rollout_plan.CANARY_SUFFIX, plan.canary.weight)
    resolved = replace(
        model, adapters=adapters, adapter_ranks=ranks, adapter_digests=digests, digest=stable.model_digest
    )
    return resolved, split


def experiment_status(
    spec: LLMDeploymentSpec, served: str
) -> tuple[PromptStatus | None, list[VariantStatus]]:
    """status.prompt and status.variants: what the guards apply once the ConfigMap reached them (the
    same propagation as the policy's). Per-variant traffic statistics come from the monitor."""
    in_force = PromptStatus(digest=spec.prompt.digest, version=spec.prompt.version) if spec.prompt else None
    variants = [
        VariantStatus(
            name=v.name,
            served_model=v.adapter or served,
            weight=v.weight,
            prompt_digest=prompt.digest if (prompt := v.prompt or spec.prompt) is not None else None,
        )
        for v in spec.variants
    ]
    return in_force, variants


def _children_key(
    obj: Obj,
    model: serving.ResolvedModel | None,
    policy: Obj | None,
    caps: serving.Capabilities,
    settings: Settings,
    split: guard_config.CanarySplit | None = None,
) -> Hashable | None:
    """Everything the serving children are built from (`serving.build_children`'s arguments): the
    object's identity and spec generation, the resolved model, the policy's identity and generation,
    the cluster's capabilities and the process settings. None where one of them cannot be keyed."""
    meta = obj["metadata"]
    if model is None or not meta.get("uid") or meta.get("generation") is None:
        return None
    pmeta = policy["metadata"] if policy is not None else {}
    if policy is not None and (not pmeta.get("uid") or pmeta.get("generation") is None):
        return None
    return (
        meta["uid"],
        meta["generation"],
        model.uri,
        model.served_name,
        model.digest,
        model.revision,
        tuple(sorted(model.adapters.items())),
        tuple(sorted(model.adapter_ranks.items())),
        tuple(sorted(model.adapter_digests.items())),
        pmeta.get("uid"),
        pmeta.get("name"),
        pmeta.get("generation"),
        caps,
        id(settings),
        split,
    )


def _conditions(
    rollout: deployments.RolloutView | None, blocked: Blocked | None, missing: bool, poll: float
) -> tuple[list[Cond], str, float | None]:
    if rollout is None:
        assert blocked is not None or missing
        if blocked is None:
            return (
                standard(False, Reason.RECONCILING, "creating the serving Deployment", progressing=True),
                DeploymentPhase.PENDING,
                None,
            )
        permanent = blocked.reason in (
            Reason.TRAINING_JOB_FAILED,
            Reason.POLICY_DENIED,
            Reason.INVALID_SPEC,
            Reason.CONFLICTING_POLICIES,
        )
        # a rejected apply is retried (resync, spec edit) but is a failure to show, not a wait
        degraded = permanent or blocked.reason == Reason.APPLY_FAILED
        return (
            standard(False, blocked.reason, blocked.message, progressing=False, degraded=degraded),
            DeploymentPhase.FAILED if permanent else DeploymentPhase.WAITING,
            None,
        )
    # An endpoint exists: report the rollout; a blocked next rollout is reported as Degraded, not a teardown.
    block_msg = f"; the next rollout is blocked: {blocked.message}" if blocked else ""
    if rollout.stuck_reason:
        msg = rollout.stuck_message + block_msg
        return (
            standard(False, rollout.stuck_reason, msg, progressing=not rollout.rolled_out, degraded=True),
            DeploymentPhase.DEGRADED,
            poll,
        )
    if rollout.desired == 0:
        return (
            standard(
                False,
                Reason.SCALED_TO_ZERO,
                "scaled to zero replicas" + block_msg,
                progressing=False,
                degraded=blocked is not None,
            ),
            DeploymentPhase.READY,
            None,
        )
    if rollout.complete:
        if blocked is not None:
            return (
                standard(
                    False,
                    blocked.reason,
                    f"{rollout.ready}/{rollout.desired} replicas serve the previous configuration{block_msg}",
                    progressing=False,
                    degraded=True,
                ),
                DeploymentPhase.DEGRADED,
                None,
            )
        return (
            standard(
                True, Reason.AVAILABLE, f"{rollout.ready}/{rollout.desired} replicas ready", progressing=False
            ),
            DeploymentPhase.READY,
            None,
        )
    if rollout.rolled_out:
        msg = f"{rollout.available}/{rollout.desired} replicas available" + block_msg
        return (
            standard(
                False,
                Reason.MINIMUM_REPLICAS_UNAVAILABLE,
                msg,
                progressing=True,
                degraded=rollout.available > 0,
            ),
            DeploymentPhase.PROGRESSING,
            poll,
        )
    msg = (
        f"rolling out: {rollout.updated}/{rollout.desired} updated, {rollout.available} available" + block_msg
    )
    return (
        standard(False, Reason.ROLLOUT_IN_PROGRESS, msg, progressing=True),
        DeploymentPhase.PROGRESSING,
        poll,
    )
