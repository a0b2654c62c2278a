"""Restart safety: SIGKILL the operator at random moments while 50 objects reconcile, restart it;
the end state equals a run without kills, and no child is duplicated."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import threading
import time
from typing import Any

import pytest
from opkit import (
    ON_SIMULATED_NODE,
    Kubectl,
    Operator,
    apply,
    dataset_summary,
    example,
    items,
    operator_env,
    quickstart_inputs,
    training_summary,
    wait_for,
)

pytestmark = pytest.mark.cluster

DATASETS, TRAININGS, DEPLOYMENTS = 5, 5, 39  # + 1 policy = 50 objects
#: "revision 3 (...) serves all traffic": the number depends on observation order (see snapshot)
REVISION = re.compile(r"revision \d+")
CHILD_KINDS = (
    "jobs",
    "deployments",
    "replicasets",
    "services",
    "configmaps",
    "networkpolicies",
    "persistentvolumeclaims",
)


def manifests() -> list[dict[str, Any]]:
    policy = {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMPolicy",
        "metadata": {"name": "default"},
        "spec": {
            "admission": {"allowedModelSources": ["pvc://quickstart-inputs/", "hf://acme/"]},
            "request": {"blockedTerms": ["secret-project"]},
        },
    }
    out: list[dict[str, Any]] = [policy]
    for i in range(DATASETS):
        ds = copy.deepcopy(example("dataset.yaml"))
        ds["metadata"]["name"] = f"data-{i}"
        out.append(ds)
    for i in range(TRAININGS):
        tj = copy.deepcopy(example("training.yaml"))
        tj["metadata"]["name"] = f"tune-{i}"
        tj["spec"]["datasetRef"]["name"] = f"data-{i}"
        out.append(tj)
    for i in range(DEPLOYMENTS):
        dep = copy.deepcopy(example("deployment.yaml"))
        dep["metadata"]["name"] = f"serve-{i}"
        dep["spec"].pop("policyRef")
        dep["spec"]["resources"] = {"gpus": 0, "cpu": "100m", "memory": "256Mi"}
        dep["spec"]["replicas"] = 1 + i % 2
        if i < TRAININGS:
            dep["spec"]["model"] = {"trainingJobRef": {"name": f"tune-{i}"}}
        else:
            dep["spec"]["model"] = {"uri": f"hf://acme/model-{i}"}
        out.append(dep)
    return out


class Kubelet(threading.Thread):
    """Plays kubelet for the (unscheduled) worker pods: each ends with its worker's summary."""

    def __init__(self, kubectl: Kubectl, ns: str) -> None:
        super().__init__(daemon=True)
        self.kubectl, self.ns = kubectl, ns
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # keep playing; the assertion at the end says what went wrong
                self.errors.append(repr(exc))
            self.stop.wait(0.3)

    def tick(self) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        workers = "app.kubernetes.io/component in (dataset-validation,training)"
        for pod in items(self.kubectl, "pods", self.ns, workers):
            if pod["status"].get("phase") in ("Succeeded", "Failed"):
                continue
            labels = pod["metadata"]["labels"]
            owner = labels["llmops.dev/owner-name"]
            if labels["app.kubernetes.io/component"] == "dataset-validation":
                container = "validate"
                digest = hashlib.sha256(owner.encode()).hexdigest()
                message = dataset_summary(f"{owner}-data", digest=digest)
            else:
                container = "trainer"
                message = training_summary(digest=hashlib.sha256(owner.encode()).hexdigest())
            status = {
                "phase": "Succeeded",
                "startTime": now,
                "containerStatuses": [
                    {
                        "name": container,
                        "image": pod["spec"]["containers"][0]["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": 0,
                                "reason": "Completed",
                                "message": message,
                                "startedAt": now,
                                "finishedAt": now,
                            }
                        },
                    }
                ],
            }
            self.kubectl(
                "patch",
                "pod",
                pod["metadata"]["name"],
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": status}),
                namespace=self.ns,
                check=False,
            )


class NotYet(str):
    """A falsy answer that still says what is missing (shown when the wait times out)."""

    def __bool__(self) -> bool:
        return False


def converged(kubectl: Kubectl, ns: str) -> bool | NotYet:
    objs = items(kubectl, "llmdatasets,llmtrainingjobs,llmdeployments,llmpolicies", ns)
    if len(objs) != 1 + DATASETS + TRAININGS + DEPLOYMENTS:
        return NotYet(f"{len(objs)} objects")
    pending = []
    for o in objs:
        st = o.get("status") or {}
        want = {
            "LLMDataset": "Ready",
            "LLMTrainingJob": "Succeeded",
            "LLMDeployment": "Ready",
            "LLMPolicy": "Ready",
        }[o["kind"]]
        ok = st.get("phase") == want and st.get("observedGeneration") == o["metadata"]["generation"]
        if o["kind"] == "LLMDeployment":
            ok = ok and st.get("readyReplicas") == o["spec"]["replicas"] and bool(st.get("policy"))
        if o["kind"] == "LLMPolicy":
            ok = ok and st.get("enforcedCount") == DATASETS + TRAININGS + DEPLOYMENTS
        if not ok:
            pending.append(f"{o['kind']}/{o['metadata']['name']}: {st.get('phase')} {st.get('message')}")
    return NotYet("; ".join(pending[:8])) if pending else True


