"""The dev cluster's real node behaves like a kind node: pods are containers (containerd + runc) with
their security context and cgroup limits enforced, volumes are real (the default StorageClass
provisions on the node), Services route through kube-proxy, names resolve through CoreDNS, and
`kubectl logs/exec/port-forward` reach the kubelet. Restarting the kubelet and containerd keeps the
pods. Every test here would fail on a simulated node.

The images are the node's own static ones (busybox for the shell), so these tests need no build.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from waiting import wait_for

pytestmark = pytest.mark.cluster

BUSYBOX = "localhost/maestro/busybox:static"
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def apply(kubectl: Any, namespace: str, *objs: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs), namespace=namespace)


def pod(name: str, script: str, **extra: Any) -> dict[str, Any]:
    """A restricted busybox pod on the real node running `script` with sh."""
    container: dict[str, Any] = {
        "name": "main",
        "image": BUSYBOX,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "securityContext": RESTRICTED_CONTAINER,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        **extra.pop("container", {}),
    }
    spec: dict[str, Any] = {
        "securityContext": RESTRICTED_POD,
        "containers": [container],
        "terminationGracePeriodSeconds": 1,
        **extra,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }


def get_pod(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl("get", "pod", name, "-o", "json", namespace=namespace).stdout)
    return out


def wait_ready(kubectl: Any, namespace: str, name: str, timeout: int = 90) -> dict[str, Any]:
    kubectl(
        "wait",
        "--for=condition=Ready",
        f"pod/{name}",
        f"--timeout={timeout}s",
        namespace=namespace,
        timeout=timeout + 10,
    )
    return get_pod(kubectl, namespace, name)


def terminated(kubectl: Any, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        for cs in get_pod(kubectl, namespace, name)["status"].get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if term:
                return dict(term)
        return None

    result: dict[str, Any] = wait_for(done, timeout, f"pod {name} to terminate")
    return result


@pytest.fixture
def restricted(kubectl: Any, namespace: str) -> str:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    return namespace


def test_restricted_pod_runs_non_root_on_a_read_only_root_with_real_volumes(
    kubectl: Any, restricted: str
) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    script = (
        "id -u > /data/uid;"
        " if (echo x > /rootfs-write) 2>/data/rootfs-error; then echo WROTE > /data/rootfs-error; fi;"
        " echo scratch > /scratch/f && cat /scratch/f > /data/scratch; sleep 3600"
    )
    p = pod(
        "writer",
        script,
        container={
            "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "scratch", "mountPath": "/scratch"},
            ]
        },
        volumes=[
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    apply(kubectl, restricted, claim, p)
    running = wait_ready(kubectl, restricted, "writer")
    assert running["spec"]["nodeName"] == "maestro-node"

    def read(path: str) -> str:
        return str(kubectl("exec", "writer", "--", "cat", path, namespace=restricted).stdout.strip())

    wait_for(lambda: read("/data/scratch") == "scratch", 30, "the pod's writes to its volumes")
    assert read("/data/uid") == "65532"
    assert "Read-only file system" in read("/data/rootfs-error")
    pvc = json.loads(kubectl("get", "pvc", "data", "-o", "json", namespace=restricted).stdout)
    assert pvc["status"]["phase"] == "Bound"
    pv = json.loads(kubectl("get", "pv", pvc["spec"]["volumeName"], "-o", "json").stdout)
    assert pv["spec"]["storageClassName"] == "standard" and "hostPath" in pv["spec"]


def test_memory_limit_is_enforced_by_the_kernel(kubectl: Any, namespace: str) -> None:
    # the shell doubles a string until the cgroup's 32 MiB limit stops it
    p = pod(
        "hog",
        'a=x; while true; do a="$a$a"; done',
        restartPolicy="Never",
        container={"resources": {"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}}},
    )
    apply(kubectl, namespace, p)
    term = terminated(kubectl, namespace, "hog")
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137, term


def test_termination_message_reaches_the_pod_status(kubectl: Any, namespace: str) -> None:
    summary = {"reason": "bad input", "records": 3}
    p = pod(
        "worker",
        f"echo '{json.dumps(summary)}' > /dev/termination-log; exit 3",
        restartPolicy="Never",
    )
    apply(kubectl, namespace, p)
    term = terminated(kubectl, namespace, "worker")
    assert term["exitCode"] == 3 and json.loads(term["message"]) == summary


def test_updated_configmap_reaches_a_running_pod(
    kubectl: Any, namespace: str, record_property: Callable[[str, object], None]
) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf"}, "data": {"value": "one"}}
    p = pod(
        "reader",
        "sleep 3600",
        container={"volumeMounts": [{"name": "conf", "mountPath": "/etc/conf"}]},
        volumes=[{"name": "conf", "configMap": {"name": "conf"}}],
    )
    apply(kubectl, namespace, cm, p)
    wait_ready(kubectl, namespace, "reader")

    def value() -> str:
        return str(kubectl("exec", "reader", "--", "cat", "/etc/conf/value", namespace=namespace).stdout)

    assert value() == "one"
    t0 = time.monotonic()
    kubectl(
        "patch", "configmap", "conf", "--type=merge", "-p", '{"data": {"value": "two"}}', namespace=namespace
    )
    wait_for(lambda: value() == "two", 120, "the kubelet to project the new ConfigMap data")
    record_property("configmap_propagation_seconds", round(time.monotonic() - t0, 1))
    assert get_pod(kubectl, namespace, "reader")["status"]["containerStatuses"][0]["restartCount"] == 0


def _web(name: str) -> list[dict[str, Any]]:
    page = f"mkdir -p /tmp/www && echo hello-from-{name} > /tmp/www/index.html"
    server = pod(
        name,
        f"{page} && exec httpd -f -p 8080 -h /tmp/www",
        container={
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        },
        volumes=[{"name": "tmp", "emptyDir": {}}],
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    return [server, service]


def test_service_name_resolves_and_routes_to_the_pod(kubectl: Any, namespace: str) -> None:
    apply(kubectl, namespace, *_web("web"))
    apply(kubectl, namespace, pod("client", "sleep 3600"))
    wait_ready(kubectl, namespace, "web")
    wait_ready(kubectl, namespace, "client")
    svc = json.loads(kubectl("get", "svc", "web", "-o", "json", namespace=namespace).stdout)
    fqdn = f"web.{namespace}.svc.cluster.local"

    def fetch() -> str:
        proc = kubectl(
            "exec",
            "client",
            "--",
            "wget",
            "-qO-",
            f"http://{fqdn}/",
            namespace=namespace,
            check=False,
        )
        return str(proc.stdout.strip())

    wait_for(lambda: fetch() == "hello-from-web", 60, "the Service to route")
    # CoreDNS answers with the ClusterIP that kube-proxy routes
    wait_for(
        lambda: (
            svc["spec"]["clusterIP"]
            in kubectl("exec", "client", "--", "nslookup", fqdn, namespace=namespace).stdout
        ),
        30,
        "CoreDNS to answer with the Service's ClusterIP",
    )


def test_logs_exec_and_port_forward_reach_the_kubelet(kubectl: Any, cluster: Any, namespace: str) -> None:
    apply(kubectl, namespace, *_web("pf"))
    apply(kubectl, namespace, pod("talker", "echo line-one; echo line-two; sleep 3600"))
    wait_ready(kubectl, namespace, "pf")
    wait_ready(kubectl, namespace, "talker")
    assert wait_for(
        lambda: "line-two" in kubectl("logs", "talker", namespace=namespace).stdout, 30, "the container log"
    )
    assert kubectl("exec", "talker", "--", "id", "-u", namespace=namespace).stdout.strip() == "65532"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    forward = subprocess.Popen(
        [
            "kubectl",
            f"--kubeconfig={cluster.kubeconfig}",
            "-n",
            namespace,
            "port-forward",
            "svc/pf",
            f"{port}:80",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def body() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    return str(r.read().decode().strip())
            except OSError:
                return ""

        assert wait_for(body, 30, "the port-forward") == "hello-from-pf"
    finally:
        forward.terminate()
        forward.wait(10)


def test_restarting_kubelet_and_containerd_keeps_running_pods(
    kubectl: Any, cluster: Any, namespace: str
) -> None:
    apply(kubectl, namespace, *_web("survivor"))
    apply(kubectl, namespace, pod("client", "sleep 3600"))
    before = wait_ready(kubectl, namespace, "survivor")["status"]["containerStatuses"][0]
    wait_ready(kubectl, namespace, "client")
    fqdn = f"survivor.{namespace}.svc.cluster.local"
    for component in ("containerd", "kubelet"):
        cluster.restart(component)

    def same_container_ready() -> bool:
        cs = get_pod(kubectl, namespace, "survivor")["status"]["containerStatuses"][0]
        return bool(cs["ready"] and cs["containerID"] == before["containerID"] and cs["restartCount"] == 0)

    wait_for(same_container_ready, 90, "the pod to be Ready again with the same container")

    def through_service() -> str:
        proc = kubectl(
            "exec", "client", "--", "wget", "-qO-", f"http://{fqdn}/", namespace=namespace, check=False
        )
        return str(proc.stdout.strip())

    # the restarted kubelet answers exec once it has re-synced its pods
    wait_for(lambda: through_service() == "hello-from-survivor", 60, "the Service after the restarts")
    # and the node still starts new pods
    apply(kubectl, namespace, pod("after", "sleep 3600"))
    wait_ready(kubectl, namespace, "after")
