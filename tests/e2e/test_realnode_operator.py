"""What the real node tells the operator, read back from the objects a user watches: a container over
its memory limit is OOMKilled and the LLMDeployment says so; an image the node does not have is named
in the condition; a worker's one-line reason (its termination message) reaches the LLMDataset.

The operator is the chart's, in-cluster (the `maestro` fixture); pods run on the real node.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def ns(maestro: Any) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    maestro.kubectl("create", "namespace", name)
    maestro.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    maestro.kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply(maestro: Any, ns: str, obj: dict[str, Any]) -> None:
    maestro.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(obj))


def ready_condition(maestro: Any, kind: str, name: str, ns: str) -> dict[str, Any]:
    obj = maestro.get(kind, name, ns)
    for c in obj.get("status", {}).get("conditions") or []:
        if c["type"] == "Ready":
            return dict(c)
    return {}


def deployment(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedModelName": name},
            "runtime": {"dtype": "float32", "enforceEager": True, "maxModelLen": 256},
            "replicas": 1,
            "monitoring": {"enabled": False},
            **spec,
        },
    }


def test_a_container_over_its_memory_limit_is_reported_oomkilled(maestro: Any, ns: str) -> None:
    # vLLM cannot even import torch in 128 MiB: the kernel kills it, the kubelet restarts it
    apply(maestro, ns, deployment("tight", resources={"gpus": 0, "cpu": "100m", "memory": "128Mi"}))

    def oom() -> dict[str, Any] | None:
        c = ready_condition(maestro, "llmdep", "tight", ns)
        return c if c.get("reason") == "OOMKilled" else None

    cond = wait_for(oom, 240, "Ready=False reason=OOMKilled on the LLMDeployment")
    assert cond["status"] == "False"
    assert "container vllm" in cond["message"] and "128Mi" in cond["message"], cond["message"]
    pods = json.loads(maestro.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    last = next(cs for cs in pods[0]["status"]["containerStatuses"] if cs["name"] == "vllm")["lastState"]
    assert last["terminated"]["reason"] == "OOMKilled"


def test_an_image_the_node_lacks_is_named_in_the_condition(maestro: Any, ns: str) -> None:
    image = "localhost/maestro/vllm-does-not-exist:0.0.1"
    apply(
        maestro,
        ns,
        deployment(
            "ghost", runtime={"image": image}, resources={"gpus": 0, "cpu": "100m", "memory": "256Mi"}
        ),
    )

    def pull_failed() -> dict[str, Any] | None:
        c = ready_condition(maestro, "llmdep", "ghost", ns)
        return c if c.get("reason") == "ImagePullFailed" else None

    cond = wait_for(pull_failed, 180, "Ready=False reason=ImagePullFailed on the LLMDeployment")
    assert image in cond["message"] and "container vllm" in cond["message"], cond["message"]
    assert maestro.get("llmdep", "ghost", ns)["status"]["phase"] != "Ready"


def test_a_workers_termination_message_reaches_the_dataset(maestro: Any) -> None:
    """A checksum that does not match the source: the data worker exits with a one-line reason in its
    termination message, the kubelet reports it, and the operator puts it in the condition."""
    wrong = "0" * 64
    ds = yaml.safe_load((maestro_quickstart() / "dataset.yaml").read_text())
    ds["metadata"]["name"] = "checksum-mismatch"
    ds["spec"]["source"]["sha256"] = wrong
    ns = "maestro-quickstart"  # the quickstart-inputs claim lives there
    maestro.kubectl("create", "namespace", ns, check=False)
    maestro.kubectl("apply", "-n", ns, "-f", str(maestro_quickstart() / "inputs.yaml"))
    apply(maestro, ns, ds)
    try:

        def failed() -> dict[str, Any] | None:
            c = ready_condition(maestro, "llmds", "checksum-mismatch", ns)
            return c if c.get("status") == "False" and wrong in c.get("message", "") else None

        cond = wait_for(failed, 240, "the worker's reason in the LLMDataset's Ready condition")
        assert maestro.get("llmds", "checksum-mismatch", ns)["status"]["phase"] == "Failed", cond
        selector = "llmops.dev/owner-name=checksum-mismatch,app.kubernetes.io/component=dataset-validation"
        pods = json.loads(maestro.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout)
        term = pods["items"][0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert term["exitCode"] != 0 and wrong in term["message"]
    finally:
        maestro.kubectl("delete", "llmds", "checksum-mismatch", "-n", ns, "--wait=false", check=False)


def maestro_quickstart() -> Any:
    from maestro.devcluster.lifecycle import QUICKSTART

    return QUICKSTART
