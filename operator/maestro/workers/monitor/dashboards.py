"""Grafana dashboards and Prometheus alert rules, generated from the metric names in `contract`.

Generated rather than hand-edited so that a panel can only name a series that the contract
defines (a test also checks every name against a live scrape). `maestro monitor dashboards`
writes them under the chart's `files/` (the chart wraps them in a ConfigMap with the Grafana
sidecar label and a PrometheusRule); `--check` fails when the committed files are stale.
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from maestro.workers.monitor import contract as c

DS = {"type": "prometheus", "uid": "${datasource}"}
#: Target labels the ServiceMonitor adds; every serving query filters on them.
SEL = 'namespace=~"$namespace", service=~"$service"'
RI = "$__rate_interval"


#: The guard's injection decisions (rules `injection.<family>`).
_INJECTION_RULES = 'rule=~"injection[.].+"'


def _sel(extra: str = "") -> str:
    return "{" + SEL + (", " + extra if extra else "") + "}"


def _q(quantile: float, bucket: str, by: str = "le") -> str:
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({bucket}{_sel()}[{RI}])))"


class _Board:
    """Lays panels out on Grafana's 24-column grid, two or three per row."""

    def __init__(self, uid: str, title: str, variables: list[dict[str, Any]]) -> None:
        self.uid, self.title, self.variables = uid, title, variables
        self.panels: list[dict[str, Any]] = []
        self._x = self._y = 0
        self._row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "panels": [],
            }
        )
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_h
            self._x = self._row_h = 0

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        kind: str = "timeseries",
        w: int = 12,
        h: int = 8,
        description: str = "",
        thresholds: list[tuple[float, str]] | None = None,
    ) -> None:
        if self._x + w > 24:
            self._newline()
        steps = [{"color": "green", "value": None}] + [
            {"color": col, "value": v} for v, col in (thresholds or [])
        ]
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": kind,
                "title": title,
                "description": description,
                "datasource": DS,
                "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y},
                "fieldConfig": {
                    "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                    "overrides": [],
                },
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
                if kind == "timeseries"
                else {},
                "targets": [
                    {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
        self._x += w
        self._row_h = max(self._row_h, h)

    def render(self, tags: list[str]) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "tags": tags,
            "editable": True,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-3h", "to": "now"},
            "timezone": "browser",
            "graphTooltip": 1,
            "annotations": {"list": []},
            "templating": {"list": self.variables},
            "panels": self.panels,
        }


def _datasource_var() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
    }


def _query_var(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DS,
        "query": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {},
        "hide": 0,
        "sort": 1,
    }


