"""The dev cluster's real node: containerd 2.x (CRI) + runc, the upstream kubelet and kube-proxy,
a bridge CNI network, and the node's system images (pause, CoreDNS, the storage provisioner).

Everything runs for real: pods are containers with their security context, cgroup limits,
volumes and probes; Services are kube-proxy's iptables rules; names resolve through CoreDNS. The
host quirks of our machines are handled here and nowhere else (see research/realnode.md):
- cgroup v1: the kubelet needs `failCgroupV1: false` (support ends no earlier than 1.38);
- no CAP_SYS_RESOURCE: containerd's `restrict_oom_score_adj`, or runc dies creating the sandbox;
- the kubelet's kernel defaults (`vm.overcommit_memory=1`, `kernel.panic=10`, ...) are set by this
  module, logged, and restored by `stop` (`protectKernelDefaults: true`: the kubelet itself never
  rewrites host sysctls).

One real node per machine: kube-proxy's iptables chains and the CNI bridge are host-wide, so a second
cluster asking for a node while one runs gets an error naming the owner's state dir. containerd's
image store is shared by every cluster on the machine (`IMAGE_ROOT`), so images are imported once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from maestro.devcluster import oci
from maestro.devcluster.pki import PKI, issue_client_cert, issue_serving_cert

NODE_NAME = "maestro-node"
POD_SUBNET = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
BRIDGE = "maestro0"
#: containerd's content store and snapshots, shared by every dev cluster on this machine.
IMAGE_ROOT = Path(os.environ.get("MAESTRO_CONTAINERD_ROOT", "/var/lib/maestro/containerd"))
#: Sockets and runtime state (short paths: unix socket names are limited to 108 bytes).
RUN_DIR = Path("/run/maestro")
SOCKET = RUN_DIR / "containerd" / "containerd.sock"
OWNER_FILE = RUN_DIR / "node-owner.json"
RUNC = "/usr/bin/runc"
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy")

#: The kubelet's expected kernel settings (pkg/kubelet/cm: setupKernelTunables).
KERNEL_DEFAULTS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
#: What pod networking needs from the host.
NETWORK_SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}

PAUSE_IMAGE = "localhost/maestro/pause:3.10.2"
COREDNS_IMAGE = "localhost/maestro/coredns:v1.14.7"
STORAGE_IMAGE = "localhost/maestro/local-path-provisioner:v0.0.30"
HELPER_IMAGE = "localhost/maestro/busybox:static"
BUSYBOX = Path("/bin/busybox")
BUSYBOX_TOOLS = ("sh", "mkdir", "rm", "chmod", "ls", "cat", "sleep", "id", "wget", "nslookup", "httpd", "env")


class NodeError(RuntimeError):
    """The real node could not be set up or started; the message names the part and its log."""


def host_ip() -> str:
    """The address other hosts (and pods) reach this machine at: the source of the default route."""
    out = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True, text=True)
    words = out.stdout.split()
    if out.returncode == 0 and "src" in words:
        return words[words.index("src") + 1]
    raise NodeError(f"cannot find this host's IPv4 address (`ip -4 route get 1.1.1.1`: {out.stderr.strip()})")


def system_images(bin_dir: Path) -> tuple[oci.StaticImage, ...]:
    """The node's own images, from the static binaries of hack/node/build.sh (and Debian's busybox)."""
    nonroot = "65532:65532"
    return (
        oci.StaticImage(
            PAUSE_IMAGE, (oci.ImageFile("pause", bin_dir / "pause"),), ("/pause",), "65535:65535"
        ),
        oci.StaticImage(
            COREDNS_IMAGE, (oci.ImageFile("coredns", bin_dir / "coredns"),), ("/coredns",), nonroot
        ),
        oci.StaticImage(
            STORAGE_IMAGE,
            (oci.ImageFile("usr/bin/local-path-provisioner", bin_dir / "local-path-provisioner"),),
            ("/usr/bin/local-path-provisioner",),
            nonroot,
        ),
        # the provisioner's helper pod runs `sh` scripts that create and remove volume directories;
        # the node's own tests use the same shell tools
        oci.StaticImage(
            HELPER_IMAGE,
            (oci.ImageFile("bin/busybox", BUSYBOX),),
            ("/bin/sh",),
            "0:0",
            symlinks={f"bin/{tool}": "busybox" for tool in BUSYBOX_TOOLS},
        ),
    )


@dataclass
class NodeLayout:
    """Where one cluster's node keeps its configuration, state and logs."""

    root: Path  # <cluster state>/node

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def proxy_kubeconfig(self) -> Path:
        return self.root / "kube-proxy.kubeconfig"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def pki(self) -> Path:
        return self.root / "pki"


