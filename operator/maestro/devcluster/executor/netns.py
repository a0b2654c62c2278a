"""Pod networking: one network namespace per pod, a veth pair into a host bridge, a private /24.

The bridge holds the gateway address (`.1`), so the host reaches every `podIP:port` over a
connected route and pods reach each other (and the host at the gateway) on one L2 segment — no
forwarding or iptables changes on the host. Names carry the executor's id so that several
executors (one per state dir) can coexist on one machine.
"""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")


class NetworkError(RuntimeError):
    """An `ip` command failed; the message has the command and its stderr."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetworkError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


def used_subnets(exclude_dev: str = "") -> set[ipaddress.IPv4Network]:
    out = ip("-4", "-o", "addr", "show").stdout
    nets: set[ipaddress.IPv4Network] = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts and parts[1] != exclude_dev:
            nets.add(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    return nets


def pick_subnet(base: str = "10.250.0.0/16") -> ipaddress.IPv4Network:
    """The first /24 of `base` that no interface on this host uses."""
    used = used_subnets()
    for net in ipaddress.IPv4Network(base).subnets(new_prefix=24):
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetworkError(f"no free /24 left in {base}; pass --pod-cidr")


@dataclass(frozen=True)
class PodNetwork:
    """The executor's bridge and subnet; `attach`/`detach` give a pod its namespace and address."""

    executor_id: str
    subnet: ipaddress.IPv4Network

    @property
    def bridge(self) -> str:
        return f"mst{self.executor_id}"[:15]

    @property
    def gateway(self) -> str:
        return str(next(self.subnet.hosts()))

    def netns_prefix(self) -> str:
        return f"maestro-{self.executor_id}-"

    def netns_name(self, pod_uid: str) -> str:
        return f"{self.netns_prefix()}{pod_uid[:13]}"

    def _veth(self, pod_uid: str) -> str:
        return "mv" + hashlib.sha1(f"{self.executor_id}/{pod_uid}".encode()).hexdigest()[:11]

    def ensure_bridge(self) -> None:
        if ip("link", "show", self.bridge, check=False).returncode != 0:
            ip("link", "add", self.bridge, "type", "bridge")
        addr = f"{self.gateway}/{self.subnet.prefixlen}"
        if addr not in ip("-4", "-o", "addr", "show", "dev", self.bridge).stdout:
            ip("addr", "add", addr, "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def remove_bridge(self) -> None:
        ip("link", "del", self.bridge, check=False)

    def allocate(self, taken: set[str]) -> str:
        for host in list(self.subnet.hosts())[1:]:
            if str(host) not in taken:
                return str(host)
        raise NetworkError(f"pod subnet {self.subnet} is full ({len(taken)} pods)")

    def attach(self, pod_uid: str, address: str) -> str:
        """Create (or recreate) the pod's namespace with `address` on eth0; returns the netns name."""
        name = self.netns_name(pod_uid)
        self.detach(pod_uid)
        veth = self._veth(pod_uid)
        ip("netns", "add", name)
        try:
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("link", "set", veth, "master", self.bridge, "up")
            ip("-n", name, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "route", "add", "default", "via", self.gateway)
        except NetworkError:
            self.detach(pod_uid)
            raise
        return name

    def detach(self, pod_uid: str) -> None:
        """Remove the pod's namespace (its eth0 and so the host-side veth go with it)."""
        name = self.netns_name(pod_uid)
        if (NETNS_DIR / name).exists():
            ip("netns", "del", name, check=False)
        ip("link", "del", self._veth(pod_uid), check=False)

    def namespaces(self) -> list[str]:
        """Every pod namespace this executor created (by name prefix)."""
        if not NETNS_DIR.is_dir():
            return []
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(self.netns_prefix()))


def pids_in(netns: str) -> list[int]:
    """Processes whose network namespace is `netns` (catches anything that left its process group)."""
    out = ip("netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]