def serving_dashboard() -> dict[str, Any]:
    b = _Board(
        "maestro-serving",
        "Maestro / Serving",
        [
            _datasource_var(),
            _query_var("namespace", f"label_values({c.REQUESTS}, namespace)"),
            _query_var("service", f'label_values({c.REQUESTS}{{namespace=~"$namespace"}}, service)'),
        ],
    )
    req = f"sum(rate({c.REQUESTS}{_sel()}[{RI}]))"
    b.row("Traffic and latency")
    b.panel(
        "Requests/s by status",
        [(f"sum by (code) (rate({c.REQUESTS}{_sel()}[{RI}]))", "{{code}}")],
        unit="reqps",
        w=8,
    )
    errors = _sel('code=~"5.."')
    b.panel(
        "Error ratio (5xx)",
        # `or 0 * ...`: no 5xx series yet (codes appear with their first request) is a 0% ratio, not "no data"
        [(f"(sum(rate({c.REQUESTS}{errors}[{RI}])) or 0 * {req}) / clamp_min({req}, 1e-9)", "5xx")],
        unit="percentunit",
        w=8,
        thresholds=[(0.01, "orange"), (0.05, "red")],
    )
    b.panel(
        "Refusal ratio",
        [(f"sum(rate({c.REFUSALS}{_sel()}[{RI}])) / clamp_min({req}, 1e-9)", "refusals")],
        unit="percentunit",
        w=8,
    )
    b.panel(
        "Time to first token",
        [
            (_q(0.5, c.TTFT + "_bucket"), "p50 (guard)"),
            (_q(0.95, c.TTFT + "_bucket"), "p95 (guard)"),
            (_q(0.95, c.VLLM_TTFT + "_bucket"), "p95 (vLLM)"),
        ],
        unit="s",
        w=8,
        description="Seen at the guard (includes policy) and inside vLLM.",
    )
    b.panel(
        "Inter-token latency",
        [
            (_q(0.5, c.INTER_TOKEN_LATENCY + "_bucket"), "p50 (guard)"),
            (_q(0.95, c.INTER_TOKEN_LATENCY + "_bucket"), "p95 (guard)"),
            (_q(0.95, c.VLLM_ITL + "_bucket"), "p95 (vLLM)"),
        ],
        unit="s",
        w=8,
    )
    b.panel(
        "Request latency",
        [
            (_q(0.5, c.REQUEST_DURATION + "_bucket"), "p50 (guard)"),
            (_q(0.95, c.REQUEST_DURATION + "_bucket"), "p95 (guard)"),
            (_q(0.95, c.VLLM_E2E + "_bucket"), "p95 (vLLM e2e)"),
        ],
        unit="s",
        w=8,
    )
    b.row("Engine")
    b.panel(
        "Tokens/s",
        [
            (f"sum(rate({c.VLLM_GENERATION_TOKENS}{_sel()}[{RI}]))", "generation"),
            (f"sum(rate({c.VLLM_PROMPT_TOKENS}{_sel()}[{RI}]))", "prompt"),
            (f"sum by (type) ({c.VLLM_TOKENS_PER_SECOND}{_sel()})", "{{type}} (monitor, last scrape)"),
        ],
        unit="short",
        w=8,
    )
    b.panel(
        "Queue",
        [
            (f"sum({c.VLLM_NUM_WAITING}{_sel()})", "waiting"),
            (f"sum({c.VLLM_NUM_RUNNING}{_sel()})", "running"),
        ],
        unit="short",
        w=8,
    )
    b.panel(
        "KV-cache usage",
        [(f"max by (pod) ({c.VLLM_KV_CACHE_USAGE_PERC}{_sel()})", "{{pod}}")],
        unit="percentunit",
        w=8,
        thresholds=[(0.9, "orange"), (0.97, "red")],
    )
    b.panel(
        "vLLM up",
        [(f"min({c.VLLM_UP}{_sel()})", "up")],
        kind="stat",
        w=6,
        h=5,
        thresholds=[(-1, "red"), (1, "green")],
    )
    b.panel(
        "vLLM restarts (1h)",
        [(f"sum(increase({c.VLLM_RESTARTS}{_sel()}[1h]))", "restarts")],
        kind="stat",
        w=6,
        h=5,
        thresholds=[(1, "orange")],
    )
    b.panel(
        "Finish reasons",
        [
            (f"sum by (reason) (rate({c.FINISH_REASONS}{_sel()}[{RI}]))", "{{reason}}"),
            (
                f"sum by (finished_reason) (rate({c.VLLM_REQUEST_SUCCESS}{_sel()}[{RI}]))",
                "vLLM {{finished_reason}}",
            ),
        ],
        unit="reqps",
        w=6,
        h=5,
    )
    b.panel(
        "Preemptions/s",
        [(f"sum(rate({c.VLLM_PREEMPTIONS}{_sel()}[{RI}]))", "preemptions")],
        unit="short",
        w=6,
        h=5,
    )
    b.row("Policy and safety")
    b.panel(
        "Policy decisions by rule",
        [
            (f"sum by (rule, action) (rate({c.POLICY_DECISIONS}{_sel()}[{RI}]))", "{{rule}} → {{action}}"),
        ],
        unit="reqps",
        w=8,
    )
    b.panel(
        "PII detections by type",
        [(f"sum by (entity) (rate({c.PII_DETECTIONS}{_sel()}[{RI}]))", "{{entity}}")],
        unit="short",
        w=8,
    )
    b.panel(
        "Profanity rate",
        [
            (
                f"sum by (direction) (rate({c.PROFANITY}{_sel()}[{RI}])) / "
                f"clamp_min(sum by (direction) (rate({c.TEXT_ANALYZED}{_sel()}[{RI}])), 1e-9)",
                "{{direction}}",
            ),
        ],
        unit="percentunit",
        w=8,
        description="Only requests whose text is logged (policy audit.logPrompts).",
    )
    b.panel(
        "Mean sentiment (VADER)",
        [
            (
                f"sum by (direction) (rate({c.SENTIMENT}_sum{_sel()}[{RI}])) / "
                f"clamp_min(sum by (direction) (rate({c.SENTIMENT}_count{_sel()}[{RI}])), 1e-9)",
                "{{direction}}",
            ),
        ],
        unit="short",
        w=8,
    )
    b.panel(
        "Bias probe gaps",
        [
            (f"max by (axis) ({c.BIAS_SENTIMENT_GAP}{_sel()})", "sentiment gap {{axis}}"),
            (f"max by (axis) ({c.BIAS_REFUSAL_GAP}{_sel()})", "refusal gap {{axis}}"),
        ],
        unit="short",
        w=8,
        description="Counterfactual probes (opt-in): max − min across groups.",
    )
    b.panel(
        "Bias probe requests",
        [(f"sum by (result) (rate({c.PROBE_REQUESTS}{_sel()}[{RI}]))", "{{result}}")],
        unit="reqps",
        w=8,
    )
    b.panel(
        "Suspected prompt injections",
        [
            (
                f"sum by (rule, action) (rate({c.POLICY_DECISIONS}{_sel(_INJECTION_RULES)}[{RI}]))",
                "{{rule}} → {{action}}",
            ),
        ],
        unit="reqps",
        w=8,
        description="The guard's injection and jailbreak detector (policy request.injection): flagged "
        "requests are served and queued for review, blocked ones refused.",
    )
    b.panel(
        "Review queue",
        [(f"sum by (result) (rate({c.REVIEW_QUEUED}{_sel()}[{RI}]))", "{{result}}")],
        unit="reqps",
        w=8,
        description="Flagged requests the monitor wrote to review.jsonl on the feedback claim.",
    )
    b.row("Drift and feedback")
    b.panel(
        "Drift (PSI vs reference)",
        [
            (f"max by (feature) ({c.DRIFT_PSI}{_sel()})", "{{feature}}"),
            (f"max({c.DRIFT_THRESHOLD}{_sel()})", "threshold"),
        ],
        unit="short",
        w=8,
        description="PSI < 0.1 stable, 0.1-0.2 moderate, > threshold alerts.",
    )
    responses = _sel('direction="response"')
    b.panel(
        "Response language mix",
        [
            (f"sum by (language) (rate({c.LANGUAGE}{responses}[{RI}]))", "{{language}}"),
        ],
        unit="reqps",
        w=8,
    )
    b.panel(
        "Prompt / response length (p50)",
        [
            (_q(0.5, c.PROMPT_CHARS + "_bucket"), "prompt"),
            (_q(0.5, c.RESPONSE_CHARS + "_bucket"), "response"),
        ],
        unit="chars",
        w=8,
    )
    b.panel(
        "Feedback",
        [(f"sum by (sentiment) (rate({c.FEEDBACK}{_sel()}[{RI}]))", "{{sentiment}}")],
        unit="reqps",
        w=8,
    )
    b.panel(
        "Mean rating",
        [
            (
                f"sum(rate({c.FEEDBACK_RATING}_sum{_sel()}[{RI}])) / "
                f"clamp_min(sum(rate({c.FEEDBACK_RATING}_count{_sel()}[{RI}])), 1e-9)",
                "rating",
            ),
        ],
        unit="short",
        w=8,
        kind="stat",
    )
    b.panel(
        "Corrections (24h)",
        [(f"sum(increase({c.FEEDBACK_CORRECTIONS}{_sel()}[24h]))", "corrections")],
        unit="short",
        w=8,
        kind="stat",
    )
    _variant_panels(b)
    b.row("Monitor")
    b.panel(
        "Guard events",
        [
            (f"sum(rate({c.EVENTS_RECEIVED}{_sel()}[{RI}]))", "received"),
            (f"sum by (reason) (rate({c.EVENTS_DROPPED}{_sel()}[{RI}]))", "dropped {{reason}}"),
            (f"sum(rate({c.GUARD_EVENTS_DROPPED}{_sel()}[{RI}]))", "dropped by the guard (socket full)"),
            (f"sum(rate({c.TEXT_SKIPPED}{_sel()}[{RI}]))", "text not scored (budget)"),
        ],
        unit="short",
        w=12,
    )
    b.panel(
        "vLLM scrape",
        [
            (f"max({c.VLLM_SCRAPE_DURATION}{_sel()})", "duration"),
            (f"sum by (reason) (rate({c.VLLM_SCRAPE_ERRORS}{_sel()}[{RI}]))", "errors {{reason}}"),
        ],
        unit="s",
        w=12,
    )
    return b.render(["maestro", "llmops", "serving"])


