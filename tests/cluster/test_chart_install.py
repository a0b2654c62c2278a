"""The rendered chart is accepted by the real API server (server-side apply, dry run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "maestro"
helm = pytest.importorskip("helm_python")


def _crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    """A schema-less stand-in for a third-party CRD (Prometheus operator) the chart can target."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "operator": {"replicas": 2},
            "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        },
        {"webhook": {"enabled": False}, "networkPolicy": {"enabled": False}},
        {"webhook": {"certManager": {"enabled": True}}},
        {"console": {"enabled": True}},
    ],
    ids=["defaults", "ha-observability", "minimal", "cert-manager", "console"],
)
def test_server_side_dry_run_accepts_every_object(kubectl: Any, values: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    kubectl("apply", "--server-side", "-f", str(CHART / "files/peering/kopf-peering-crds.yaml"))
    extra = [
        _crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
        _crd("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
        _crd("cert-manager.io", "Certificate", "certificates"),
        _crd("cert-manager.io", "Issuer", "issuers"),
    ]
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(extra))
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    kubectl("create", "namespace", "maestro-system", check=False)
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name="maestro", namespace="maestro-system", is_install=True)
    docs = [
        d
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d
    ]
    proc = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=helm",
        "-n",
        "maestro-system",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("serverside-applied (server dry run)") == len(docs)
