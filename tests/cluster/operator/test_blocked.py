"""Blocked paths: each ends in a condition with a reason a user can act on, and recovers by itself
once the cause is fixed (no operator restart, no manual kick)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from opkit import (
    Kubectl,
    Operator,
    apply,
    condition,
    crash_pods,
    dataset_summary,
    example,
    get,
    items,
    run_pods,
    terminate_pods,
    training_summary,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.cluster

DS_PODS = "llmops.dev/owner-name=support-chats,app.kubernetes.io/component=dataset-validation"
TJ_PODS = "llmops.dev/owner-name=support-lora,app.kubernetes.io/component=training"


def ready_dataset(kubectl: Kubectl, ns: str) -> None:
    apply(kubectl, ns, example("dataset.yaml"))
    terminate_pods(
        kubectl, ns, DS_PODS, "validate", exit_code=0, message=dataset_summary("support-chats-data")
    )
    wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "True")


def uri_deployment(name: str, uri: str) -> dict[str, Any]:
    dep = copy.deepcopy(example("deployment.yaml"))
    dep["metadata"]["name"] = name
    dep["spec"]["model"] = {"uri": uri}
    dep["spec"].pop("policyRef", None)
    return dep


def test_failed_dataset_blocks_training_until_the_data_is_fixed(
    operator: Operator, kubectl: Kubectl, ns: str
) -> None:
    apply(kubectl, ns, example("dataset.yaml"), example("training.yaml"))
    terminate_pods(
        kubectl,
        ns,
        DS_PODS,
        "validate",
        exit_code=3,
        message=dataset_summary("support-chats-data", passed=False),
    )
    ds = wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "False", "GateFailed")
    assert ds["status"]["phase"] == "Failed"
    assert "minRecords" in condition(ds, "Ready")["message"]
    assert condition(ds, "GatesPassed")["status"] == "False"
    assert condition(ds, "Degraded")["status"] == "True"
    # a gate failure is permanent for this generation of the dataset: the job says so (Degraded,
    # so Argo CD shows it) instead of waiting as if the data were still being validated
    tj = wait_condition(kubectl, "llmtj", "support-lora", ns, "DatasetReady", "False", "DatasetFailed")
    assert "minRecords" in condition(tj, "DatasetReady")["message"]
    assert condition(tj, "Degraded")["status"] == "True"
    assert items(kubectl, "jobs", ns, "app.kubernetes.io/component=training") == []

    # The fix: relax the gate (a new generation runs a new validation; the failed Job is replaced).
    old_jobs = {
        j["metadata"]["name"]
        for j in items(kubectl, "jobs", ns, "app.kubernetes.io/component=dataset-validation")
    }
    kubectl(
        "patch",
        "llmds",
        "support-chats",
        "--type=merge",
        "-p",
        '{"spec":{"qualityGates":{"minRecords":50}}}',
        namespace=ns,
    )
    new_job = wait_for(
        lambda: [
            j
            for j in items(kubectl, "jobs", ns, "app.kubernetes.io/component=dataset-validation")
            if j["metadata"]["name"] not in old_jobs
        ],
        what="new validation Job",
    )
    assert new_job
    terminate_pods(
        kubectl, ns, DS_PODS, "validate", exit_code=0, message=dataset_summary("support-chats-data")
    )
    wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "True", "Succeeded")
    wait_condition(kubectl, "llmtj", "support-lora", ns, "DatasetReady", "True")
    wait_for(lambda: items(kubectl, "jobs", ns, "app.kubernetes.io/component=training"), what="training Job")


def test_failed_training_blocks_deployment_until_rerun(operator: Operator, kubectl: Kubectl, ns: str) -> None:
    dep = example("deployment.yaml")
    dep["spec"].pop("policyRef")
    ready_dataset(kubectl, ns)
    apply(kubectl, ns, example("training.yaml"), dep)
    terminate_pods(
        kubectl,
        ns,
        TJ_PODS,
        "trainer",
        exit_code=3,
        message=training_summary(passed=False, eval_passed=False),
    )
    tj = wait_condition(kubectl, "llmtj", "support-lora", ns, "Ready", "False", "EvaluationFailed")
    assert tj["status"]["phase"] == "Failed"
    assert condition(tj, "Trained")["status"] == "True"
    assert condition(tj, "EvaluationPassed")["status"] == "False"
    d = wait_condition(
        kubectl, "llmdep", "support-bot", ns, "DependenciesReady", "False", "TrainingJobFailed"
    )
    assert d["status"]["phase"] == "Failed" and "re-run" in condition(d, "Ready")["message"]
    assert items(kubectl, "deployments", ns) == []

    # The fix: re-run the job (the retry annotation starts a new run of the same spec).
    kubectl("annotate", "llmtj", "support-lora", "llmops.dev/retry=1", namespace=ns)
    wait_for(
        lambda: [p for p in items(kubectl, "pods", ns, TJ_PODS) if p["status"].get("phase") != "Failed"],
        what="a new training pod",
    )
    terminate_pods(kubectl, ns, TJ_PODS, "trainer", exit_code=0, message=training_summary())
    wait_condition(kubectl, "llmtj", "support-lora", ns, "Ready", "True", "Succeeded")
    wait_for(lambda: items(kubectl, "deployments", ns), what="serving Deployment")
    run_pods(kubectl, ns, "llmops.dev/llmdeployment=support-bot")
    wait_condition(kubectl, "llmdep", "support-bot", ns, "Ready", "True", "Available")


def test_policy_created_later_blocks_without_tearing_down(
    operator: Operator, kubectl: Kubectl, ns: str
) -> None:
    apply(kubectl, ns, uri_deployment("chat", "hf://acme/chat-7b"))
    run_pods(kubectl, ns, "llmops.dev/llmdeployment=chat")
    wait_condition(kubectl, "llmdep", "chat", ns, "Ready", "True", "Available")

    policy = {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMPolicy",
        "metadata": {"name": "only-claims"},
        "spec": {"admission": {"allowedModelSources": ["pvc://"]}},
    }
    apply(kubectl, ns, policy)
    d = wait_condition(kubectl, "llmdep", "chat", ns, "PolicyAdmitted", "False", "PolicyDenied")
    msg = condition(d, "PolicyAdmitted")["message"]
    assert (
        'LLMPolicy "only-claims"' in msg
        and "admission.allowedModelSources" in msg
        and "hf://acme/chat-7b" in msg
    )
    assert condition(d, "Ready")["status"] == "False" and condition(d, "Degraded")["status"] == "True"
    assert get(kubectl, "deployment", "chat", ns) is not None, (
        "a policy violation must not delete the endpoint"
    )

    policy["spec"]["admission"]["allowedModelSources"] = ["pvc://", "hf://acme/"]
    apply(kubectl, ns, policy)
    # Admitted again: the guard's ConfigMap now carries this policy; the running pod is kept (the
    # guard reloads the file), so no pod goes back to Pending.
    pods_before = {p["metadata"]["uid"] for p in items(kubectl, "pods", ns, "llmops.dev/llmdeployment=chat")}

    def enforced() -> dict[str, Any] | None:
        d = get(kubectl, "llmdep", "chat", ns) or {}
        return d if (d.get("status", {}).get("policy") or {}).get("name") == "only-claims" else None

    d = wait_for(enforced, what="status.policy naming the new policy")
    assert condition(d, "Ready")["status"] == "True"
    cm = get(kubectl, "configmap", "chat-guard", ns)
    assert cm is not None and json.loads(cm["data"]["policy.json"])["name"] == "only-claims"
    assert {p["metadata"]["uid"] for p in items(kubectl, "pods", ns, "llmops.dev/llmdeployment=chat")} == (
        pods_before
    )
    assert condition(get(kubectl, "llmdep", "chat", ns), "PolicyAdmitted")["status"] == "True"


def test_webhook_rejects_violations_naming_the_rule(operator: Operator, kubectl: Kubectl, ns: str) -> None:
    policy = {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMPolicy",
        "metadata": {"name": "small-jobs"},
        "spec": {
            "admission": {
                "maxGPUsPerJob": 2,
                "allowedModelSources": ["pvc://quickstart-inputs/", "hf://acme/"],
            }
        },
    }
    apply(kubectl, ns, policy)
    wait_condition(kubectl, "llmpol", "small-jobs", ns, "Ready", "True")
    tj = example("training.yaml")
    tj["spec"]["resources"] = {"gpus": 4, "nodes": 1}

    def rejected() -> str | None:
        proc = kubectl("apply", "-f", "-", input=__import__("yaml").safe_dump(tj), namespace=ns, check=False)
        return proc.stderr if proc.returncode != 0 else None

    err = wait_for(rejected, timeout=30, what="webhook rejection")
    assert 'LLMPolicy "small-jobs" rule admission.maxGPUsPerJob' in err and "4 GPUs" in err
    dep = uri_deployment("other", "s3://bucket/model")
    proc = kubectl("apply", "-f", "-", input=__import__("yaml").safe_dump(dep), namespace=ns, check=False)
    assert proc.returncode != 0 and "admission.allowedModelSources" in proc.stderr
    tj["spec"]["resources"] = {"gpus": 2, "nodes": 1}
    kubectl("apply", "-f", "-", input=__import__("yaml").safe_dump(tj), namespace=ns)


def test_bad_model_uri_and_crash_loop_recover(operator: Operator, kubectl: Kubectl, ns: str) -> None:
    apply(kubectl, ns, uri_deployment("bot", "pvc://weights/llama"))
    d = wait_condition(kubectl, "llmdep", "bot", ns, "DependenciesReady", "False", "SourceUnavailable")
    assert "PersistentVolumeClaim 'weights' does not exist" in condition(d, "Ready")["message"]
    assert items(kubectl, "deployments", ns) == []
    kubectl(
        "apply",
        "-f",
        "-",
        namespace=ns,
        input=__import__("yaml").safe_dump(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "weights"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }
        ),
    )
    wait_for(lambda: items(kubectl, "deployments", ns), what="serving Deployment after the claim appeared")
    run_pods(kubectl, ns, "llmops.dev/llmdeployment=bot")
    wait_condition(kubectl, "llmdep", "bot", ns, "Ready", "True", "Available")

    # vLLM cannot load the weights: the crash reason reaches the LLMDeployment, then it heals.
    crash_pods(
        kubectl,
        ns,
        "llmops.dev/llmdeployment=bot",
        "vllm",
        "OSError: /mnt/maestro/models/weights/llama does not appear to have a file named config.json",
    )
    d = wait_condition(kubectl, "llmdep", "bot", ns, "Ready", "False", "CrashLoopBackOff")
    assert "config.json" in condition(d, "Ready")["message"] and condition(d, "Degraded")["status"] == "True"
    run_pods(kubectl, ns, "llmops.dev/llmdeployment=bot")
    wait_condition(kubectl, "llmdep", "bot", ns, "Ready", "True", "Available")


def test_unreadable_source_is_retried_by_itself(operator: Operator, kubectl: Kubectl, ns: str) -> None:
    apply(kubectl, ns, example("dataset.yaml"))
    io_error = json.dumps(
        {
            "version": None,
            "passed": False,
            "exitCode": 4,
            "records": {},
            "stats": {},
            "gates": [],
            "artifact": None,
            "reason": "s3://bucket/data.jsonl: connection reset by peer",
        }
    )
    # The Job retries exit 4 itself (backoffLimit 2): three failed pods, then the Job fails.
    for _ in range(3):
        terminate_pods(kubectl, ns, DS_PODS, "validate", exit_code=4, message=io_error)
    ds = wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "False", "SourceUnavailable")
    assert "connection reset" in condition(ds, "Ready")["message"]
    # The source comes back: the operator re-runs the validation by itself.
    wait_for(
        lambda: [
            p
            for p in items(kubectl, "pods", ns, DS_PODS)
            if p["status"].get("phase") not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")
        ],
        timeout=60,
        what="a retried validation pod",
    )
    terminate_pods(
        kubectl, ns, DS_PODS, "validate", exit_code=0, message=dataset_summary("support-chats-data")
    )
    wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "True", "Succeeded")