def _variant_panels(b: _Board) -> None:
    """Traffic-split variants (spec.variants) side by side: what status.variants reports, over time."""
    b.row("Variants")
    req = c.GUARD_VARIANT_REQUESTS

    def per_variant_ratio(numerator: str) -> str:
        # `or 0 * ...`: a variant without a single 5xx (no such series yet) reads 0, not "No data"
        total = f"sum by (variant) (rate({req}{_sel()}[{RI}]))"
        return f"(sum by (variant) (rate({numerator}[{RI}])) or 0 * {total}) / clamp_min({total}, 1e-9)"

    b.panel(
        "Requests by variant",
        [(f"sum by (variant) (rate({req}{_sel()}[{RI}]))", "{{variant}}")],
        unit="reqps",
        w=8,
    )
    b.panel(
        "Error rate (5xx) by variant",
        [(per_variant_ratio(req + _sel('status=~"5.."')), "{{variant}}")],
        unit="percentunit",
        w=8,
        thresholds=[(0.05, "red")],
    )
    b.panel(
        "Refusal rate by variant",
        [(per_variant_ratio(f"{c.GUARD_VARIANT_REFUSALS}{_sel()}"), "{{variant}}")],
        unit="percentunit",
        w=8,
    )
    b.panel(
        "Latency p50 / p95 by variant",
        [
            (_q(0.5, c.GUARD_VARIANT_DURATION + "_bucket", "variant, le"), "{{variant}} p50"),
            (_q(0.95, c.GUARD_VARIANT_DURATION + "_bucket", "variant, le"), "{{variant}} p95"),
        ],
        unit="s",
        w=8,
    )
    b.panel(
        "Policy hits per request by variant",
        [(per_variant_ratio(f"{c.GUARD_VARIANT_POLICY_HITS}{_sel()}"), "{{variant}}")],
        unit="percentunit",
        w=8,
        description="Requests on which a policy rule blocked, flagged or redacted content.",
    )
    b.panel(
        "Tokens by variant",
        [(f"sum by (variant, type) (rate({c.GUARD_VARIANT_TOKENS}{_sel()}[{RI}]))", "{{variant}} {{type}}")],
        unit="short",
        w=8,
    )
    b.panel(
        "Mean feedback score by variant (1h)",
        [
            (
                f"sum by (variant) (increase({c.VARIANT_FEEDBACK_SCORE}_sum{_sel()}[1h])) / "
                f"clamp_min(sum by (variant) (increase({c.VARIANT_FEEDBACK_SCORE}_count{_sel()}[1h])), 1e-9)",
                "{{variant}}",
            )
        ],
        unit="percentunit",
        w=12,
        description="Thumbs up 1, down 0; rating 1-5 as 0..1.",
    )
    b.panel(
        "Feedback by variant",
        [(f"sum by (variant) (rate({c.VARIANT_FEEDBACK_SCORE}_count{_sel()}[{RI}]))", "{{variant}}")],
        unit="reqps",
        w=12,
    )


