"""Helpers for the operator's cluster tests: an operator process, readers, and kubelet play-acting.

A module with a unique name (not `conftest`), so test modules import it safely in any pytest session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ports import free_port
from procs import kill_group, stop_group

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "quickstart"
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def wait_for(
    pred: Callable[[], Any], timeout: float = 30, what: str = "condition", interval: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except AssertionError as exc:  # kubectl hiccup: retry
            last = exc
        if last and not isinstance(last, AssertionError):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Operator:
    """A `maestro run` subprocess; `restart()` kills it hard (SIGKILL) and starts it again."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    starts: int = 0

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "maestro", "run", "--verbose"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        try:
            wait_for(self.ready, timeout=60, what="operator /readyz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{self.log_tail()}") from None

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(
                f"operator exited ({self.proc and self.proc.returncode}):\n{self.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        kill_group(self.proc)

    def stop(self) -> None:
        stop_group(self.proc, 20)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/metrics", timeout=5) as r:
            return r.read().decode()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


#: A node selector no node matches (operator env value).
PLAYED_BY_TEST = json.dumps({"maestro.llmops.dev/test": "kubelet-played"})
#: Serving pods on kwok's simulated CPU node (running, never really started).
ON_SIMULATED_NODE = {
    "MAESTRO_SERVING_NODE_SELECTOR": json.dumps({"type": "kwok"}),
    "MAESTRO_SERVING_TOLERATIONS": json.dumps(
        [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
    ),
}


def operator_env(cluster: Any, **extra: str) -> tuple[dict[str, str], dict[str, int]]:
    ports = {"metrics": free_port(), "progress": free_port(), "webhook": free_port()}
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        # no node matches: the pods stay unscheduled and the tests play kubelet for them
        "MAESTRO_JOB_NODE_SELECTOR": PLAYED_BY_TEST,
        "MAESTRO_SERVING_NODE_SELECTOR": PLAYED_BY_TEST,
        # claims bound at once by kwok (the real provisioner waits for a pod to be scheduled)
        "MAESTRO_STORAGE_CLASS": "kwok-simulated",
        "MAESTRO_METRICS_PORT": str(ports["metrics"]),
        "MAESTRO_PROGRESS_PORT": str(ports["progress"]),
        "MAESTRO_PROGRESS_URL": f"http://127.0.0.1:{ports['progress']}",
        "MAESTRO_WEBHOOK_PORT": str(ports["webhook"]),
        "MAESTRO_WEBHOOK_ADDR": "127.0.0.1",
        "MAESTRO_WEBHOOK_HOST": "127.0.0.1",
        "MAESTRO_WORKERS": "8",
        "MAESTRO_POLL_SECONDS": "2",
        **extra,
    }
    return env, ports


# --- reading objects ---------------------------------------------------------------------------------


def get(kubectl: Kubectl, kind: str, name: str, ns: str) -> dict[str, Any] | None:
    proc = kubectl("get", kind, name, "-o", "json", namespace=ns, check=False)
    if proc.returncode != 0:
        return None
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def items(kubectl: Kubectl, kind: str, ns: str, selector: str | None = None) -> list[dict[str, Any]]:
    args = ["get", kind, "-o", "json"] + (["-l", selector] if selector else [])
    data: dict[str, Any] = json.loads(kubectl(*args, namespace=ns).stdout)
    return list(data.get("items") or [])


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def wait_condition(
    kubectl: Kubectl,
    kind: str,
    name: str,
    ns: str,
    type_: str,
    status: str,
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(kubectl, kind, name, ns)
        c = condition(obj, type_)
        if c.get("status") == status and (reason is None or c.get("reason") == reason):
            return obj
        return None

    try:
        return wait_for(check, timeout=timeout, what=f"{kind}/{name} {type_}={status} reason={reason}")  # type: ignore[no-any-return]
    except AssertionError as exc:
        obj = get(kubectl, kind, name, ns)
        raise AssertionError(
            f"{exc}\nstatus now: {json.dumps((obj or {}).get('status'), indent=1)}"
        ) from None


def apply(kubectl: Kubectl, ns: str, *docs: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), namespace=ns)


def quickstart_inputs(kubectl: Kubectl, ns: str) -> None:
    """The claim the quickstart reads its data and base model from (examples/quickstart/inputs.yaml
    binds it to a hostPath volume on a real node). Here only its existence matters: the pods that would
    mount it are played by the tests on kwok nodes."""
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "quickstart-inputs"},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "kwok-simulated",
            "resources": {"requests": {"storage": "2Gi"}},
        },
    }
    kubectl("apply", "-f", "-", namespace=ns, input=json.dumps(claim))


def example(name: str, kind: str | None = None) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    return next(d for d in docs if kind is None or d["kind"] == kind)


