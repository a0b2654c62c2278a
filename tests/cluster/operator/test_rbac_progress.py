"""The operator runs with exactly the ClusterRole it ships (maestro.k8s.rbac), and training progress
reaches status through the audience-bound token endpoint, never with API credentials in the pod."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from opkit import (
    Kubectl,
    Operator,
    apply,
    condition,
    dataset_summary,
    example,
    get,
    items,
    operator_env,
    run_pods,
    terminate_pods,
    training_summary,
    wait_condition,
    wait_for,
)

from maestro.k8s import rbac

pytestmark = pytest.mark.cluster

OPERATOR_NS = "maestro-rbac-test"
SA = "maestro-operator"
TJ_PODS = "llmops.dev/owner-name=support-lora,app.kubernetes.io/component=training"


def sa_kubeconfig(cluster: Any, kubectl: Kubectl, path: Path) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount (bound to the shipped role only)."""
    kubectl("create", "namespace", OPERATOR_NS, check=False)
    kubectl("create", "serviceaccount", SA, namespace=OPERATOR_NS, check=False)
    docs = [rbac.cluster_role(f"{SA}-test"), rbac.cluster_role_binding(SA, OPERATOR_NS, f"{SA}-test")]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    token = kubectl("create", "token", SA, "--duration=2h", namespace=OPERATOR_NS).stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": SA, "context": {"cluster": admin["clusters"][0]["name"], "user": SA}}],
        "current-context": SA,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def rbac_operator(
    cluster: Any, crds: None, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    tmp = tmp_path_factory.mktemp("rbac")
    env, ports = operator_env(cluster, KUBECONFIG=str(sa_kubeconfig(cluster, kubectl, tmp / "kubeconfig")))
    op = Operator(env=env, log_path=tmp / "operator.log", ports=ports)
    op.start()
    yield op
    op.stop()
    kubectl("delete", "clusterrolebinding,clusterrole", f"{SA}-test", check=False)


def post(url: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_chain_and_progress_with_the_shipped_cluster_role(
    rbac_operator: Operator, kubectl: Kubectl, ns: str
) -> None:
    op = rbac_operator
    dep = example("deployment.yaml")
    dep["spec"].pop("policyRef")
    apply(kubectl, ns, example("dataset.yaml"), example("training.yaml"), dep)
    terminate_pods(
        kubectl,
        ns,
        "llmops.dev/owner-name=support-chats",
        "validate",
        exit_code=0,
        message=dataset_summary("support-chats-data"),
    )
    wait_condition(kubectl, "llmds", "support-chats", ns, "Ready", "True")
    (pod,) = wait_for(lambda: items(kubectl, "pods", ns, TJ_PODS), what="training pod")
    pod_name = pod["metadata"]["name"]
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    token_vol = next(v for v in spec["volumes"] if v["name"] == "progress-token")
    audience = token_vol["projected"]["sources"][0]["serviceAccountToken"]["audience"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    url = env["MAESTRO_PROGRESS_URL"]
    assert url == f"http://127.0.0.1:{op.ports['progress']}/v1/progress/{ns}/support-lora"

    # What the kubelet would mount: a token for this pod, with the progress audience only.
    token = kubectl(
        "create",
        "token",
        "default",
        f"--audience={audience}",
        "--bound-object-kind=Pod",
        f"--bound-object-name={pod_name}",
        namespace=ns,
    ).stdout.strip()
    report = {
        "step": 30,
        "totalSteps": 120,
        "loss": 1.73,
        "tokensPerSecond": 912.5,
        "etaSeconds": 95,
        "epoch": 0.25,
    }
    code, body = post(url, report, token)
    assert code == 200, body
    tj = wait_for(
        lambda: (
            lambda o: o if ((o or {}).get("status") or {}).get("progress", {}).get("step") == 30 else None
        )(get(kubectl, "llmtj", "support-lora", ns)),
        what="progress in status",
    )
    assert tj["status"]["progress"] == {
        "step": 30,
        "totalSteps": 120,
        "percent": 25,
        "etaSeconds": 95,
        "epoch": 0.25,
        "loss": 1.73,
        "tokensPerSecond": 912.5,
    }
    text = op.metrics()
    assert f'maestro_training_progress_ratio{{name="support-lora",namespace="{ns}"}} 0.25' in text
    assert f'maestro_training_loss{{name="support-lora",namespace="{ns}"}} 1.73' in text

    # A token for the API server (wrong audience), or one bound to another job's pod, is refused.
    api_token = kubectl("create", "token", "default", namespace=ns).stdout.strip()
    assert post(url, report, api_token)[0] == 401
    other = url.replace("/support-lora", "/someone-else")
    code, body = post(other, report, token)
    assert code == 403 and "is not a pod of LLMTrainingJob someone-else" in body["error"]
    assert post(url, report, "garbage")[0] == 401

    terminate_pods(kubectl, ns, TJ_PODS, "trainer", exit_code=0, message=training_summary())
    wait_condition(kubectl, "llmtj", "support-lora", ns, "Ready", "True", "Succeeded")
    wait_for(lambda: items(kubectl, "deployments", ns), what="serving Deployment")
    run_pods(kubectl, ns, "llmops.dev/llmdeployment=support-bot")
    d = wait_condition(kubectl, "llmdep", "support-bot", ns, "Ready", "True", "Available")
    assert condition(d, "PolicyAdmitted")["status"] == "True"
    log = op.log_path.read_text()
    # a 403 status, not the milliseconds of a timestamp ("10:38:54,403")
    assert not re.search(r"(?<![,\d])403(?!\d)", log) and "Forbidden" not in log, op.log_tail(80)
    # Event posting (Kopf's and ours) works under the role too.
    assert any(e["reason"] == "Available" for e in items(kubectl, "events", ns))