def operator_dashboard() -> dict[str, Any]:
    b = _Board(
        "maestro-operator",
        "Maestro / Operator and training",
        [
            _datasource_var(),
            _query_var("namespace", "label_values(maestro_training_progress_ratio, namespace)"),
        ],
    )
    ns = '{namespace=~"$namespace"}'
    b.row("Reconciliation")
    b.panel(
        "Reconciles/s",
        [("sum by (kind, result) (rate(maestro_reconcile_total[$__rate_interval]))", "{{kind}} {{result}}")],
        unit="ops",
        w=8,
    )
    b.panel(
        "Reconcile latency p95",
        [
            (
                "histogram_quantile(0.95, sum by (kind, le) (rate(maestro_reconcile_duration_seconds_bucket"
                "[$__rate_interval])))",
                "{{kind}}",
            ),
        ],
        unit="s",
        w=8,
    )
    b.panel(
        "Objects by phase",
        [("sum by (kind, phase) (maestro_objects)", "{{kind}} {{phase}}")],
        kind="bargauge",
        w=8,
    )
    b.row("Training")
    b.panel(
        "Training progress",
        [(f"max by (namespace, name) (maestro_training_progress_ratio{ns})", "{{namespace}}/{{name}}")],
        unit="percentunit",
        kind="bargauge",
        w=12,
    )
    b.panel(
        "Training loss",
        [(f"max by (namespace, name) (maestro_training_loss{ns})", "{{namespace}}/{{name}}")],
        w=12,
    )
    b.row("Datasets")
    b.panel(
        "Dataset gates (1 = passed)",
        [
            (
                f"max by (namespace, name, gate) (maestro_dataset_gate_passed{ns})",
                "{{namespace}}/{{name}} {{gate}}",
            ),
        ],
        kind="table",
        w=16,
    )
    b.panel(
        "Failing gates",
        [(f"count(maestro_dataset_gate_passed{ns} == 0) or vector(0)", "failing")],
        kind="stat",
        w=8,
        thresholds=[(1, "red")],
    )
    return b.render(["maestro", "llmops", "operator"])


