"""The whole chain against the real control plane: dataset -> training job (waits, then runs) ->
deployment Ready, with worker results reported as kubelet termination messages; lineage on the
LLMDeployment; Events, printer columns and metrics along the way."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opkit import (
    Kubectl,
    Operator,
    apply,
    condition,
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
DEP_PODS = "llmops.dev/llmdeployment=support-bot"


def test_dataset_to_training_to_ready_deployment(operator: Operator, kubectl: Kubectl, ns: str) -> None:
    secret, policy = example("policy.yaml", "Secret"), example("policy.yaml", "LLMPolicy")
    apply(kubectl, ns, secret, policy)
    # Training and deployment first: both must wait for what they depend on.
    apply(kubectl, ns, example("training.yaml"), example("deployment.yaml"))
    tj = wait_condition(kubectl, "llmtj", "support-lora", ns, "DatasetReady", "False", "DatasetNotFound")
    assert tj["status"]["phase"] == "Waiting"
    assert condition(tj, "Ready")["reason"] == "DatasetNotFound"
    dep = wait_condition(
        kubectl, "llmdep", "support-bot", ns, "DependenciesReady", "False", "TrainingJobNotSucceeded"
    )
    assert dep["status"]["phase"] == "Waiting"
    assert items(kubectl, "deployments", ns) == []

    apply(kubectl, ns, example("dataset.yaml"))
    wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "False", "ValidationPending")
    wait_condition(kubectl, "llmtj", "support-lora", ns, "DatasetReady", "False", "DatasetNotReady")
    assert items(kubectl, "jobs", ns, "app.kubernetes.io/component=training") == []

    # The validation Job's pod reports the data worker's summary as its termination message.
    claim = "support-chats-data"
    wait_for(lambda: get(kubectl, "pvc", claim, ns), what="dataset claim")
    terminate_pods(kubectl, ns, DS_PODS, "validate", exit_code=0, message=dataset_summary(claim))
    ds = wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "True", "Succeeded")
    st = ds["status"]
    version = "sha256:" + "ab" * 32
    assert st["phase"] == "Ready" and st["version"] == version
    assert st["records"]["kept"] == 100 and st["records"]["duplicates"] == 20
    assert [g["name"] for g in st["gates"]] == ["minRecords", "maxDuplicateRatio"]
    assert st["artifact"]["uri"] == f"pvc://{claim}/sha256-{'ab' * 32}"
    assert st["observedGeneration"] == ds["metadata"]["generation"]
    assert condition(ds, "GatesPassed")["status"] == "True"

    # The training Job starts by itself, with the dataset version mounted read-only.
    (job,) = wait_for(
        lambda: items(kubectl, "jobs", ns, "app.kubernetes.io/component=training"), what="training Job"
    )
    pod_spec = job["spec"]["template"]["spec"]
    mount = next(m for m in pod_spec["containers"][0]["volumeMounts"] if m["name"] == "dataset")
    assert mount["readOnly"] and mount["subPath"] == f"sha256-{'ab' * 32}"
    terminate_pods(kubectl, ns, TJ_PODS, "trainer", exit_code=0, message=training_summary())
    tj = wait_condition(kubectl, "llmtj", "support-lora", ns, "Ready", "True", "Succeeded")
    tst = tj["status"]
    assert tst["phase"] == "Succeeded"
    assert tst["model"] == {
        "uri": "pvc://support-lora-model/model",
        "digest": "sha256:" + "cd" * 32,
        "format": "adapter",
    }
    assert tst["lineage"]["datasetVersion"] == version
    assert tst["evaluation"]["passed"] is True and tst["progress"]["percent"] == 100

    # The deployment rolls out once the job succeeded; play kubelet for its pod.
    wait_for(lambda: items(kubectl, "deployments", ns), what="serving Deployment")
    run_pods(kubectl, ns, DEP_PODS)
    dep = wait_condition(kubectl, "llmdep", "support-bot", ns, "Ready", "True", "Available")
    dst = dep["status"]
    assert dst["phase"] == "Ready" and dst["readyReplicas"] == 1 and dst["replicas"] == 1
    assert dst["lineage"] == {
        "trainingJob": "support-lora",
        "datasetVersion": version,
        "baseModel": "file:///var/tmp/maestro-quickstart/tiny-llama",
    }
    assert dst["model"]["digest"] == "sha256:" + "cd" * 32
    assert dst["endpoint"] == f"http://support-bot.{ns}.svc:8080/v1"
    assert dst["policy"]["name"] == "quickstart" and dst["policy"]["digest"].startswith("sha256:")
    assert dst["selector"] == "llmops.dev/llmdeployment=support-bot"
    for kind, name in (
        ("service", "support-bot"),
        ("configmap", "support-bot-guard"),
        ("networkpolicy", "support-bot"),
    ):
        child = get(kubectl, kind, name, ns)
        assert child is not None, f"{kind}/{name} missing"
        assert child["metadata"]["ownerReferences"][0]["name"] == "support-bot"
    guard_cfg = json.loads(get(kubectl, "configmap", "support-bot-guard", ns)["data"]["policy.json"])  # type: ignore[index]
    assert guard_cfg["name"] == "quickstart" and guard_cfg["servedModelName"] == "support-bot"

    pol = wait_for(
        lambda: (lambda p: p if (p["status"].get("enforcedCount") or 0) >= 3 else None)(
            get(kubectl, "llmpol", "quickstart", ns)
        ),
        what="policy enforcedOn",
    )
    assert {"kind": "LLMDeployment", "name": "support-bot"} in pol["status"]["enforcedOn"]

    # What users see: printer columns, Events on transitions, and the operator's metrics.
    table = kubectl("get", "llmdep", "support-bot", namespace=ns).stdout
    assert "Ready" in table and "support-bot" in table
    events = items(kubectl, "events", ns, None)
    reasons = {(e["involvedObject"]["kind"], e["reason"]) for e in events}
    assert ("LLMDeployment", "Available") in reasons and ("LLMDataset", "Succeeded") in reasons
    text = operator.metrics()
    assert 'maestro_reconcile_total{kind="LLMDeployment",result="ok"}' in text
    assert (
        f'maestro_dataset_gate_passed{{gate="minRecords",name="support-chats",namespace="{ns}"}} 1.0' in text
    )
    assert 'maestro_objects{kind="LLMDeployment",phase="Ready"}' in text

    # A policy change rewrites the guard's ConfigMap and leaves the pod template alone (the running
    # guard reloads the file: tests/e2e/test_quickstart.py proves that on a real pod).
    old_dep = get(kubectl, "deployment", "support-bot", ns)
    assert old_dep is not None
    policy["spec"]["request"]["blockedTerms"] = ["internal-only", "project-x"]
    apply(kubectl, ns, policy)

    def rewritten() -> dict[str, Any] | None:
        cm = get(kubectl, "configmap", "support-bot-guard", ns) or {}
        doc = json.loads(cm.get("data", {}).get("policy.json", "{}"))
        return cm if doc.get("request", {}).get("blockedTerms") == ["internal-only", "project-x"] else None

    wait_for(rewritten, what="the guard ConfigMap rewritten")
    dep_now = get(kubectl, "deployment", "support-bot", ns)
    assert dep_now is not None
    assert dep_now["spec"]["template"] == old_dep["spec"]["template"]
    assert dep_now["metadata"]["generation"] == old_dep["metadata"]["generation"]

    # Deletion: owner references let the garbage collector remove children; no finalizer can wedge
    # (deleting a dependency first never blocks anything).
    kubectl("delete", "llmds", "support-chats", "--timeout=30s", namespace=ns)
    kubectl("delete", "llmdep", "support-bot", "--timeout=30s", namespace=ns)
    for kind, name in (
        ("deployment", "support-bot"),
        ("service", "support-bot"),
        ("configmap", "support-bot-guard"),
    ):
        wait_for(
            lambda k=kind, n=name: get(kubectl, k, n, ns) is None, what=f"{kind}/{name} garbage-collected"
        )
    wait_for(
        lambda: not items(kubectl, "jobs", ns, "app.kubernetes.io/component=dataset-validation"),
        what="validation Jobs garbage-collected",
    )
    tj = get(kubectl, "llmtj", "support-lora", ns)
    assert tj is not None and tj["status"]["phase"] == "Succeeded"  # a finished run keeps its results
    assert not tj["metadata"].get("finalizers")
