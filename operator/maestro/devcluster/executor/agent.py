"""The executor's kubelet half: registers the local node, keeps it Ready (status + Lease), watches
the pods bound to it and runs each through a `PodRunner`; keeps ConfigMap/Secret volumes in sync;
cleans up after itself, also after a crash (state on disk, netns names carry the executor id)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import signal
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro import __version__
from maestro.devcluster.executor.api import STRATEGIC, Api, ApiError
from maestro.devcluster.executor.events import Recorder
from maestro.devcluster.executor.images import ImageTable
from maestro.devcluster.executor.logserver import LogServer, self_signed
from maestro.devcluster.executor.netns import PodNetwork, pick_subnet, pids_in, used_subnets
from maestro.devcluster.executor.pods import Context, PodRunner
from maestro.devcluster.executor.process import Process, proc_start_time
from maestro.devcluster.executor.status import rfc3339
from maestro.devcluster.executor.volumes import Volumes

log = logging.getLogger("maestro.executor")
Obj = dict[str, Any]

LOCAL_LABEL = "executor.llmops.dev/local"
TAINT = {"key": LOCAL_LABEL, "value": "true", "effect": "NoSchedule"}
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
TERMINAL = ("Succeeded", "Failed")
LOCK = Path("/run/maestro-executor/network.lock")


def machine_resources() -> dict[str, str]:
    cpus = len(os.sched_getaffinity(0))
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {"cpu": str(cpus), "memory": f"{mem_kib}Ki", "pods": "110", "ephemeral-storage": "100Gi"}


@dataclass
class Options:
    kubeconfig: Path | None
    state_dir: Path
    node: str = "maestro-local"
    pod_cidr: str | None = None
    images_file: Path | None = None
    vllm_venv: Path | None = None
    cpu: str | None = None
    memory: str | None = None
    backoff_base: float = 10.0
    shutdown_grace: float = 10.0
    host_aliases: tuple[str, ...] = ()


class Agent:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.state_dir = opts.state_dir.resolve()
        self.executor_id = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:6]
        self.runners: dict[str, PodRunner] = {}
        self.cache: dict[tuple[str, str, str], Obj] = {}
        self.resources = machine_resources() | {
            k: v for k, v in (("cpu", opts.cpu), ("memory", opts.memory)) if v
        }
        self._stop = asyncio.Event()
        self._pods_synced = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.kubelet_port = 0

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Fire and forget, keeping a reference so the task is not garbage-collected mid-flight."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- setup ---------------------------------------------------------------------------------
    def _network(self) -> PodNetwork:
        """The pod subnet: `--pod-cidr`, else the one kept from the last run (unless another
        interface took it meanwhile), else a free one. A host-wide lock keeps two executors
        starting at once from picking the same /24."""
        cfg_file = self.state_dir / "executor.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            bridge = PodNetwork(self.executor_id, ipaddress.IPv4Network("10.250.0.0/24")).bridge
            subnet = ipaddress.IPv4Network(self.opts.pod_cidr or cfg.get("podCIDR") or "0.0.0.0/32")
            if not self.opts.pod_cidr and any(subnet.overlaps(u) for u in used_subnets(exclude_dev=bridge)):
                subnet = ipaddress.IPv4Network("0.0.0.0/32")
            net = PodNetwork(self.executor_id, subnet if subnet.prefixlen < 32 else pick_subnet())
            net.ensure_bridge()
        cfg_file.write_text(
            json.dumps(
                {
                    "podCIDR": str(net.subnet),
                    "hostIP": net.gateway,
                    "node": self.opts.node,
                    "executorId": self.executor_id,
                }
            )
        )
        return net

    async def run(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        network = await asyncio.to_thread(self._network)
        if self.opts.kubeconfig is None:
            raise ValueError("a kubeconfig is needed to run pods")
        (self.state_dir / "executor.pid").write_text(str(os.getpid()))
        async with Api(self.opts.kubeconfig, self.state_dir / "client") as api:
            self.api = api
            volumes = Volumes(api, self.fetch, self.state_dir, self.resources)
            self.ctx = Context(
                api,
                self.opts.node,
                network.gateway,
                network,
                ImageTable.load(self.opts.images_file, self.opts.vllm_venv),
                volumes,
                self.fetch,
                self.state_dir,
                Recorder(api, self.opts.node),
                self.opts.backoff_base,
                self.opts.host_aliases,
            )
            logs = LogServer(self.state_dir / "logs", self._container_running)
            tls = await asyncio.to_thread(self_signed, self.state_dir / "client", network.gateway)
            self.kubelet_port = await logs.start(network.gateway, 0, tls)
            await self._register_node()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            tasks = [
                asyncio.create_task(c)
                for c in (
                    self._heartbeat(),
                    self._watch_pods(),
                    self._watch_objects("configmaps", "ConfigMap"),
                    self._watch_objects("secrets", "Secret"),
                )
            ]
            log.info(
                "node %s ready: pods on %s via bridge %s (gateway %s), state %s",
                self.opts.node,
                network.subnet,
                network.bridge,
                network.gateway,
                self.state_dir,
            )
            print(
                json.dumps(
                    {"node": self.opts.node, "podCIDR": str(network.subnet), "hostIP": network.gateway}
                ),
                flush=True,
            )
            await self._stop.wait()
            log.info("stopping: terminating %d pods", len(self.runners))
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await logs.stop()
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop every pod (they are marked Failed, as a kubelet does on node shutdown) and report the
        node NotReady, so controllers replace the pods elsewhere or once the executor is back."""
        msg = "the local executor stopped"
        await asyncio.gather(
            *(
                r.terminate(min(r._grace(), self.opts.shutdown_grace), "Terminated", msg)
                for r in self.runners.values()
            ),
            return_exceptions=True,
        )
        for r in self.runners.values():
            await r.close()
        with contextlib.suppress(ApiError, OSError):
            await self._node_status(ready=False)
        if not self.ctx.network.namespaces():
            await asyncio.to_thread(self.ctx.network.remove_bridge)

    def _container_running(self, namespace: str, pod: str, container: str) -> bool:
        for r in self.runners.values():
            if r.key == f"{namespace}/{pod}":
                return any(c.name == container and c.running for c in r.ctrs)
        return False

    # -- node ----------------------------------------------------------------------------------
    def _node_manifest(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.opts.node,
                "labels": {
                    "kubernetes.io/hostname": self.opts.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    LOCAL_LABEL: "true",
                    "node.kubernetes.io/instance-type": "maestro-local",
                },
            },
            "spec": {"taints": [TAINT]},
        }

    async def _register_node(self) -> None:
        node = self._node_manifest()
        try:
            await self.api.request("POST", "/api/v1/nodes", node)
        except ApiError as e:
            if e.status != 409:
                raise
            current = await self.api.get(f"/api/v1/nodes/{self.opts.node}") or {}
            if "kwok.x-k8s.io/node" in current.get("metadata", {}).get("annotations", {}):
                raise RuntimeError(f"node {self.opts.node} is a kwok node; pick another --node name") from e
            taints = [t for t in current.get("spec", {}).get("taints", []) if t.get("key") != LOCAL_LABEL]
            await self.api.patch(
                f"/api/v1/nodes/{self.opts.node}",
                {"metadata": {"labels": node["metadata"]["labels"]}, "spec": {"taints": [*taints, TAINT]}},
            )
        await self._node_status(ready=True)

    async def _node_status(self, ready: bool) -> None:
        now = rfc3339()
        reason, msg = (
            ("KubeletReady", "maestro local executor is posting ready status")
            if ready
            else ("ExecutorStopped", "maestro local executor stopped")
        )

        def cond(type_: str, status: str, r: str, m: str) -> Obj:
            return {
                "type": type_,
                "status": status,
                "reason": r,
                "message": m,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._transitions.setdefault((type_, status), now),
            }

        self._transitions = getattr(self, "_transitions", {})
        body = {
            "status": {
                "capacity": self.resources,
                "allocatable": self.resources,
                "phase": "Running",
                # InternalIP only: the API server would try to resolve a Hostname address first
                "addresses": [{"$patch": "replace"}, {"type": "InternalIP", "address": self.ctx.host_ip}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "osImage": "maestro local executor",
                    "kernelVersion": os.uname().release,
                    "containerRuntimeVersion": f"maestro://{__version__}",
                    "kubeletVersion": f"maestro-executor-{__version__}",
                    "kubeProxyVersion": "",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
                "conditions": [
                    cond("Ready", "True" if ready else "False", reason, msg),
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                    cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                    cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                ],
            }
        }
        await self.api.patch(f"/api/v1/nodes/{self.opts.node}/status", body, STRATEGIC)

    async def _heartbeat(self) -> None:
        """Renew the Lease and post node status every 10 s; re-register a node deleted meanwhile
        (as a kubelet does), with a Lease owned by the current node object."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.opts.node}"
        while True:
            try:
                node = await self.api.get(f"/api/v1/nodes/{self.opts.node}")
                if node is None:
                    log.warning("node %s was deleted; registering it again", self.opts.node)
                    await self._register_node()
                    node = await self.api.get(f"/api/v1/nodes/{self.opts.node}") or {"metadata": {"uid": ""}}
                lease = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.opts.node,
                        "namespace": "kube-node-lease",
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": self.opts.node,
                                "uid": node["metadata"]["uid"],
                            }
                        ],
                    },
                    "spec": {
                        "holderIdentity": self.opts.node,
                        "leaseDurationSeconds": LEASE_SECONDS,
                        "renewTime": rfc3339().replace("Z", ".000000Z"),
                    },
                }
                if await self.api.get(path) is None:
                    await self.api.request(
                        "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease
                    )
                else:
                    await self.api.patch(path, {"spec": lease["spec"]})
                await self._node_status(ready=True)
            except (TimeoutError, ApiError, OSError) as e:
                log.warning("node heartbeat failed: %s", e)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # -- objects -------------------------------------------------------------------------------
    async def fetch(self, kind: str, namespace: str, name: str) -> Obj | None:
        key = (kind, namespace, name)
        if key in self.cache:
            return self.cache[key]
        plural = {
            "ConfigMap": "configmaps",
            "Secret": "secrets",
            "PersistentVolumeClaim": "persistentvolumeclaims",
        }
        obj = await self.api.get(f"/api/v1/namespaces/{namespace}/{plural[kind]}/{name}")
        if obj is not None:
            obj.setdefault("kind", kind)
        return obj

    async def _watch_objects(self, resource: str, kind: str) -> None:
        async for etype, obj in self.api.watch(f"/api/v1/{resource}"):
            if etype == "SYNC":
                fresh = {
                    (kind, o["metadata"]["namespace"], o["metadata"]["name"]): {**o, "kind": kind}
                    for o in obj.get("items", [])
                }
                touched = {
                    k
                    for k in set(self.cache) | set(fresh)
                    if k[0] == kind and self.cache.get(k) != fresh.get(k)
                }
                for k in [k for k in self.cache if k[0] == kind]:
                    del self.cache[k]
                self.cache |= fresh
            else:
                k = (kind, obj["metadata"]["namespace"], obj["metadata"]["name"])
                if etype == "DELETED":
                    self.cache.pop(k, None)
                else:
                    self.cache[k] = {**obj, "kind": kind}
                touched = {k}
            for r in list(self.runners.values()):
                ns = r.pod["metadata"]["namespace"]
                if any((kind, ns, name) in touched for kind_, name in r.references() if kind_ == kind):
                    self._spawn(self._refresh(r))

    async def _refresh(self, r: PodRunner) -> None:
        try:
            await r.refresh_volumes()
        except Exception as e:
            log.warning("%s: volume refresh failed: %s", r.key, e)

    # -- pods ----------------------------------------------------------------------------------
    async def _watch_pods(self) -> None:
        params = {"fieldSelector": f"spec.nodeName={self.opts.node}"}
        first = True
        async for etype, obj in self.api.watch("/api/v1/pods", params):
            if etype == "SYNC":
                pods = obj.get("items", [])
                if first:
                    await self._recover({p["metadata"]["uid"]: p for p in pods})
                    first = False
                live = {p["metadata"]["uid"] for p in pods}
                for uid in [u for u in self.runners if u not in live]:
                    self._spawn(self._gone(uid))
                for p in pods:
                    await self._on_pod(p)
                self._pods_synced.set()
            elif etype == "DELETED":
                if obj["metadata"]["uid"] in self.runners:
                    self._spawn(self._gone(obj["metadata"]["uid"]))
            else:
                await self._on_pod(obj)

    async def _on_pod(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        runner = self.runners.get(uid)
        if runner is not None:
            meta_before = {k: runner.pod["metadata"].get(k) for k in ("labels", "annotations")}
            runner.update(pod)
            if meta_before != {k: pod["metadata"].get(k) for k in ("labels", "annotations")}:
                self._spawn(self._refresh(runner))  # downwardAPI files show labels and annotations
            if pod["metadata"].get("deletionTimestamp") and not runner.terminating:
                runner.terminating = True  # now, not when the task runs: later events must not start another
                self._spawn(self._delete(runner))
            return
        if pod["metadata"].get("deletionTimestamp"):
            await self._delete_object(pod)
            await asyncio.to_thread(shutil.rmtree, self.ctx.pod_dir(uid), True)
            return
        if pod.get("status", {}).get("phase") in TERMINAL:
            return
        runner = PodRunner(self.ctx, pod, self._record(uid))
        self.runners[uid] = runner
        runner.start()

    def _record(self, uid: str) -> Obj | None:
        f = self.ctx.pod_dir(uid) / "pod.json"
        with contextlib.suppress(OSError, ValueError):
            rec: Obj = json.loads(f.read_text())
            return rec
        return None

    async def _delete(self, runner: PodRunner) -> None:
        """Graceful deletion: stop the containers within the grace period, then remove the object
        (grace 0), as a kubelet confirms a deletion."""
        await runner.terminate(runner._grace())
        self.runners.pop(runner.uid, None)
        await runner.close()
        await self._delete_object(runner.pod)

    async def _gone(self, uid: str) -> None:
        runner = self.runners.pop(uid, None)
        if runner is not None:
            await runner.terminate(min(runner._grace(), 2))
            await runner.close()

    async def _delete_object(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        try:
            await self.api.request(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body
            )
        except ApiError as e:
            if e.status not in (404, 409):
                log.warning("deleting pod %s/%s: %s", meta["namespace"], meta["name"], e)

    async def _recover(self, pods: dict[str, Obj]) -> None:
        """After a restart: pods on disk that the API no longer has (or that finished) are killed
        and cleaned; netns of ours that nothing on disk claims are removed."""
        pods_dir = self.state_dir / "pods"
        known: set[str] = set()
        for d in sorted(pods_dir.glob("*")) if pods_dir.is_dir() else []:
            rec = self._record(d.name) or {}
            pod = pods.get(d.name)
            if (
                pod is not None
                and pod.get("status", {}).get("phase") not in TERMINAL
                and not pod["metadata"].get("deletionTimestamp")
            ):
                known.add(d.name)
                continue
            log.info(
                "cleaning up pod %s/%s left by an earlier executor", rec.get("namespace"), rec.get("name")
            )
            await asyncio.to_thread(self._kill_record, d, rec)
            if pod is None or pod["metadata"].get("deletionTimestamp") is None:
                await asyncio.to_thread(shutil.rmtree, d, True)
        network = self.ctx.network
        claimed = {network.netns_name(uid) for uid in known}
        for ns in network.namespaces():
            if ns not in claimed:
                log.info("removing leaked network namespace %s", ns)
                await asyncio.to_thread(self._kill_netns, ns)

    def _kill_record(self, d: Path, rec: Obj, network: PodNetwork | None = None) -> None:
        for name, c in (rec.get("containers") or {}).items():
            if c.get("proc"):
                p = Process.adopt(c["proc"], d / "containers" / name)
                if p is not None:
                    p.stop(0)
        if rec.get("netns"):
            self._kill_netns(rec["netns"], network)

    def _kill_netns(self, ns: str, network: PodNetwork | None = None) -> None:
        network = network or self.ctx.network
        for pid in pids_in(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        network.detach(ns.removeprefix(network.netns_prefix()))

    def cleanup(self) -> dict[str, Any]:
        """`--cleanup`: stop everything an executor left in the state dir (after a crash, or before
        wiping the dir): container processes, pod namespaces, the bridge. Refuses while it runs."""
        pid_file = self.state_dir / "executor.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if pid != os.getpid() and proc_start_time(pid) is not None:
                raise RuntimeError(
                    f"the executor for {self.state_dir} is running (pid {pid}); stop it instead"
                )
        cfg_file = self.state_dir / "executor.json"
        if not cfg_file.exists():
            return {"pods": 0, "netns": 0}
        cfg = json.loads(cfg_file.read_text())
        network = PodNetwork(self.executor_id, ipaddress.IPv4Network(cfg["podCIDR"]))
        pods = 0
        for d in sorted((self.state_dir / "pods").glob("*")):
            rec: Obj = {}
            with contextlib.suppress(OSError, ValueError):
                rec = json.loads((d / "pod.json").read_text())
            self._kill_record(d, rec, network)
            shutil.rmtree(d, ignore_errors=True)
            pods += 1
        leaked = network.namespaces()
        for ns in leaked:
            self._kill_netns(ns, network)
        network.remove_bridge()
        return {"pods": pods, "netns": len(leaked), "bridge": network.bridge}