def snapshot(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    """Everything the end state is judged on, with the namespace and generated suffixes normalised."""

    def norm(value: Any) -> Any:
        return json.loads(json.dumps(value).replace(ns, "<ns>"))

    objs: dict[str, Any] = {}
    for o in items(kubectl, "llmdatasets,llmtrainingjobs,llmdeployments,llmpolicies", ns):
        st = dict(o.get("status") or {})
        for volatile in ("startTime", "completionTime"):
            st.pop(volatile, None)
        # status.history records what was served in the order it was observed: a deployment reconciled
        # before its policy reached the operator's store has one more (Configured) revision than one
        # reconciled after, and every record carries a timestamp. The end state is the revision that
        # serves now — its content, not its number, reason or time.
        if st.get("history"):
            last = dict(st["history"][-1])
            for volatile in ("revision", "reason", "message", "since"):
                last.pop(volatile, None)
            st["history"] = [last]
        st["conditions"] = sorted(
            (c["type"], c["status"], c["reason"], REVISION.sub("revision <n>", c.get("message", "")))
            for c in st.get("conditions") or []
        )
        objs[f"{o['kind']}/{o['metadata']['name']}"] = norm(st)
    children: dict[str, list[str]] = {}
    for kind in CHILD_KINDS:
        for c in items(kubectl, kind, ns):
            refs = c["metadata"].get("ownerReferences") or [{"kind": "-", "name": "-"}]
            name = c["metadata"]["name"]
            if kind == "replicasets":
                name = name.rsplit("-", 1)[0] + "-<hash>"
            children.setdefault(f"{refs[0]['kind']}/{refs[0]['name']}", []).append(f"{kind}/{name}")
    return {"objects": objs, "children": {k: sorted(v) for k, v in children.items()}}


def run_scenario(kubectl: Kubectl, op: Operator, ns: str, kills: int, rng: random.Random) -> dict[str, Any]:
    kubelet = Kubelet(kubectl, ns)
    kubelet.start()
    try:
        # The policy first: objects created before their policy is known roll out again once it is
        # (correctly), which would make the two runs differ for a reason that is not a restart.
        policy, *rest = manifests()
        quickstart_inputs(kubectl, ns)
        apply(kubectl, ns, policy)
        wait_for(
            lambda: (items(kubectl, "llmpolicies", ns)[0].get("status") or {}).get("phase") == "Ready",
            what="policy Ready",
        )
        apply(kubectl, ns, *rest)
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 2.5))
            op.kill()
            op.start()
        wait_for(lambda: converged(kubectl, ns), timeout=240, interval=1.0, what=f"convergence in {ns}")
        time.sleep(2)  # a late duplicate would show up now
        assert converged(kubectl, ns)
    finally:
        kubelet.stop.set()
        kubelet.join(10)
    return snapshot(kubectl, ns)


def test_random_kills_reach_the_same_end_state(
    cluster: Any, crds: None, kubectl: Kubectl, namespace: str, tmp_path: Any
) -> None:
    seed = int(os.environ.get("MAESTRO_TEST_SEED") or time.time())
    rng = random.Random(seed)
    print(f"restart-safety seed: {seed} (MAESTRO_TEST_SEED reproduces the kill schedule)")
    env, ports = operator_env(cluster, **ON_SIMULATED_NODE, MAESTRO_WORKERS="16")
    op = Operator(env=env, log_path=tmp_path / "operator.log", ports=ports)
    op.start()
    calm = f"{namespace}-calm"
    kubectl("create", "namespace", calm)
    try:
        killed = run_scenario(kubectl, op, namespace, kills=4, rng=rng)
        assert op.starts == 5
        # Free the simulated CPU node's pod slots (110) before the second run.
        kubectl("delete", "namespace", namespace, "--timeout=90s", check=False, timeout=120)
        baseline = run_scenario(kubectl, op, calm, kills=0, rng=rng)
    except AssertionError:
        print(op.log_tail(200))
        raise
    finally:
        op.stop()
        kubectl("delete", "namespace", calm, "--wait=false", check=False)

    # No duplicated child: exactly one of each per owner (one ReplicaSet = the template never flapped).
    for owner, kids in killed["children"].items():
        assert len(kids) == len(set(kids)), f"{owner} has duplicated children: {kids}"
        if owner.startswith("Deployment/"):
            assert len(kids) == 1, f"{owner} rolled out more than once: {kids}"
    assert killed == baseline
