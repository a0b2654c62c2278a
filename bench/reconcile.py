"""Operator throughput and latency: N LLMDeployments -> all their children, against a baseline that
creates the same children directly with the API client, in the same run on the same control plane.

    python bench/reconcile.py --objects 1000 --json

Prints {"objects", "seconds_to_all_children", "p50_ms", "p99_ms", "rss_mb", "baseline_seconds", ...}:
- seconds_to_all_children: from the first LLMDeployment create to the last of its children existing
  (every child `serving.build_children` wants for the manifest below: `children_per_object` of
  them), for a burst of N objects;
- p50_ms / p99_ms: create -> all children, per object, at steady state (objects created one at a
  time at a fixed rate after the burst has settled); burst_p50_ms/burst_p99_ms are the burst's own;
- rss_mb: the operator's peak resident memory with all N (+ steady) objects;
- baseline_seconds: the bench itself server-side-applies the same child manifests (same builders,
  same concurrency) into a second namespace: the API server's own cost for that work;
  operator_over_baseline is seconds_to_all_children / baseline_seconds, the number to compare across
  versions whose child sets differ.
LLMDeployments use replicas 0 so the numbers measure the operator, not pod scheduling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from maestro.api import LLMDeploymentSpec
from maestro.builders import guard_config, serving
from maestro.builders.settings import Settings
from maestro.k8s import Kube
from maestro.k8s.client import load_config

REPO = Path(__file__).resolve().parents[1]

#: Collection paths of the kinds an LLMDeployment's children can have.
KIND_PATHS = {
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "Service": "/api/v1/namespaces/{ns}/services",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: `--no-feedback`: deployments without the feedback claim (`spec.monitoring.feedback: false`), the
#: child set of versions before it existed; a bound claim also costs the API server binding work.
FEEDBACK = True


def manifest(name: str) -> dict[str, Any]:
    m: dict[str, Any] = {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"hf://acme/model-{name}"},
            "replicas": 0,
            "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"},
        },
    }
    if not FEEDBACK:
        m["spec"]["monitoring"] = {"feedback": False}
    return m


def children(name: str, ns: str, uid: str) -> list[dict[str, Any]]:
    """The children the operator applies for `manifest(name)` (same builders, same settings)."""
    m = manifest(name)
    owner = {**m, "metadata": {"name": name, "namespace": ns, "uid": uid}}
    spec = LLMDeploymentSpec.model_validate(m["spec"])
    model = serving.ResolvedModel(uri=m["spec"]["model"]["uri"], served_name=name)
    doc = guard_config.render(None, None, model.served_name)
    built = serving.build_children(owner, spec, model, Settings(), serving.Capabilities(), doc)
    return [c for c in built.values() if c is not None]


class ChildWatch:
    """Records when each owner's children first exist (watch ADDED events, monotonic clock)."""

    def __init__(self, kube: Kube, ns: str) -> None:
        self.kube, self.ns = kube, ns
        sample = children("x", ns, "uid")
        #: children each owner must have, and the kinds to watch for them
        self.per_owner = len(sample)
        self.kinds = sorted({c["kind"] for c in sample})
        self.seen: dict[str, dict[tuple[str, str], float]] = {}
        self.complete: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for kind in self.kinds:
            self._tasks.append(asyncio.create_task(self._watch(kind, KIND_PATHS[kind].format(ns=self.ns))))
        await asyncio.sleep(0.5)

    async def _watch(self, kind: str, path: str) -> None:
        params = {
            "watch": "true",
            "labelSelector": "app.kubernetes.io/managed-by=maestro",
            "timeoutSeconds": "3600",
            "allowWatchBookmarks": "false",
        }
        http = self.kube._http  # the same authenticated connection pool
        while True:
            async with http.stream("GET", path, params=params, timeout=None) as resp:
                async for line in resp.aiter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if event.get("type") != "ADDED":
                        continue
                    now = time.monotonic()
                    meta = event["object"]["metadata"]
                    owner = meta.get("labels", {}).get("llmops.dev/owner-name")
                    if not owner:
                        continue
                    seen = self.seen.setdefault(owner, {})
                    seen.setdefault((kind, meta["name"]), now)
                    if len(seen) == self.per_owner and owner not in self.complete:
                        self.complete[owner] = max(seen.values())
                        self.changed.set()

    async def wait(self, owners: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not owners <= set(self.complete):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(owners - set(self.complete))
                raise TimeoutError(
                    f"{len(missing)} objects lack children after {timeout}s, e.g. {missing[:5]}"
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(left, 5))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def rss_mb(pid: int) -> float:
    """Resident memory of the operator process tree's main process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def bounded(coros: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def run(c: Any) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(run(c) for c in coros)))


async def ensure_namespace(kube: Kube, ns: str) -> None:
    await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})


async def baseline(kube: Kube, n: int, ns: str, concurrency: int) -> float:
    """Apply the operator's own child manifests for n objects directly (what the API server costs)."""
    await ensure_namespace(kube, ns)
    manifests: list[list[dict[str, Any]]] = []
    for i in range(n):
        wanted = children(f"base-{i}", ns, f"uid-{i}")
        for c in wanted:
            c["metadata"].pop("ownerReferences", None)  # no owner object exists in the baseline
        manifests.append(wanted)
    t0 = time.monotonic()

    async def apply_all(children: list[dict[str, Any]]) -> None:
        await kube.gather(*children)

    await bounded([apply_all(c) for c in manifests], concurrency)
    return time.monotonic() - t0


async def run(args: argparse.Namespace, kubeconfig: str, op_pid: int, metrics_port: int) -> dict[str, Any]:
    kube = Kube(load_config(kubeconfig), max_connections=args.concurrency + 8)
    ns, ns_base = f"bench-{int(time.time())}", f"bench-base-{int(time.time())}"
    await ensure_namespace(kube, ns)
    watch = ChildWatch(kube, ns)
    await watch.start()
    peak = rss_mb(op_pid)

    async def sample_rss() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mb(op_pid))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample_rss())
    created: dict[str, float] = {}

    async def create(name: str) -> None:
        m = manifest(name)
        m["metadata"]["namespace"] = ns
        t = time.monotonic()
        await kube.create(m)
        created[name] = t

    names = [f"d-{i}" for i in range(args.objects)]
    t0 = time.monotonic()
    await bounded([create(n) for n in names], args.concurrency)
    create_seconds = time.monotonic() - t0
    await watch.wait(set(names), timeout=args.timeout)
    seconds_to_all = max(watch.complete[n] for n in names) - t0
    burst = sorted((watch.complete[n] - created[n]) * 1000 for n in names)

    await asyncio.sleep(args.settle)
    steady_names = [f"s-{i}" for i in range(args.steady)]
    for n in steady_names:
        await create(n)
        await asyncio.sleep(1 / args.steady_rate)
    await watch.wait(set(steady_names), timeout=60)
    steady = sorted((watch.complete[n] - created[n]) * 1000 for n in steady_names)
    await asyncio.sleep(2)
    sampler.cancel()
    rss = max(peak, rss_mb(op_pid))

    base = await baseline(kube, args.objects, ns_base, args.concurrency)
    await watch.stop()
    for namespace in (ns, ns_base):
        await kube.delete("v1", "Namespace", namespace)
    await kube.close()

    def pct(values: list[float], q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {
        "objects": args.objects,
        "seconds_to_all_children": round(seconds_to_all, 2),
        "p50_ms": round(statistics.median(steady), 1),
        "p99_ms": pct(steady, 0.99),
        "rss_mb": round(rss, 1),
        "baseline_seconds": round(base, 2),
        "operator_over_baseline": round(seconds_to_all / base, 3) if base else None,
        "children_per_object": watch.per_owner,
        "burst_create_seconds": round(create_seconds, 2),
        "burst_p50_ms": round(statistics.median(burst), 1),
        "burst_p99_ms": pct(burst, 0.99),
        "steady_objects": args.steady,
        "steady_rate_per_s": args.steady_rate,
    }


def start_operator(kubeconfig: str, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "MAESTRO_METRICS_PORT": str(port),
        "MAESTRO_PROGRESS_PORT": "0",
        "MAESTRO_WEBHOOK": "off",
        "MAESTRO_WORKERS": str(workers),
        "PYTHONPATH": str(REPO / "operator"),
    }
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "maestro", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(f"operator exited early; see {log}")
    raise SystemExit(f"operator not ready in 60s; see {log}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting a local control plane")
    parser.add_argument("--workers", type=int, default=16, help="operator reconcile workers")
    parser.add_argument("--concurrency", type=int, default=32, help="client requests in flight")
    parser.add_argument("--steady", type=int, default=50, help="objects created one by one after the burst")
    parser.add_argument("--steady-rate", type=float, default=5.0, help="steady-state creates per second")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between burst and steady phase")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--no-feedback", action="store_true", help="deployments without the feedback claim (5 children)"
    )
    args = parser.parse_args()
    global FEEDBACK
    FEEDBACK = not args.no_feedback

    workdir = Path(tempfile.mkdtemp(prefix="maestro-bench-"))
    cluster = None
    if args.kubeconfig:
        kubeconfig = args.kubeconfig
    else:
        from maestro.devcluster import DevCluster

        cluster = DevCluster(workdir / "cluster")
        cluster.up(timeout=180)
        kubeconfig = str(cluster.kubeconfig)
    op = None
    try:
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig}",
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                str(REPO / "crds"),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={kubeconfig}",
                "wait",
                "--for=condition=Established",
                "crd/llmdeployments.llmops.dev",
                "--timeout=60s",
            ],
            check=True,
            capture_output=True,
        )
        op, metrics_port = start_operator(kubeconfig, args.workers, workdir / "operator.log")
        result = asyncio.run(run(args, kubeconfig, op.pid, metrics_port))
    finally:
        if op is not None and op.poll() is None:
            os.killpg(op.pid, signal.SIGTERM)
            try:
                op.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(op.pid, signal.SIGKILL)
        if cluster is not None:
            cluster.down(quiet=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
        print(f"operator log: {workdir / 'operator.log'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