# --- alert rules (PrometheusRule `spec`: also a plain Prometheus rules file) -----------------------
BY = "namespace, service"


def alert_rules() -> dict[str, Any]:
    all_5m = f"sum by ({BY}) (rate({c.REQUESTS}[5m]))"
    variant_10m = f"sum by ({BY}, variant) (rate({c.GUARD_VARIANT_REQUESTS}[10m]))"
    serving = [
        _alert(
            "MaestroTTFTHigh",
            f"histogram_quantile(0.95, sum by ({BY}, le) (rate({c.TTFT}_bucket[5m]))) > 2",
            "10m",
            "warning",
            "TTFT p95 above 2s on {{ $labels.namespace }}/{{ $labels.service }}",
            "Time to first token p95 is {{ $value | humanizeDuration }} (SLO 2s). "
            "Check the queue and KV cache.",
        ),
        _alert(
            "MaestroErrorRateHigh",
            f'(sum by ({BY}) (rate({c.REQUESTS}{{code=~"5.."}}[5m])) or 0 * {all_5m})'
            f" / clamp_min({all_5m}, 1e-9) > 0.05",
            "10m",
            "critical",
            "More than 5% of requests fail on {{ $labels.namespace }}/{{ $labels.service }}",
            "5xx ratio is {{ $value | humanizePercentage }}. See the guard and vLLM logs.",
        ),
        _alert(
            "MaestroVariantErrorRateHigh",
            f'(sum by ({BY}, variant) (rate({c.GUARD_VARIANT_REQUESTS}{{status=~"5.."}}[10m])) '
            f"or 0 * {variant_10m}) / clamp_min({variant_10m}, 1e-9) > 0.05",
            "10m",
            "warning",
            "Variant {{ $labels.variant }} fails more than 5% of its requests on "
            "{{ $labels.namespace }}/{{ $labels.service }}",
            "5xx ratio of variant {{ $labels.variant }} is {{ $value | humanizePercentage }}. Compare it "
            "with the baseline in `kubectl get llmdep -o yaml` (status.variants) and set its weight to 0 "
            "if it is the variant's own fault.",
        ),
        _alert(
            "MaestroDriftDetected",
            f"max by ({BY}, feature) ({c.DRIFT_ALERT}) == 1",
            "30m",
            "warning",
            "Traffic drift on {{ $labels.feature }} ({{ $labels.namespace }}/{{ $labels.service }})",
            "PSI of {{ $labels.feature }} against the reference window is above its threshold for 30m. "
            "Review the traffic mix; retrain or refresh the reference if the shift is expected.",
        ),
        _alert(
            "MaestroVLLMDown",
            f"max by ({BY}, pod) ({c.VLLM_UP}) == 0",
            "5m",
            "critical",
            "vLLM metrics unreachable in {{ $labels.pod }}",
            "The monitor cannot scrape vLLM in {{ $labels.namespace }}/{{ $labels.pod }} for 5m.",
        ),
        _alert(
            "MaestroKVCacheSaturated",
            f"max by ({BY}) ({c.VLLM_KV_CACHE_USAGE_PERC}) > 0.95",
            "15m",
            "warning",
            "KV cache above 95% on {{ $labels.namespace }}/{{ $labels.service }}",
            "Requests are being queued or preempted; scale out or lower max-model-len.",
        ),
        _alert(
            "MaestroMonitorDroppingEvents",
            f"sum by ({BY}) (rate({c.GUARD_EVENTS_DROPPED}[10m])) > 1",
            "15m",
            "info",
            "Guard events do not reach the monitor on {{ $labels.namespace }}/{{ $labels.service }}",
            "The guard drops monitor events (monitor down or too slow): monitoring signals are sampled, "
            "not complete. Check the monitor sidecar's health and CPU.",
        ),
        _alert(
            "MaestroGuardLimitBackendDown",
            f"min by ({BY}, pod) ({c.GUARD_LIMIT_BACKEND_UP}) == 0",
            "1m",
            "warning",
            "Guard in {{ $labels.pod }} cannot reach the shared rate-limit store",
            "Per-key limits in {{ $labels.namespace }}/{{ $labels.pod }} are not shared: each guard enforces "
            "limit / live guards (failOpen), or refuses limited keys with 503 (failClosed). Check the Redis "
            "at the chart's guard.rateLimits.redis.url and `kubectl logs POD -c guard`.",
        ),
        _alert(
            "MaestroBiasRefusalGap",
            f"max by ({BY}, axis) ({c.BIAS_REFUSAL_GAP}) > 0.2",
            "1h",
            "warning",
            "Refusal gap across {{ $labels.axis }} groups above 0.2",
            "Counterfactual probes refuse some groups more often than others.",
        ),
    ]
    operator = [
        _alert(
            "MaestroReconcileErrors",
            'sum by (kind) (rate(maestro_reconcile_total{result=~"error|failed|failure"}[10m])) > 0.1',
            "15m",
            "warning",
            "Reconcile errors for {{ $labels.kind }}",
            "The operator keeps failing to reconcile {{ $labels.kind }} objects; "
            "see its log and the objects' conditions.",
        ),
        _alert(
            "MaestroReconcileSlow",
            "histogram_quantile(0.99, sum by (kind, le) "
            "(rate(maestro_reconcile_duration_seconds_bucket[10m]))) > 5",
            "15m",
            "warning",
            "Slow reconciles for {{ $labels.kind }}",
            "p99 reconcile latency is {{ $value | humanizeDuration }}.",
        ),
        _alert(
            "MaestroDatasetGateFailed",
            "max by (namespace, name, gate) (maestro_dataset_gate_passed) == 0",
            "5m",
            "info",
            "Dataset {{ $labels.namespace }}/{{ $labels.name }} failed gate {{ $labels.gate }}",
            "The dataset is not Ready; training jobs that reference it wait.",
        ),
    ]
    return {
        "groups": [
            {"name": "maestro-serving", "rules": serving},
            {"name": "maestro-operator", "rules": operator},
        ]
    }


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }


def rendered_files() -> dict[str, str]:
    """Relative path (under the chart's files/) → content."""
    return {
        "dashboards/maestro-serving.json": json.dumps(serving_dashboard(), indent=2, ensure_ascii=False)
        + "\n",
        "dashboards/maestro-operator.json": json.dumps(operator_dashboard(), indent=2, ensure_ascii=False)
        + "\n",
        "alerts/maestro-rules.yaml": "# Generated by `maestro monitor dashboards`; edit"
        " operator/maestro/workers/monitor/dashboards.py.\n"
        + yaml.safe_dump(alert_rules(), sort_keys=False, width=200, allow_unicode=True),
    }


def write_all(out_dir: str, check: bool = False) -> list[str]:
    """Write the files (or, with check, only report the stale ones). Returns the paths that differ."""
    differing = []
    for rel, content in rendered_files().items():
        path = os.path.join(out_dir, rel)
        current = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                current = fh.read()
        if current == content:
            continue
        differing.append(path)
        if not check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(content)
    return differing