def containerd_config(bin_dir: Path, layout: NodeLayout) -> str:
    """containerd 2.x (config version 3) with CRI: our pause image, restricted oom_score_adj, runc."""
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return f"""version = 3
root = "{IMAGE_ROOT}"
state = "{RUN_DIR / "containerd" / "state"}"

[grpc]
  address = "{SOCKET}"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[{cri_runtime}]
  # this machine's root lacks CAP_SYS_RESOURCE: never ask runc to lower oom_score_adj
  restrict_oom_score_adj = true
  enable_selinux = false

[{cri_runtime}.cni]
  bin_dirs = ["{bin_dir / "cni"}"]
  conf_dir = "{layout.cni_conf}"

[{cri_runtime}.containerd]
  default_runtime_name = "runc"

[{cri_runtime}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri_runtime}.containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
  SystemdCgroup = false
"""


def cni_config(layout: NodeLayout) -> dict[str, Any]:
    """One bridge for the node's pods; hairpin so a pod reaches itself through its Service."""
    return {
        "cniVersion": "1.0.0",
        "name": "maestro",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    layout: NodeLayout, ca: Path, serving: tuple[Path, Path], ports: dict[str, int]
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "0.0.0.0",
        "port": ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["kubelet_healthz"],
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        # the API server's kubelet client cert (logs, exec, port-forward) is checked against our CA
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{SOCKET}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "protectKernelDefaults": True,
        # a 2-core dev machine: requests size scheduling, but pods may use every core
        "cpuCFSQuota": False,
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(layout.pod_logs),
        "serializeImagePulls": False,
        # images are imported, not pulled: garbage-collecting one would lose it for good
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2%", "imagefs.available": "2%"},
        "maxPods": 110,
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "shutdownGracePeriod": "0s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "containerLogMaxSize": "20Mi",
        "containerLogMaxFiles": 3,
    }


def proxy_config(layout: NodeLayout, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.proxy_kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": "0.0.0.0",
        "healthzBindAddress": f"127.0.0.1:{ports['proxy_healthz']}",
        "metricsBindAddress": f"127.0.0.1:{ports['proxy_metrics']}",
        # leave the host's conntrack table size alone
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"syncPeriod": "10s", "minSyncPeriod": "1s", "localhostNodePorts": False},
    }


def kubeconfig(server: str, ca: Path, crt: Path, key: Path, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "maestro-dev", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "default", "context": {"cluster": "maestro-dev", "user": user}}],
        "current-context": "default",
    }


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def read_sysctls(names: list[str]) -> dict[str, str]:
    out = {}
    for n in names:
        with contextlib.suppress(OSError):
            out[n] = _sysctl_path(n).read_text().strip()
    return out


def write_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        try:
            _sysctl_path(name).write_text(value)
        except OSError as e:
            raise NodeError(
                f"cannot set sysctl {name.replace('/', '.')}={value} ({e}); the node needs root"
            ) from e


def check_host() -> None:
    """What the node needs from this machine, each missing piece named with its fix."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root (containerd, the kubelet and kube-proxy manage cgroups, mounts and iptables)")
    for tool, pkg in (("iptables", "iptables"), ("ip", "iproute2"), (RUNC, "runc"), ("mount", "mount")):
        if shutil.which(tool) is None:
            problems.append(f"{tool} (apt-get install {pkg})")
    if not BUSYBOX.exists():
        problems.append(f"{BUSYBOX} (apt-get install busybox-static)")
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        problems.append("the br_netfilter kernel module (modprobe br_netfilter)")
    if problems:
        raise NodeError("the real node needs " + "; ".join(problems))


def claim_node(state_dir: Path, alive: Callable[[int], bool]) -> None:
    """Take the machine's one node for `state_dir`, unless a live cluster elsewhere holds it."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if OWNER_FILE.exists():
        try:
            owner = json.loads(OWNER_FILE.read_text())
        except ValueError:
            owner = {}
        other = owner.get("stateDir")
        if other and other != str(state_dir) and any(alive(p) for p in owner.get("pids", [])):
            raise NodeError(
                f"the real node of this machine is in use by the cluster in {other}: stop it first "
                f"(maestro dev cluster down --state-dir {other})"
            )
    OWNER_FILE.write_text(json.dumps({"stateDir": str(state_dir), "pids": []}))


def record_owner_pids(state_dir: Path, pids: list[int]) -> None:
    OWNER_FILE.write_text(json.dumps({"stateDir": str(state_dir), "pids": pids}))


