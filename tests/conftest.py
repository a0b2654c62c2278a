"""Shared fixtures. Cluster fixtures start the real local cluster once per session: the control plane,
kwok's simulated GPU nodes and the machine's real node (kubelet + containerd).

Fixture contract (other test modules rely on these names):
- `cluster`   (session): a running `maestro.devcluster.DevCluster` with its real node
  (.kubeconfig, .state_dir, .bin_dir, .server, .restart(component))
- `kubectl`   (session): `kubectl(*args, input=None, check=True, namespace=None)` -> CompletedProcess (text)
- `namespace` (function): a fresh namespace (default ServiceAccount present), deleted after the test
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

IN_CI = bool(os.environ.get("CI"))
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def _toolchain_problem() -> str | None:
    """Why the cluster cannot be had here, or None. Only used outside CI."""
    if os.geteuid() != 0:
        return "the real node needs root (containerd, kubelet and kube-proxy manage cgroups and iptables)"
    if os.environ.get("MAESTRO_KUBE_BIN"):
        return None
    if shutil.which("go") is None:
        return (
            "no Go toolchain and no MAESTRO_KUBE_BIN: cannot build the local control plane "
            "(run `make cluster-build`)"
        )
    return None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from maestro.devcluster import DevCluster

    problem = _toolchain_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"cluster tests must run in CI: {problem}")
        pytest.skip(problem)
    state = Path(os.environ.get("MAESTRO_TEST_CLUSTER_DIR") or tmp_path_factory.mktemp("cluster"))
    # MAESTRO_TEST_NO_NODE=1: only the control plane and kwok (the operator tier, while another cluster
    # holds this machine's node); the node and e2e tiers then fail, as they should
    c = DevCluster(state, node=os.environ.get("MAESTRO_TEST_NO_NODE") != "1")
    c.up(timeout=240)
    os.environ["KUBECONFIG"] = str(c.kubeconfig)
    try:
        yield c
    finally:
        c.down(quiet=True)


@pytest.fixture(scope="session")
def kubectl(cluster: object) -> Kubectl:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail(
            "kubectl not found: install Debian's kubectl (apt-get install kubectl) or put one on PATH"
        )
    kubeconfig = str(cluster.kubeconfig)  # type: ignore[attr-defined]

    def run(
        *args: str,
        input: str | None = None,
        check: bool = True,
        namespace: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [binary, f"--kubeconfig={kubeconfig}"]
        if namespace:
            cmd.append(f"--namespace={namespace}")
        proc = subprocess.run([*cmd, *args], input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while kubectl("get", "serviceaccount", "default", namespace=name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"default ServiceAccount never appeared in {name}")
        time.sleep(0.1)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
