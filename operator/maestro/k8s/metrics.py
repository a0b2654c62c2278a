"""Per-variant traffic of one LLMDeployment, read from Prometheus' HTTP API (`/api/v1/query`).

The guard exports `maestro_guard_variant_*` and the monitor `maestro_monitor_variant_feedback_score`
on the deployment's metrics Service; Prometheus scrapes them with the chart's scrape configuration (or
the ServiceMonitor), which labels every series with `namespace` and `service`. This module asks for the
window's increase of each, summed over the pods, per variant, and returns `VariantSignals`.

Counts are window increases, not raw counter values, so a pod restart (a counter reset) does not
break them. `increase()` alone misses what a series counted before its first scrape inside the window
(a variant that just started, a new pod: its first sample reads as the starting point, not as a
change), so a series that did not exist one window ago counts from zero: its highest value.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

import httpx2 as httpx

from maestro.api.experiments import VariantSignals
from maestro.workers.guard import contract as guard
from maestro.workers.monitor import contract as monitor

#: A Prometheus duration such as 30m, 1h, 1d (what `[window]` and `offset` accept).
WINDOW_PATTERN = r"^[1-9][0-9]*(ms|s|m|h|d|w|y)$"
DEFAULT_TIMEOUT_S = 10.0


class PrometheusError(Exception):
    """Prometheus could not be reached, or did not answer a query with data: worth a retry later (the
    message names the server and the problem, never credentials)."""


def _labels(namespace: str, service: str) -> str:
    def quote(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return f"namespace={quote(namespace)}, service={quote(service)}"


def window_increase(metric: str, selector: str, window: str) -> str:
    """PromQL: each series' increase over `window`; a series born inside the window counts from zero
    (its highest value in the window: also for a pod that came and went inside it), which plain
    `increase()` would lose (see the module docstring)."""
    v = f"{metric}{{{selector}}}"
    return (
        f"(increase({v}[{window}]) and ({v} offset {window})) "
        f"or (max_over_time({v}[{window}]) unless ({v} offset {window}))"
    )


def queries(namespace: str, service: str, window: str) -> dict[str, str]:
    """The instant queries for one deployment, by the field they fill."""
    if not re.match(WINDOW_PATTERN, window):
        raise ValueError(f"window {window!r} is not a Prometheus duration (e.g. 30m, 1h)")
    sel = _labels(namespace, service)

    def inc(metric: str) -> str:
        return window_increase(metric, sel, window)

    duration = f"sum by (variant, le) ({inc(guard.VARIANT_DURATION_METRIC + '_bucket')})"
    score = monitor.VARIANT_FEEDBACK_SCORE
    return {
        "requests": f"sum by (variant, status) ({inc(guard.VARIANT_REQUESTS_METRIC)})",
        "refusals": f"sum by (variant) ({inc(guard.VARIANT_REFUSALS_METRIC)})",
        "policy_hits": f"sum by (variant) ({inc(guard.VARIANT_POLICY_HITS_METRIC)})",
        "tokens": f"sum by (variant, type) ({inc(guard.VARIANT_TOKENS_METRIC)})",
        "p50": f"histogram_quantile(0.5, {duration})",
        "p95": f"histogram_quantile(0.95, {duration})",
        "feedback_count": f"sum by (variant) ({inc(score + '_count')})",
        "feedback_sum": f"sum by (variant) ({inc(score + '_sum')})",
    }


async def _query(client: httpx.AsyncClient, url: str, expr: str) -> list[tuple[dict[str, str], float]]:
    try:
        resp = await client.get(f"{url}/api/v1/query", params={"query": expr})
    except httpx.HTTPError as exc:
        raise PrometheusError(f"Prometheus at {url} is unreachable: {type(exc).__name__}: {exc}") from None
    try:
        body: Any = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") != "success":
        detail = (
            f"{body.get('errorType')}: {body.get('error')}"
            if isinstance(body, dict)
            else resp.text[:200].strip() or "no body"
        )
        raise PrometheusError(f"Prometheus at {url} answered {resp.status_code} to a query: {detail}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusError(f"Prometheus at {url} answered a {data.get('resultType')!r}, not a vector")
    out = []
    for sample in data.get("result") or []:
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            msg = f"Prometheus at {url} answered a malformed sample: {sample!r:.200}"
            raise PrometheusError(msg) from None
        out.append((dict(sample.get("metric") or {}), value))
    return out


def _status_code(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


async def variant_signals(
    url: str,
    namespace: str,
    service: str,
    window: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, VariantSignals]:
    """Variant name → its signals over the last `window` for the deployment whose metrics Service is
    `service` in `namespace`. A variant without traffic in the window is absent. PrometheusError when
    the server cannot be reached or refuses a query."""
    exprs = queries(namespace, service, window)
    url = url.rstrip("/")
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), transport=transport) as client:
        results = await asyncio.gather(*(_query(client, url, e) for e in exprs.values()))
    by = dict(zip(exprs, results, strict=True))
    counts: dict[str, dict[str, float]] = {}
    quantiles: dict[str, dict[str, float]] = {}

    def add(metric: dict[str, str], name: str, value: float) -> None:
        if metric.get("variant"):
            per = counts.setdefault(metric["variant"], {})
            per[name] = per.get(name, 0.0) + value

    for metric, value in by["requests"]:
        add(metric, "requests", value)
        if _status_code(metric.get("status")) >= 500:
            add(metric, "errors", value)
    for key in ("refusals", "policy_hits"):
        for metric, value in by[key]:
            add(metric, key, value)
    for metric, value in by["tokens"]:
        if metric.get("type") in ("input", "output"):
            add(metric, f"{metric['type']}_tokens", value)
    for metric, value in by["feedback_count"]:
        add(metric, "feedback_count", value)
    for metric, value in by["feedback_sum"]:
        add(metric, "feedback_score_sum", value)
    for key in ("p50", "p95"):
        for metric, value in by[key]:
            if metric.get("variant") and math.isfinite(value):  # NaN: no request in the window
                quantiles.setdefault(metric["variant"], {})[key] = value
    return {
        name: VariantSignals(
            requests=c.get("requests", 0.0),
            errors=c.get("errors", 0.0),
            refusals=c.get("refusals", 0.0),
            policy_hits=c.get("policy_hits", 0.0),
            latency_p50_s=quantiles.get(name, {}).get("p50"),
            latency_p95_s=quantiles.get(name, {}).get("p95"),
            input_tokens=c.get("input_tokens", 0.0),
            output_tokens=c.get("output_tokens", 0.0),
            feedback_count=c.get("feedback_count", 0.0),
            feedback_score_sum=c.get("feedback_score_sum", 0.0),
        )
        for name, c in sorted(counts.items())
        if c.get("requests", 0.0) > 0 or c.get("feedback_count", 0.0) > 0
    }
