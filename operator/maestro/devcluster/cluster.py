"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok,
started as plain processes on free loopback ports.

Everything lives in one state dir (PKI, etcd data, logs, kubeconfig, `state.json` with ports and
pids), so `up` is idempotent (a live cluster is reused), `down` stops exactly what `up` started, and
several clusters can coexist in different state dirs.
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

from maestro.devcluster.nodes import DEFAULT_NODES, NodeSpec
from maestro.devcluster.pki import PKI, ensure_pki
from maestro.devcluster.stages import STAGES, STORAGE_CLASS_MANIFEST

#: Order matters: started in this order, stopped in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "hack" / "kube" / "build.sh"
SERVICE_CIDR = "10.96.0.0/16"


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


def resolve_bin_dir(explicit: str | Path | None = None) -> Path:
    """Binaries from `explicit`, `$MAESTRO_KUBE_BIN`, or the (cached, idempotent) build script."""
    for cand in (explicit, os.environ.get("MAESTRO_KUBE_BIN")):
        if cand:
            p = Path(cand)
            if not (p / "kube-apiserver").exists():
                raise ClusterError(f"{p} has no kube-apiserver binary; run `make cluster-build`")
            return p
    if not BUILD_SCRIPT.exists():
        raise ClusterError("no control-plane binaries: set MAESTRO_KUBE_BIN or run hack/kube/build.sh")
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"hack/kube/build.sh failed (exit {proc.returncode}); see its output above")
    return Path(proc.stdout.strip().splitlines()[-1])


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

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())

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
        pki = ensure_pki(self.state_dir / "pki")
        ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok")}
        self.state = {"ports": ports, "pids": {}, "bin_dir": str(bin_dir)}
        self._write_kubeconfig(pki, ports["apiserver"])
        (self.state_dir / "kwok-stages.yaml").write_text(STAGES)
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
        except BaseException:
            self.down(quiet=True)
            raise
        self.state["ready_seconds"] = round(time.monotonic() - t0, 2)
        self._save()
        return self

    def down(self, quiet: bool = False) -> None:
        pids: dict[str, int] = self.state.get("pids", {})
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
                n: ("running" if pids.get(n) and _alive(pids[n]) else "stopped") for n in COMPONENTS
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

    # -- internals -----------------------------------------------------------------------------
    def _save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=2))

    def _start(self, name: str, args: list[str]) -> None:
        assert self.bin_dir is not None
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.state_dir,
        )
        log.close()
        self.state["pids"][name] = proc.pid
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
            elif what == "apiserver":
                url, ctx = f"{self.server}/readyz", self._ssl()
            else:
                url = f"https://127.0.0.1:{ports[what]}/healthz"
                ctx = ssl._create_unverified_context()  # component's self-signed serving cert
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError, KeyError):
            return False

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
        """Default StorageClass, the simulated nodes, then wait until every node is Ready."""
        self._create("/apis/storage.k8s.io/v1/storageclasses", STORAGE_CLASS_MANIFEST)
        for node in self.nodes:
            self._create("/api/v1/nodes", node.manifest())
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
        return [
            f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
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
            "--endpoint-reconciler-type=none",
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
            "--cidr=10.244.0.0/16",
            "--node-ip=10.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{p['kwok']}",
        ]


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
