"""Training Job shapes on the real API server: multi-node (Indexed Job + headless Service, torchrun
rendezvous env) and Kueue admission (suspended until a queue admits it)."""

from __future__ import annotations

import copy

import pytest
from opkit import (
    Kubectl,
    Operator,
    apply,
    dataset_summary,
    example,
    get,
    items,
    terminate_pods,
    training_summary,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.cluster

DS_PODS = "llmops.dev/owner-name=support-chats,app.kubernetes.io/component=dataset-validation"


def ready_dataset(kubectl: Kubectl, ns: str) -> None:
    apply(kubectl, ns, example("dataset.yaml"))
    terminate_pods(
        kubectl, ns, DS_PODS, "validate", exit_code=0, message=dataset_summary("support-chats-data")
    )
    wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "True")


def test_multi_node_training_is_an_indexed_job_with_rendezvous(
    operator: Operator, kubectl: Kubectl, ns: str
) -> None:
    ready_dataset(kubectl, ns)
    tj = copy.deepcopy(example("training.yaml"))
    tj["metadata"]["name"] = "big"
    tj["spec"]["method"] = "full"
    tj["spec"]["resources"] = {"gpus": 8, "nodes": 2, "sharedMemory": "32Gi"}
    apply(kubectl, ns, tj)
    (job,) = wait_for(lambda: items(kubectl, "jobs", ns, "llmops.dev/owner-name=big"), what="training Job")
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    svc = get(kubectl, "service", "big-train", ns)
    assert svc is not None and svc["spec"]["clusterIP"] == "None"
    pods = wait_for(
        lambda: (lambda ps: ps if len(ps) == 2 else None)(
            items(kubectl, "pods", ns, "llmops.dev/owner-name=big")
        ),
        what="2 training pods",
    )
    for pod in pods:
        spec = pod["spec"]
        assert spec["subdomain"] == "big-train"
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert (
            env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.big-train.{ns}.svc" and env["NNODES"] == "2"
        )
    terminate_pods(
        kubectl, ns, "llmops.dev/owner-name=big", "trainer", exit_code=0, message=training_summary()
    )
    done = wait_condition(kubectl, "llmtj", "big", ns, "Ready", "True", "Succeeded")
    assert done["status"]["model"]["uri"] == "pvc://big-model/model"


def test_queued_job_waits_for_kueue(operator: Operator, kubectl: Kubectl, ns: str) -> None:
    ready_dataset(kubectl, ns)
    tj = copy.deepcopy(example("training.yaml"))
    tj["spec"]["queueName"] = "team-a"
    apply(kubectl, ns, tj)
    t = wait_condition(kubectl, "llmtj", "support-lora", ns, "Trained", "False", "Queued")
    assert t["status"]["phase"] == "Queued"
    (job,) = items(kubectl, "jobs", ns, "app.kubernetes.io/component=training")
    assert (
        job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    )
    # What Kueue does on admission: unsuspend. The operator must not suspend it again.
    kubectl(
        "patch",
        "job",
        job["metadata"]["name"],
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false}}',
        namespace=ns,
    )
    wait_for(lambda: items(kubectl, "pods", ns, "app.kubernetes.io/component=training"), what="admitted pod")
    assert get(kubectl, "job", job["metadata"]["name"], ns)["spec"]["suspend"] is False  # type: ignore[index]