def release_node(state_dir: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(OWNER_FILE.read_text()).get("stateDir") == str(state_dir):
            OWNER_FILE.unlink()


class Ctr:
    """containerd's own CLI against the node's socket, in the CRI namespace."""

    def __init__(self, bin_dir: Path) -> None:
        self.argv = [str(bin_dir / "ctr"), "--address", str(SOCKET), "--namespace", "k8s.io"]

    def run(self, *args: str, input: bytes | None = None, timeout: float = 600) -> str:
        proc = subprocess.run([*self.argv, *args], input=input, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout.decode()

    def image_targets(self) -> dict[str, str]:
        """image ref -> manifest (target) digest, for every image in the CRI namespace."""
        out = {}
        for line in self.run("images", "ls").splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 3:
                out[cols[0]] = cols[2]
        return out

    def import_static(self, images: tuple[oci.StaticImage, ...]) -> list[str]:
        """Import the images whose digest differs from what containerd holds; returns those imported."""
        have = self.image_targets()
        done = []
        for image in images:
            data, digest = oci.archive(image)
            if have.get(image.ref) == digest:
                continue
            self.run("images", "import", "--no-unpack=false", "-", input=data)
            # pinned: the kubelet never garbage-collects it (it cannot be pulled back)
            self.run("images", "label", image.ref, "io.cri-containerd.pinned=pinned")
            done.append(image.ref)
        return done


def wait_http(url: str, deadline: float, check_alive: Callable[[], None], what: str) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        check_alive()
        time.sleep(0.2)
    raise NodeError(f"{what} did not become healthy in time ({url})")


def crictl(bin_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "crictl"), f"--runtime-endpoint=unix://{SOCKET}", "--timeout=60s", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def remove_all_pods(bin_dir: Path) -> None:
    """Stop and remove every pod sandbox the runtime holds (a previous cluster's leftovers included)."""
    if SOCKET.exists():
        crictl(bin_dir, "rmp", "--force", "--all")


def kill_shims() -> None:
    """containerd's shims outlive containerd by design (a restart keeps pods running); at `down`
    they must go too, or a container keeps running with nobody to stop it."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and str(SOCKET).encode() in b" ".join(cmd):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


#: iptables chains the kubelet itself creates (kube-proxy's go with `kube-proxy --cleanup`).
KUBELET_CHAINS = {
    "filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"),
    "nat": ("KUBE-KUBELET-CANARY",),
    "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"),
}


def remove_host_network() -> None:
    """The kubelet's iptables chains and the pods' bridge: nothing of the node stays on the host."""

    def ipt(*args: str) -> None:
        subprocess.run(["iptables", "-w", *args], capture_output=True)

    for hook in ("INPUT", "OUTPUT"):
        ipt("-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL")
    for table, chains in KUBELET_CHAINS.items():
        for chain in chains:
            ipt("-t", table, "-F", chain)
            ipt("-t", table, "-X", chain)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)


def unmount_under(root: Path) -> None:
    """The kubelet's volume mounts (tmpfs for Secrets and tokens, bind mounts) under `root`,
    deepest first, so the state dir can be removed."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    prefix = str(root.resolve()) + "/"
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def write_yaml(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def prepare(layout: NodeLayout, bin_dir: Path, pki: PKI, server: str, ip: str, ports: dict[str, int]) -> None:
    """Write every config file, certificate and kubeconfig the node components read."""
    for d in (
        layout.root,
        layout.kubelet_dir,
        layout.pod_logs,
        layout.cni_conf,
        layout.cni_ipam,
        layout.volumes,
    ):
        d.mkdir(parents=True, exist_ok=True)
    layout.containerd_config.write_text(containerd_config(bin_dir, layout))
    (layout.cni_conf / "10-maestro.conflist").write_text(json.dumps(cni_config(layout), indent=2))
    serving = issue_serving_cert(
        pki, layout.pki, "kubelet", NODE_NAME, ips=(ip, "127.0.0.1"), dns=(NODE_NAME,)
    )
    write_yaml(layout.kubelet_config, kubelet_config(layout, pki.ca_crt, serving, ports))
    crt, key = issue_client_cert(pki, layout.pki, f"system:node:{NODE_NAME}", ("system:nodes",))
    write_yaml(
        layout.kubelet_kubeconfig, kubeconfig(server, pki.ca_crt, crt, key, f"system:node:{NODE_NAME}")
    )
    crt, key = issue_client_cert(pki, layout.pki, "system:kube-proxy")
    write_yaml(layout.proxy_kubeconfig, kubeconfig(server, pki.ca_crt, crt, key, "system:kube-proxy"))
    write_yaml(layout.proxy_config, proxy_config(layout, ports))


def containerd_args(layout: NodeLayout) -> list[str]:
    return [f"--config={layout.containerd_config}", "--log-level=warn"]


def kubelet_args(layout: NodeLayout, ip: str) -> list[str]:
    # --flag=value only: the multi-call binary reads a bare first word as the component name
    return [
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={layout.kubelet_kubeconfig}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={ip}",
        f"--root-dir={layout.kubelet_dir}",
        f"--cert-dir={layout.pki}",
        "--node-labels=maestro.llmops.dev/node=real",
        "--v=1",
    ]


def proxy_args(layout: NodeLayout) -> list[str]:
    return [f"--config={layout.proxy_config}", "--v=1"]
