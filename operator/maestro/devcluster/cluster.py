"""The local cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (simulated
GPU nodes) as plain processes, plus one real node (containerd, kubelet, kube-proxy, CoreDNS and a
storage provisioner: `maestro.devcluster.node`).

Everything lives in one state dir (PKI, etcd data, logs, kubeconfig, `state.json` with ports and
pids), so `up` is idempotent (a live cluster is reused) and `down` stops exactly what `up` started.
Control planes without a node (`node=False`) can coexist in different state dirs; the machine has
one real node, held by one cluster at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maestro.devcluster import addons
from maestro.devcluster import node as realnode
from maestro.devcluster.nodes import DEFAULT_NODES, NodeSpec
from maestro.devcluster.pki import PKI, ensure_pki, issue_client_cert
from maestro.devcluster.stages import KWOK_STORAGE_CLASS, STANDARD_STORAGE_CLASS, stages, storage_class

#: Order matters: started in this order, stopped in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "hack" / "kube" / "build.sh"
NODE_BUILD_SCRIPT = REPO_ROOT / "hack" / "node" / "build.sh"
SERVICE_CIDR = "10.96.0.0/16"
FIELD_MANAGER = "maestro-dev"
#: Plurals of the kinds the launcher applies itself (add-ons, bootstrap objects).
_PLURALS = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Service": "services",
    "Deployment": "deployments",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "StorageClass": "storageclasses",
}


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached; the message says which part."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when a socket LISTENs on the port. Read from /proc/net/tcp*, because a bind or connect
    probe also trips over client sockets that got the same number as their ephemeral port."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def _resolve(explicit: str | Path | None, env: str, script: Path, probe: str) -> Path:
    for cand in (explicit, os.environ.get(env)):
        if cand:
            p = Path(cand)
            if not (p / probe).exists():
                raise ClusterError(f"{p} has no {probe} binary; run `make cluster-build`")
            return p
    if not script.exists():
        raise ClusterError(f"no {probe} binary: set {env} or run {script.relative_to(REPO_ROOT)}")
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ClusterError(
            f"{script.relative_to(REPO_ROOT)} failed (exit {proc.returncode}); see its output above"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def resolve_bin_dir(explicit: str | Path | None = None) -> Path:
    """Control-plane and kubelet binaries from `explicit`, `$MAESTRO_KUBE_BIN`, or the (cached,
    idempotent) build script."""
    return _resolve(explicit, "MAESTRO_KUBE_BIN", BUILD_SCRIPT, "kube-apiserver")


def resolve_node_bin_dir(explicit: str | Path | None = None) -> Path:
    """containerd, CNI plugins, CoreDNS, ... from `explicit`, `$MAESTRO_NODE_BIN` or hack/node/build.sh."""
    return _resolve(explicit, "MAESTRO_NODE_BIN", NODE_BUILD_SCRIPT, "containerd")


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class DevCluster:
    state_dir: Path
    bin_dir: Path | None = None
    nodes: tuple[NodeSpec, ...] = DEFAULT_NODES
    state: dict[str, Any] = field(default_factory=dict)
    #: Start the machine's real node with the control plane (kwok's simulated nodes either way).
    node: bool = True
    node_bin_dir: Path | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())
            self.node = bool(self.state.get("node", self.node))

    @property
    def components(self) -> tuple[str, ...]:
        return COMPONENTS + (realnode.NODE_COMPONENTS if self.node else ())

    @property
    def node_layout(self) -> realnode.NodeLayout:
        return realnode.NodeLayout(self.state_dir / "node")

    # -- paths ---------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pki(self) -> PKI:
        return PKI(self.state_dir / "pki")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state['ports']['apiserver']}"

    # -- lifecycle -----------------------------------------------------------------------------
    def running(self) -> bool:
        pids = self.state.get("pids", {})
        return bool(pids) and all(_alive(pid) for pid in pids.values())

    def up(self, timeout: float = 90.0) -> DevCluster:
        if self.running() and self._ready("apiserver"):
            return self
        self.down(quiet=True)
        bin_dir = self.bin_dir = resolve_bin_dir(self.bin_dir)
        t0 = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        names = ["etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok"]
        node_ip = None
        if self.node:
            try:
                realnode.check_host()
                realnode.claim_node(self.state_dir, _alive)
                node_ip = realnode.host_ip()
            except realnode.NodeError as e:
                raise ClusterError(str(e)) from e
            self.node_bin_dir = resolve_node_bin_dir(self.node_bin_dir)
            names += ["kubelet", "kubelet_healthz", "proxy_healthz", "proxy_metrics"]
        pki = ensure_pki(self.state_dir / "pki", extra_ips=(node_ip,) if node_ip else ())
        # the same ports as last time where they are free: kubeconfigs handed out stay valid, and
        # the `kubernetes` Service's endpoint (kept in etcd) stays right
        previous = self.state.get("ports", {}) if self.state else {}
        ports = {
            k: previous[k] if k in previous and not port_in_use(previous[k]) else free_port() for k in names
        }
        self.state = {"ports": ports, "pids": {}, "bin_dir": str(bin_dir), "node": self.node}
        if node_ip:
            self.state |= {"node_ip": node_ip, "node_bin_dir": str(self.node_bin_dir)}
        self._write_kubeconfig(pki, ports["apiserver"])
        (self.state_dir / "kwok-stages.yaml").write_text(stages(self._kwok_storage_class))
        deadline = t0 + timeout
        try:
            self._start("etcd", self._etcd_args(ports))
            self._wait("etcd", deadline)
            self._start("kube-apiserver", self._apiserver_args(pki, ports))
            self._wait("apiserver", deadline)
            self._start("kube-controller-manager", self._kcm_args(pki, ports))
            self._start("kube-scheduler", self._scheduler_args(ports))
            self._start("kwok", self._kwok_args(ports))
            self._wait("kcm", deadline)
            self._wait("scheduler", deadline)
            self._bootstrap(deadline)
            if self.node:
                self._node_up(pki, deadline)
        except BaseException:
            self.down(quiet=True)
            raise
        self.state["ready_seconds"] = round(time.monotonic() - t0, 2)
        self._save()
        return self

    @property
    def _kwok_storage_class(self) -> str:
        """With a real node, `standard` is the real provisioner's; kwok's fake one gets its own name."""
        return KWOK_STORAGE_CLASS if self.node else STANDARD_STORAGE_CLASS

    # -- the real node -----------------------------------------------------------------------------
    def _drop_stale_kubernetes_endpoint(self) -> None:
        """etcd keeps the `kubernetes` Service's endpoint across restarts; when the API server's
        port changed, delete it so the API server writes the right one (pods would dial the old)."""
        port = self.state["ports"]["apiserver"]
        for path in (
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
            "/api/v1/namespaces/default/endpoints/kubernetes",
        ):
            try:
                obj = self.request("GET", path)
            except urllib.error.HTTPError:
                continue
            ports = [p.get("port") for p in obj.get("ports") or []]
            ports += [p.get("port") for sub in obj.get("subsets") or [] for p in sub.get("ports") or []]
            if ports and port not in ports:
                with contextlib.suppress(urllib.error.HTTPError):
                    self.request("DELETE", path)

    def _node_up(self, pki: PKI, deadline: float) -> None:
        assert self.node_bin_dir is not None
        self._drop_stale_kubernetes_endpoint()
        layout, nbin = self.node_layout, self.node_bin_dir
        ip, ports = self.state["node_ip"], self.state["ports"]
        try:
            wanted = {**realnode.KERNEL_DEFAULTS, **realnode.NETWORK_SYSCTLS}
            saved = self.state.setdefault("saved_sysctls", realnode.read_sysctls(list(wanted)))
            self._save()
            changed = {k: v for k, v in wanted.items() if saved.get(k) != v}
            if changed:
                _say(
                    "setting the kubelet's kernel defaults (restored by `down`): "
                    + ", ".join(f"{k.replace('/', '.')}={v}" for k, v in changed.items())
                )
            realnode.write_sysctls(wanted)
            realnode.prepare(layout, nbin, pki, self.server, ip, ports)
            realnode.SOCKET.parent.mkdir(parents=True, exist_ok=True)
            realnode.IMAGE_ROOT.mkdir(parents=True, exist_ok=True)
            env = {"PATH": f"{nbin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
            self._start("containerd", realnode.containerd_args(layout), binary=nbin / "containerd", env=env)
            self._wait_for(
                lambda: realnode.SOCKET.exists() and self._ctr_ok(), deadline, "containerd", "containerd"
            )
            realnode.remove_all_pods(nbin)  # a previous cluster's sandboxes, if it died without `down`
            imported = realnode.Ctr(nbin).import_static(realnode.system_images(nbin))
            if imported:
                _say(f"imported node images: {', '.join(imported)}")
            self._start("kubelet", realnode.kubelet_args(layout, ip), env=env)
            self._start("kube-proxy", realnode.proxy_args(layout))
            realnode.record_owner_pids(self.state_dir, list(self.state["pids"].values()))
            self._wait_for(
                lambda: self._ready("kubelet_healthz"), deadline, "the kubelet's /healthz", "kubelet"
            )
            self._wait_for(
                lambda: self._node_ready(realnode.NODE_NAME), deadline, "the node to be Ready", "kubelet"
            )
            for obj in [*addons.coredns(), *addons.local_path_storage(str(layout.volumes))]:
                self.apply(obj)
            for ns, name in (
                ("kube-system", "coredns"),
                (addons.STORAGE_NAMESPACE, "local-path-provisioner"),
            ):
                self._wait_for(
                    lambda ns=ns, name=name: self._deployment_available(ns, name),
                    deadline,
                    f"deployment {ns}/{name} to be available",
                    "kubelet",
                )
        except realnode.NodeError as e:
            raise ClusterError(str(e)) from e

    def restart(self, component: str, timeout: float = 60) -> None:
        """Stop one component (SIGTERM) and start it again with the same arguments, as a node
        upgrade or a crash would: running pods must survive a kubelet or containerd restart."""
        argv = self.state.get("argv", {}).get(component)
        if not argv:
            raise ClusterError(
                f"{component} is not a component of this cluster ({', '.join(self.components)})"
            )
        self._stop_pid(self.state["pids"].get(component))
        self._start(component, argv[1:], binary=Path(argv[0]), env=self.state.get("env", {}).get(component))
        deadline = time.monotonic() + timeout
        if component == "containerd":
            self._wait_for(self._ctr_ok, deadline, "containerd", "containerd")
        elif component == "kubelet":
            self._wait_for(
                lambda: self._ready("kubelet_healthz"), deadline, "the kubelet's /healthz", "kubelet"
            )
        if self.node:
            realnode.record_owner_pids(self.state_dir, list(self.state["pids"].values()))

    def wait_node_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        self._wait_for(
            lambda: self._node_ready(realnode.NODE_NAME), deadline, "the node to be Ready", "kubelet"
        )

    def _ctr_ok(self) -> bool:
        assert self.node_bin_dir is not None
        try:
            realnode.Ctr(self.node_bin_dir).run("version", timeout=5)
            return True
        except (realnode.NodeError, subprocess.TimeoutExpired):
            return False

    def _node_ready(self, name: str) -> bool:
        try:
            n = self.request("GET", f"/api/v1/nodes/{name}")
        except urllib.error.HTTPError:
            return False
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", [])
        )

    def _deployment_available(self, ns: str, name: str) -> bool:
        try:
            d = self.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
        except urllib.error.HTTPError:
            return False
        return bool(d.get("status", {}).get("availableReplicas"))

    def _node_down(self) -> None:
        pids: dict[str, int] = self.state.get("pids", {})
        nbin = Path(self.state.get("node_bin_dir") or "")
        layout = self.node_layout
        bin_dir = Path(self.state.get("bin_dir") or "")
        proxy = pids.get("kube-proxy")
        self._stop_pid(pids.get("kubelet"))  # first, or it recreates what is removed below
        self._stop_pid(proxy)
        if (bin_dir / "kube-proxy").exists():
            # kube-proxy's iptables chains are host-wide: leave none behind
            subprocess.run([str(bin_dir / "kube-proxy"), "--cleanup"], capture_output=True, timeout=60)
        if nbin.is_dir() and pids.get("containerd") and _alive(pids["containerd"]):
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                realnode.remove_all_pods(nbin)
        self._stop_pid(pids.get("containerd"))
        realnode.kill_shims()
        realnode.remove_host_network()
        realnode.unmount_under(layout.root)
        saved = self.state.get("saved_sysctls")
        if saved:
            with contextlib.suppress(realnode.NodeError):
                realnode.write_sysctls(saved)
        realnode.release_node(self.state_dir)

    def _stop_pid(self, pid: int | None) -> None:
        if pid and _alive(pid):
            _signal_group(pid, signal.SIGTERM)
            _wait_dead([pid], timeout=20)
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
                _wait_dead([pid], timeout=10)
        if pid:
            _reap(pid)

    def down(self, quiet: bool = False) -> None:
        pids: dict[str, int] = self.state.get("pids", {})
        if self.state.get("node"):
            self._node_down()
        for name in reversed(COMPONENTS):  # clients first, etcd last
            pid = pids.get(name)
            if pid and _alive(pid):
                _signal_group(pid, signal.SIGTERM)
        _wait_dead(list(pids.values()), timeout=20)
        for pid in pids.values():
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
        _wait_dead(list(pids.values()), timeout=10)
        for pid in pids.values():
            _reap(pid)
        ports = {k: p for k, p in self.state.get("ports", {}).items() if k != "etcd_peer"}
        deadline = time.monotonic() + 10  # the kernel may take a moment to tear sockets down
        busy = [f"{k}:{p}" for k, p in ports.items() if port_in_use(p)]
        while busy and time.monotonic() < deadline:
            time.sleep(0.2)
            busy = [f"{k}:{p}" for k, p in ports.items() if port_in_use(p)]
        if busy and not quiet:
            raise ClusterError(f"ports still bound after stop: {', '.join(busy)}")
        if self.state:
            self.state["pids"] = {}
            if self.state_file.parent.exists():
                self._save()

    def status(self) -> dict[str, Any]:
        pids = self.state.get("pids", {})
        return {
            "stateDir": str(self.state_dir),
            "kubeconfig": str(self.kubeconfig) if self.kubeconfig.exists() else None,
            "server": self.server if self.state.get("ports") else None,
            "components": {
                n: ("running" if pids.get(n) and _alive(pids[n]) else "stopped") for n in self.components
            },
            "ready": bool(pids) and self._ready("apiserver"),
        }

    # -- API access (stdlib only, admin client cert) ---------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.admin_crt), str(self.pki.admin_key))
        return ctx

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, context=self._ssl(), timeout=10) as resp:
            out: dict[str, Any] = json.loads(resp.read() or b"{}")
            return out

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of one object of a kind in `_PLURALS` (the launcher's own objects)."""
        group_version, kind, meta = obj["apiVersion"], obj["kind"], obj["metadata"]
        base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        ns = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
        path = f"{base}{ns}/{_PLURALS[kind]}/{meta['name']}?fieldManager={FIELD_MANAGER}&force=true"
        try:
            return self.request("PATCH", path, obj, content_type="application/apply-patch+yaml")
        except urllib.error.HTTPError as e:
            raise ClusterError(f"applying {kind} {meta['name']}: {e.read().decode()}") from e

    # -- internals -----------------------------------------------------------------------------
    def _save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=2))

    def _start(
        self, name: str, args: list[str], binary: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        assert self.bin_dir is not None
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [str(binary or self.bin_dir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.state_dir,
            env={**os.environ, **(env or {})},
        )
        log.close()
        self.state["pids"][name] = proc.pid
        self.state.setdefault("argv", {})[name] = [str(binary or self.bin_dir / name), *args]
        if env:
            self.state.setdefault("env", {})[name] = env
        self._save()

    def _check_alive(self, component: str) -> None:
        for name, pid in self.state["pids"].items():
            if not _alive(pid):
                raise ClusterError(
                    f"{name} exited during start (waiting for {component}); last log lines "
                    f"of {self.log_dir / (name + '.log')}:\n{tail(self.log_dir / (name + '.log'))}"
                )

    def _ready(self, what: str) -> bool:
        ports = self.state.get("ports", {})
        try:
            if what == "etcd":
                url, ctx = f"http://127.0.0.1:{ports['etcd']}/health", None
            elif what == "kubelet_healthz":
                url, ctx = f"http://127.0.0.1:{ports[what]}/healthz", None
            elif what == "apiserver":
                url, ctx = f"{self.server}/readyz", self._ssl()
            else:
                url = f"https://127.0.0.1:{ports[what]}/healthz"
                ctx = ssl._create_unverified_context()  # component's self-signed serving cert
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError, KeyError):
            return False

    def _wait_for(self, pred: Any, deadline: float, what: str, log: str) -> None:
        while time.monotonic() < deadline:
            if pred():
                return
            self._check_alive(what)
            time.sleep(0.2)
        last = tail(self.log_dir / f"{log}.log")
        raise ClusterError(f"timed out waiting for {what}; last log lines of {log}.log:\n{last}")

    def _wait(self, what: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self._ready(what):
                return
            self._check_alive(what)
            time.sleep(0.1)
        logname = {
            "apiserver": "kube-apiserver",
            "kcm": "kube-controller-manager",
            "scheduler": "kube-scheduler",
        }.get(what, what)
        raise ClusterError(
            f"{what} not ready in time; last log lines of {logname}.log:\n"
            f"{tail(self.log_dir / (logname + '.log'))}"
        )

    def _bootstrap(self, deadline: float) -> None:
        """kwok's StorageClass, the simulated nodes, then wait until every node is Ready."""
        self._create(
            "/apis/storage.k8s.io/v1/storageclasses",
            storage_class(self._kwok_storage_class, default=not self.node),
        )
        for spec in self.nodes:
            self._create("/api/v1/nodes", spec.manifest(simulated_only=self.node))
        want = {n.name for n in self.nodes}
        while time.monotonic() < deadline:
            self._check_alive("nodes")
            items = self.request("GET", "/api/v1/nodes").get("items", [])
            ready = {
                n["metadata"]["name"]
                for n in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            }
            if want <= ready and self._default_sa_exists():
                return
            time.sleep(0.2)
        raise ClusterError(
            f"nodes not Ready in time (want {sorted(want)}); kwok log:\n{tail(self.log_dir / 'kwok.log')}"
        )

    def _default_sa_exists(self) -> bool:
        try:
            self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return True
        except urllib.error.HTTPError:
            return False

    def _create(self, path: str, body: dict[str, Any]) -> None:
        try:
            self.request("POST", path, body)
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise ClusterError(
                    f"creating {body['kind']} {body['metadata']['name']}: {e.read().decode()}"
                ) from e

    def _write_kubeconfig(self, pki: PKI, port: int) -> None:
        import base64

        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "maestro-dev",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": b64(pki.ca_crt),
                    },
                }
            ],
            "users": [
                {
                    "name": "maestro-admin",
                    "user": {
                        "client-certificate-data": b64(pki.admin_crt),
                        "client-key-data": b64(pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {"name": "maestro-dev", "context": {"cluster": "maestro-dev", "user": "maestro-admin"}}
            ],
            "current-context": "maestro-dev",
        }
        self.kubeconfig.write_text(yaml.safe_dump(cfg))
        self.kubeconfig.chmod(0o600)

    def _etcd_args(self, p: dict[str, int]) -> list[str]:
        client, peer = f"http://127.0.0.1:{p['etcd']}", f"http://127.0.0.1:{p['etcd_peer']}"
        return [
            "--name=maestro",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=maestro={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
            "--auto-compaction-retention=1",
            "--quota-backend-bytes=4294967296",
        ]

    def _apiserver_args(self, pki: PKI, p: dict[str, int]) -> list[str]:
        if self.node:
            # pods reach the API server through the `kubernetes` Service, whose endpoint is the
            # advertised node address; logs/exec/port-forward go to the kubelet with a client cert
            crt, key = issue_client_cert(
                pki, self.state_dir / "pki", "kube-apiserver-kubelet-client", ("system:masters",)
            )
            addressing = [
                f"--advertise-address={self.state['node_ip']}",
                "--bind-address=0.0.0.0",
                f"--kubelet-client-certificate={crt}",
                f"--kubelet-client-key={key}",
                f"--kubelet-certificate-authority={pki.ca_crt}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
            ]
        else:
            addressing = [
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ]
        return [
            f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            *addressing,
            f"--secure-port={p['apiserver']}",
            f"--tls-cert-file={pki.apiserver_crt}",
            f"--tls-private-key-file={pki.apiserver_key}",
            f"--client-ca-file={pki.ca_crt}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            "--v=1",
        ]

    def _component_common(self, port: int) -> list[str]:
        kc = str(self.kubeconfig)
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--profiling=false",
            "--v=1",
        ]

    def _kcm_args(self, pki: PKI, p: dict[str, int]) -> list[str]:
        return [
            *self._component_common(p["kcm"]),
            f"--cert-dir={self.state_dir / 'kcm-certs'}",
            f"--root-ca-file={pki.ca_crt}",
            f"--service-account-private-key-file={pki.sa_key}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-nodeipam",
            "--node-monitor-grace-period=60s",
        ]

    def _scheduler_args(self, p: dict[str, int]) -> list[str]:
        return [*self._component_common(p["scheduler"]), f"--cert-dir={self.state_dir / 'scheduler-certs'}"]

    def _kwok_args(self, p: dict[str, int]) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--config={self.state_dir / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.245.0.0/16",  # the real node's pods use 10.244.0.0/24
            "--node-ip=10.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{p['kwok']}",
        ]


def _say(msg: str) -> None:
    import sys

    print(f"[maestro dev cluster] {msg}", file=sys.stderr, flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        for p in pids:
            _reap(p)
        time.sleep(0.05)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
