"""The operator's NetworkPolicy lets it reach the Prometheus its canary analysis reads, and only then."""

from __future__ import annotations

from typing import Any

import pytest
from test_chart import by_kind, render

pytestmark = pytest.mark.unit


def egress_ports(values: dict[str, Any]) -> set[tuple[int, str]]:
    (policy,) = by_kind(render(values), "NetworkPolicy")
    return {(int(p["port"]), p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://prometheus.monitoring.svc:9090", 9090),
        ("https://prom.example.com", 443),
        ("http://prometheus-operated.monitoring", 80),
    ],
)
def test_egress_to_the_configured_prometheus(url: str, port: int) -> None:
    base = egress_ports({})
    assert (port, "TCP") not in base or port == 443
    assert egress_ports({"analysis": {"prometheus": {"url": url}}}) == base | {(port, "TCP")}
