"""The chart's ServiceAccount can do what the operator needs and nothing it does not (checked by the
real API server's authorizer with `kubectl auth can-i --as`). That the same rules suffice to
reconcile the quickstart is proven by tests/cluster/operator/test_rbac_progress.py; that the chart's
rules equal the operator's declared ones by tests/contract/test_chart.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster
CHART = Path(__file__).resolve().parents[2] / "charts" / "maestro"
helm = pytest.importorskip("helm_python")
NS = "maestro-chart-rbac"

ALLOWED = [
    ("create", "jobs.batch", "team-a"),
    ("patch", "deployments.apps", "team-a"),
    ("patch", "llmdatasets.llmops.dev", "team-a", "status"),
    ("list", "llmpolicies.llmops.dev", "team-b"),
    ("create", "tokenreviews.authentication.k8s.io", None),
    ("create", "events", "team-a"),
    ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io", None),
    ("get", "pods", "team-a"),
    ("create", "horizontalpodautoscalers.autoscaling", "team-a"),
]
DENIED = [
    ("get", "secrets", "team-a"),
    ("list", "secrets", None),
    ("create", "pods", "team-a"),
    ("delete", "nodes", None),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
    ("patch", "pods", "team-a", "status"),
    ("create", "serviceaccounts/token", "team-a"),
    ("delete", "llmdatasets.llmops.dev", "team-a"),
    ("impersonate", "users", None),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None),
    ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", None),
]


@pytest.fixture(scope="module")
def chart_sa(kubectl: Any) -> Iterator[str]:
    kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render({}, name="maestro", namespace=NS, is_install=True)
    docs = [
        d
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    ]
    kubectl("create", "namespace", NS, check=False)
    kubectl("apply", "--server-side", "-n", NS, "-f", "-", input=yaml.safe_dump_all(docs))
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    yield f"system:serviceaccount:{NS}:{sa}"
    # cluster-scoped and named like the chart's own: left behind, they would block a later
    # `helm install` of the same release (the e2e tier) with "cannot be imported into the release"
    for d in docs:
        if d["kind"] != "ServiceAccount":
            kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--ignore-not-found", check=False)
    kubectl("delete", "namespace", NS, "--wait=false", check=False)


def _can(kubectl: Any, user: str, verb: str, resource: str, ns: str | None, sub: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += [f"--namespace={ns}"] if ns else ["--all-namespaces"]
    if sub:
        args.append(f"--subresource={sub}")
    proc = kubectl(*args, check=False)
    return proc.stdout.strip() == "yes"


@pytest.mark.parametrize("case", ALLOWED, ids=lambda c: " ".join(x for x in c if x))
def test_chart_service_account_can_do_what_the_operator_needs(
    kubectl: Any, chart_sa: str, case: tuple[str, ...]
) -> None:
    assert _can(kubectl, chart_sa, *case)


@pytest.mark.parametrize("case", DENIED, ids=lambda c: " ".join(x for x in c if x))
def test_chart_service_account_cannot_do_what_it_does_not_need(
    kubectl: Any, chart_sa: str, case: tuple[str, ...]
) -> None:
    assert not _can(kubectl, chart_sa, *case)
