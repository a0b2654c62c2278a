"""Cluster fixtures for the operator: CRDs applied, the operator running as a real process
(`python -m maestro run`) against the local control plane, a namespace enforcing `restricted`.
Helpers (kubelet play-acting, readers) live in `opkit`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from opkit import REPO, Kubectl, Operator, operator_env, quickstart_inputs


@pytest.fixture(scope="session")
def crds(cluster: Any, kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in ("llmdatasets", "llmtrainingjobs", "llmdeployments", "llmpolicies"):
        kubectl("wait", "--for=condition=Established", f"crd/{name}.llmops.dev", "--timeout=60s")


@pytest.fixture(scope="module")
def operator(cluster: Any, crds: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    env, ports = operator_env(cluster)
    op = Operator(env=env, log_path=tmp_path_factory.mktemp("operator") / "operator.log", ports=ports)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("MAESTRO_SHOW_OPERATOR_LOG"):
            print(op.log_tail(400))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def ns(namespace: str, kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace that enforces the `restricted` Pod Security profile on every pod.

    On failure, the Maestro objects' status is printed (what the operator concluded, and why).
    """
    kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    quickstart_inputs(kubectl, namespace)
    yield namespace
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        out = kubectl("get", "llmops", "-o", "yaml", namespace=namespace, check=False).stdout
        print(f"--- Maestro objects in {namespace} ---\n{out}")
        print(kubectl("get", "jobs,deployments,pods,events", namespace=namespace, check=False).stdout)
