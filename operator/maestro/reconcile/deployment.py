"""LLMDeployment: resolve the model and policy, apply the serving children, report the rollout.

Once an endpoint runs, a dependency or policy problem never tears it down: the children stay as they
are, and conditions say what blocks the next rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maestro.api.conditions import ConditionType, Reason
from maestro.api.deployment import DeploymentPhase, LLMDeploymentSpec
from maestro.api.policy import LLMPolicySpec
from maestro.api.training import LoRA, TrainingPhase
from maestro.builders import guard_config, serving
from maestro.builders.meta import digest
from maestro.builders.pods import split_pvc_uri
from maestro.reconcile import admission
from maestro.reconcile.common import ApplyRejected, apply_all, commit, standard
from maestro.reconcile.context import Context, InvalidObject, Result
from maestro.reconcile.store import TRAINING
from maestro.status import deployments
from maestro.status.conditions import Cond, cond

Obj = dict[str, Any]


@dataclass(frozen=True)
class Blocked:
    reason: str
    message: str
    #: No watch event ends this wait (e.g. a claim appearing): poll.
    poll: bool = False


def parse_spec(obj: Obj) -> LLMDeploymentSpec:
    try:
        return LLMDeploymentSpec.model_validate(obj.get("spec") or {})
    except ValueError as exc:
        raise InvalidObject(str(exc)) from exc


def _training_model(ctx: Context, ns: str, name: str, need_eval: bool) -> tuple[Obj | None, Blocked | None]:
    tj = ctx.store.get(TRAINING, ns, name)
    if tj is None:
        return None, Blocked(
            Reason.TRAINING_JOB_NOT_FOUND, f"LLMTrainingJob {name!r} does not exist in this namespace"
        )
    st = tj.get("status") or {}
    phase = st.get("phase")
    if phase == TrainingPhase.FAILED:
        return None, Blocked(
            Reason.TRAINING_JOB_FAILED,
            f"LLMTrainingJob {name!r} failed: {st.get('message') or 'see its conditions'}; "
            "fix it and re-run it (or point model at another job or uri)",
        )
    if phase != TrainingPhase.SUCCEEDED or not (st.get("model") or {}).get("uri"):
        return None, Blocked(
            Reason.TRAINING_JOB_NOT_SUCCEEDED,
            f"LLMTrainingJob {name!r} has not succeeded yet (phase {phase or 'Pending'})",
        )
    if need_eval and (st.get("evaluation") or {}).get("passed") is not True:
        return None, Blocked(
            Reason.EVALUATION_NOT_PASSED,
            f"the policy requires evaluation to pass and LLMTrainingJob {name!r} has no passed evaluation",
        )
    return tj, None


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
    lineage: Obj = {}
    for adapter in spec.adapters:
        if adapter.training_job_ref is not None:
            tj, blocked = _training_model(ctx, ns, adapter.training_job_ref.name, need_eval)
            if blocked:
                return None, lineage, Blocked(blocked.reason, f"adapter {adapter.name}: {blocked.message}")
            assert tj is not None
            adapters[adapter.name] = tj["status"]["model"]["uri"]
            ranks[adapter.name] = lora_rank(tj)
        elif adapter.uri:
            adapters[adapter.name] = adapter.uri
    if spec.model.training_job_ref is not None:
        tj_name = spec.model.training_job_ref.name
        tj, blocked = _training_model(ctx, ns, tj_name, need_eval)
        if blocked:
            return None, lineage, blocked
        assert tj is not None
        st = tj["status"]
        model = st["model"]
        tlin = st.get("lineage") or {}
        lineage = {
            "trainingJob": tj_name,
            "datasetVersion": tlin.get("datasetVersion"),
            "baseModel": tlin.get("baseModel") or (tj.get("spec") or {}).get("baseModel", {}).get("uri"),
        }
        if model.get("format") == "adapter":
            base = (tj.get("spec") or {}).get("baseModel") or {}
            adapters[served] = model["uri"]
            ranks[served] = lora_rank(tj)
            return (
                serving.ResolvedModel(
                    uri=base.get("uri", ""),
                    served_name=f"{served}-base",
                    digest=model.get("digest"),
                    adapters=adapters,
                    revision=base.get("revision"),
                    adapter_ranks=ranks,
                ),
                lineage,
                None,
            )
        return (
            serving.ResolvedModel(
                uri=model["uri"],
                served_name=served,
                digest=model.get("digest"),
                adapters=adapters,
                adapter_ranks=ranks,
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


async def reconcile(ctx: Context, obj: Obj) -> Result:
    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    status: Obj = obj.get("status") or {}
    try:
        spec = parse_spec(obj)
    except InvalidObject as exc:
        await commit(
            ctx,
            obj,
            {"phase": DeploymentPhase.FAILED},
            standard(False, Reason.INVALID_SPEC, f"spec is invalid: {exc}", progressing=False, degraded=True),
        )
        return Result(phase=DeploymentPhase.FAILED)

    policies, missing_ref = admission.governing_policies(ctx.store, obj)
    violations = admission.check(obj, policies, ctx.store)
    policy = policies[0] if policies else None
    blocked: Blocked | None = None
    if missing_ref:
        blocked = Blocked(
            Reason.POLICY_NOT_FOUND, f"policyRef names LLMPolicy {missing_ref!r}, which does not exist"
        )
        admitted = cond(ConditionType.POLICY_ADMITTED, False, Reason.POLICY_NOT_FOUND, blocked.message)
    elif len(policies) > 1:
        # One guard enforces one policy: picking one silently (by name) would hide the others' rules.
        names = ", ".join(repr(p["metadata"]["name"]) for p in policies)
        blocked = Blocked(
            Reason.CONFLICTING_POLICIES,
            f"LLMPolicies {names} all select this deployment and one guard enforces one policy; "
            "set spec.policyRef to the one to enforce, or narrow the policies' selectors",
        )
        admitted = cond(ConditionType.POLICY_ADMITTED, False, Reason.CONFLICTING_POLICIES, blocked.message)
    elif violations:
        msg = "; ".join(map(str, violations))
        blocked = Blocked(Reason.POLICY_DENIED, msg)
        admitted = cond(ConditionType.POLICY_ADMITTED, False, Reason.POLICY_DENIED, msg)
    else:
        admitted = cond(
            ConditionType.POLICY_ADMITTED,
            True,
            Reason.SUCCEEDED,
            f"admitted by LLMPolicy {policy['metadata']['name']}"
            if policy
            else "no LLMPolicy governs this deployment",
        )

    model, lineage, dep_blocked = resolve_model(ctx, obj, spec, admission.requires_evaluation(policies))
    if dep_blocked is None and model is not None:
        dep_blocked = await _check_claims(ctx, ns, model)
    deps = cond(
        ConditionType.DEPENDENCIES_READY,
        dep_blocked is None,
        dep_blocked.reason if dep_blocked else Reason.SUCCEEDED,
        dep_blocked.message if dep_blocked else "the model is available",
    )
    blocked = blocked or dep_blocked

    policy_spec: LLMPolicySpec | None = None
    if policy is not None:
        try:
            policy_spec = LLMPolicySpec.model_validate(policy.get("spec") or {})
        except ValueError:
            policy_spec = None
    config_applied = False  # the guard ConfigMap rendered from the current policy is on the API server
    deployment: Obj | None
    if blocked is None and model is not None:
        doc = guard_config.render(
            policy["metadata"]["name"] if policy_spec and policy else None,
            policy_spec,
            spec.model.served_model_name or name,
        )
        secret = (
            policy_spec.request.auth.api_keys_secret_ref.name
            if (policy_spec and policy_spec.request.auth and policy_spec.request.auth.api_keys_secret_ref)
            else None
        )
        children = [
            serving.build_config_map(obj, doc),
            serving.build_deployment(obj, spec, model, ctx.settings, api_keys_secret=secret),
            serving.build_service(obj),
            serving.build_network_policy(obj, spec),
        ]
        optional = {
            ("policy/v1", "PodDisruptionBudget"): serving.build_pdb(obj) if serving.wants_pdb(spec) else None,
            ("autoscaling/v2", "HorizontalPodAutoscaler"): None,
            ("keda.sh/v1alpha1", "ScaledObject"): None,
            ("monitoring.coreos.com/v1", "ServiceMonitor"): serving.build_service_monitor(
                obj, spec, ctx.caps
            ),
            ("v1", "Service#metrics"): serving.build_metrics_service(obj)
            if serving.build_service_monitor(obj, spec, ctx.caps)
            else None,
        }
        scaler = serving.build_autoscaler(obj, spec, ctx.caps)
        if scaler is not None:
            optional[(scaler["apiVersion"], scaler["kind"])] = scaler
        fingerprint = digest([children, sorted((f"{k[0]}/{k[1]}", v) for k, v in optional.items())])
        applied: list[Obj] | None = None
        if ctx.applied.get(meta["uid"]) != fingerprint:
            try:
                applied = await apply_all(ctx, *children, *(m for m in optional.values() if m is not None))
            except ApplyRejected as exc:
                # Not remembered as applied: the next reconcile (a spec edit, the resync) tries again.
                blocked = Blocked(Reason.APPLY_FAILED, str(exc))
        if blocked is not None:
            deployment = await ctx.child("apps/v1", "Deployment", serving.deployment_name(obj), ns)
        elif applied is not None:
            # Only a spec change (generation > 1) can leave an optional child behind that is no longer wanted.
            stale = (
                [(k, m) for k, m in optional.items() if m is None] if meta.get("generation", 1) > 1 else []
            )
            for (api_version, kind), manifest in stale:
                if (
                    manifest is None
                    and (kind != "ScaledObject" or ctx.caps.keda)
                    and (kind != "ServiceMonitor" or ctx.caps.service_monitor)
                ):
                    child = (
                        serving.metrics_service_name(obj)
                        if kind == "Service#metrics"
                        else serving.deployment_name(obj)
                    )
                    await ctx.kube.delete(api_version, kind.split("#")[0], child, ns)
            ctx.applied[meta["uid"]] = fingerprint
            deployment = applied[1]
        else:
            deployment = await ctx.child("apps/v1", "Deployment", serving.deployment_name(obj), ns)
        config_applied = blocked is None
    else:
        deployment = await ctx.child("apps/v1", "Deployment", serving.deployment_name(obj), ns)

    pods: list[Obj] = []
    rollout = deployments.view(deployment)
    if rollout is not None and not rollout.complete and rollout.desired > 0 and rollout.observed:
        # Only pods say why a rollout is stuck (crash loop, image pull); not worth a list before the
        # Deployment controller has even looked at the new template.
        pods = await ctx.kube.list("v1", "Pod", ns, labels=serving.selector(obj))
        rollout = deployments.view(deployment, pods)

    fields: Obj = {
        "selector": serving.selector_string(obj),
        "endpoint": serving.endpoint(obj) if deployment is not None else None,
        "replicas": rollout.replicas if rollout else 0,
        "readyReplicas": rollout.ready if rollout else 0,
        "model": status.get("model"),
        "lineage": status.get("lineage"),
        "policy": status.get("policy"),
    }
    if model is not None and blocked is None:
        fields["model"] = {
            k: v
            for k, v in {
                "uri": model.uri,
                "digest": model.digest,
                "servedName": spec.model.served_model_name or name,
            }.items()
            if v
        }
        fields["lineage"] = {k: v for k, v in lineage.items() if v} or None
    # The policy reaches running guards through the ConfigMap volume (kubelet sync + the guard's
    # reload poll), not through a rollout: once the ConfigMap is applied and the pods are up, it is the
    # policy in force (within that propagation delay, documented on status.policy).
    if rollout is not None and rollout.complete and config_applied:
        fields["policy"] = (
            {"name": policy["metadata"]["name"], "digest": guard_config.policy_digest(policy_spec)}
            if (policy is not None and policy_spec is not None)
            else None
        )

    conds, phase, requeue = _conditions(rollout, blocked, deployment is None, ctx.poll_seconds)
    fields["phase"] = phase
    await commit(ctx, obj, fields, [*conds, deps, admitted])
    if blocked is not None and blocked.poll:
        requeue = ctx.poll_seconds
    return Result(requeue_after=requeue, phase=phase)


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