# --- playing kubelet ---------------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def terminate_pods(
    kubectl: Kubectl,
    ns: str,
    selector: str,
    container: str,
    *,
    exit_code: int,
    message: str,
    timeout: float = 60,
) -> list[str]:
    """Report every pod matching `selector` as terminated with `message` (the termination log)."""
    pods = wait_for(
        lambda: [
            p
            for p in items(kubectl, "pods", ns, selector)
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ],
        timeout=timeout,
        what=f"pods {selector}",
    )
    now = _now()
    for pod in pods:
        containers = [c["name"] for c in pod["spec"]["containers"]]
        statuses = [
            {
                "name": c,
                "image": next(x["image"] for x in pod["spec"]["containers"] if x["name"] == c),
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {
                    "terminated": {
                        "exitCode": exit_code if c == container else 0,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "message": message if c == container else "",
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
            for c in containers
        ]
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": statuses,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "lastTransitionTime": now,
                    "reason": "PodCompleted" if exit_code == 0 else "PodFailed",
                }
            ],
            "startTime": now,
        }
        kubectl(
            "patch",
            "pod",
            pod["metadata"]["name"],
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
            namespace=ns,
        )
    return [p["metadata"]["name"] for p in pods]


def run_pods(kubectl: Kubectl, ns: str, selector: str, *, count: int = 1, timeout: float = 60) -> list[str]:
    """Report `count` pods matching `selector` as Running and Ready (all containers started)."""
    pods = wait_for(
        lambda: (lambda ps: ps if len(ps) >= count else None)(
            [p for p in items(kubectl, "pods", ns, selector) if not (p["metadata"].get("deletionTimestamp"))]
        ),
        timeout=timeout,
        what=f"{count} pods {selector}",
    )
    now = _now()
    for pod in pods:
        statuses = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": True,
                "restartCount": 0,
                "started": True,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod["spec"]["containers"]
        ]
        status = {
            "phase": "Running",
            "containerStatuses": statuses,
            "startTime": now,
            "podIP": "10.244.0.10",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
        }
        kubectl(
            "patch",
            "pod",
            pod["metadata"]["name"],
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
            namespace=ns,
        )
    return [p["metadata"]["name"] for p in pods]


def crash_pods(kubectl: Kubectl, ns: str, selector: str, container: str, message: str) -> None:
    """Report the serving pods' `container` as crash-looping with its last termination message."""
    pods = wait_for(lambda: items(kubectl, "pods", ns, selector), what=f"pods {selector}")
    now = _now()
    for pod in pods:
        statuses = []
        for c in pod["spec"]["containers"]:
            if c["name"] == container:
                statuses.append(
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 3,
                        "started": False,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                        "lastState": {
                            "terminated": {
                                "exitCode": 1,
                                "reason": "Error",
                                "message": message,
                                "startedAt": now,
                                "finishedAt": now,
                            }
                        },
                    }
                )
            else:
                statuses.append(
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "state": {"running": {"startedAt": now}},
                    }
                )
        status = {
            "phase": "Running",
            "containerStatuses": statuses,
            "startTime": now,
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        }
        kubectl(
            "patch",
            "pod",
            pod["metadata"]["name"],
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
            namespace=ns,
        )


def dataset_summary(claim: str, *, passed: bool = True, digest: str = "ab" * 32) -> str:
    version = f"sha256-{digest}"
    return json.dumps(
        {
            "version": version,
            "passed": passed,
            "exitCode": 0 if passed else 3,
            "records": {
                "total": 120,
                "kept": 100,
                "duplicates": 15,
                "nearDuplicates": 5,
                "piiRedacted": 7,
                "piiByType": {"EMAIL": 5, "PHONE": 2},
                "filtered": 0,
                "invalid": 0,
                "train": 90,
                "validation": 10,
            },
            "stats": {"languages": {"en": 1.0}, "lengthChars": {"p50": 120, "p95": 300, "max": 512}},
            "gates": [
                {"name": "minRecords", "passed": passed, "value": 100, "threshold": 100 if passed else 1000},
                {"name": "maxDuplicateRatio", "passed": True, "value": 0.17, "threshold": 0.4},
            ],
            "artifact": {
                "uri": f"pvc://{claim}/{version}",
                "reportUri": f"pvc://{claim}/{version}/report.json",
            },
            **({} if passed else {"reason": "quality gate minRecords failed: 100 < 1000"}),
        },
        separators=(",", ":"),
    )


def training_summary(*, passed: bool = True, eval_passed: bool = True, digest: str = "cd" * 32) -> str:
    return json.dumps(
        {
            "passed": passed,
            "model": {
                "uri": "/mnt/maestro/output/model",
                "digest": f"sha256:{digest}",
                "format": "peft-lora",
            },
            "metrics": {
                "trainLoss": 1.25,
                "lossCurve": [[1, 3.0], [20, 1.25]],
                "tokensPerSecond": 850.0,
                "steps": 20,
                "epochs": 1.0,
            },
            "evaluation": {"evalLoss": 1.4, "perplexity": 4.05, "passed": eval_passed},
            "lineage": {
                "datasetVersion": None,
                "baseModel": "file:///var/tmp/maestro-quickstart/tiny-llama",
                "image": "ghcr.io/maestro-llmops/maestro-worker:0.1.0",
            },
            **(
                {}
                if passed
                else {"reason": "evaluation gates failed", "message": "evalLoss 9.1 > maxEvalLoss 2"}
            ),
        },
        separators=(",", ":"),
    )


def job_selector(owner: str) -> str:
    return f"llmops.dev/owner-name={owner},app.kubernetes.io/managed-by=maestro"
