"""Per-variant statistics in status.variants: the comparison against the baseline (status.experiment)
and how the deployment reconcile fills status and the Analyzed condition from the signals it read."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from test_experiments import MODEL, POLICY, POLL, experiment_spec, serving_deployment

from maestro.api import LLMDeploymentSpec
from maestro.api.experiments import VariantSignals, VariantStatus, Verdict
from maestro.builders.settings import Settings
from maestro.reconcile import deployment
from maestro.reconcile.common import dump
from maestro.reconcile.context import Context
from maestro.reconcile.store import Store
from maestro.status import experiment
from ports import free_port

pytestmark = pytest.mark.unit

PROM = Settings(prometheus_url="http://prometheus.monitoring.svc:9090", analysis_interval_seconds=45)


# -- the comparison ---------------------------------------------------------------------------------


def test_equal_rates_with_enough_requests_show_no_difference() -> None:
    c = experiment.compare_rate("errorRate", "control", 250, 5000, 250, 5000)
    assert c.verdict == Verdict.NO_DIFFERENCE and c.samples_needed == 0
    assert c.p_value == 1.0 and c.difference == 0.0
    assert c.difference_low is not None and c.difference_high is not None
    assert c.difference_low < 0 < c.difference_high and c.difference_high - c.difference_low < 0.02


def test_twenty_percent_errors_against_one_percent_is_worse() -> None:
    c = experiment.compare_rate("errorRate", "control", 200, 1000, 10, 1000)
    assert c.verdict == Verdict.WORSE and c.p_value is not None and c.p_value < 1e-6
    assert c.difference == pytest.approx(0.19)
    assert c.difference_low is not None and 0.15 < c.difference_low < 0.19 < (c.difference_high or 0) < 0.23
    # the same table the other way round: the variant is the better one
    better = experiment.compare_rate("errorRate", "control", 10, 1000, 200, 1000)
    assert better.verdict == Verdict.BETTER and better.difference == pytest.approx(-0.19)


def test_too_few_requests_are_inconclusive_and_say_how_many_are_missing() -> None:
    c = experiment.compare_rate("errorRate", "control", 2, 20, 1, 20)
    assert c.verdict == Verdict.INCONCLUSIVE and c.p_value is not None and c.p_value > 0.05
    # 5% baseline, 2 points of effect: ~2,200 per arm (the textbook two-proportion size), 20 in hand
    assert experiment.samples_needed(0.05, 0.02) == pytest.approx(2213, abs=5)
    assert c.samples_needed == experiment.samples_needed(0.05, 0.02) - 20
    # a larger minimum effect needs fewer requests
    assert experiment.compare_rate("errorRate", "c", 2, 20, 1, 20, min_effect=0.2).samples_needed == (
        experiment.samples_needed(0.05, 0.2) - 20
    )
    # no traffic on the variant yet: no test at all, only the size to reach
    empty = experiment.compare_rate("errorRate", "control", 0, 0, 1, 20)
    assert empty.verdict == Verdict.INCONCLUSIVE and empty.p_value is None and empty.samples_needed > 0


def test_with_signals_fills_every_variant_and_compares_all_but_the_baseline() -> None:
    configured = [VariantStatus(name="control", weight=80), VariantStatus(name="v2", weight=20)]
    signals = {
        "control": VariantSignals(
            requests=1000.4,
            errors=10,
            refusals=30,
            policy_hits=4,
            latency_p50_s=0.21,
            latency_p95_s=0.9,
            input_tokens=52000,
            output_tokens=91000.6,
            feedback_count=8,
            feedback_score_sum=6,
        ),
        "v2": VariantSignals(requests=1000, errors=200, refusals=31),
    }
    out = experiment.with_signals(configured, signals)
    control, v2 = out
    assert (control.requests, control.errors, control.error_rate, control.refusal_rate) == (
        1000,
        10,
        0.01,
        0.03,
    )
    assert (control.policy_hits, control.output_tokens, control.feedback_score) == (4, 91001, 0.75)
    assert control.latency_p95_seconds == 0.9 and control.comparisons is None and control.weight == 80
    assert v2.comparisons is not None
    assert [c.metric for c in v2.comparisons] == ["errorRate", "refusalRate"]
    assert [c.verdict for c in v2.comparisons] == [Verdict.WORSE, Verdict.INCONCLUSIVE]
    assert v2.latency_p50_seconds is None and v2.feedback_score is None and v2.feedback_count == 0
    # a variant nobody reached reads as zero requests, compared as "not yet"
    idle = experiment.with_signals([*configured, VariantStatus(name="v3", weight=0)], signals)[2]
    assert idle.requests == 0 and idle.error_rate is None
    assert {c.verdict for c in idle.comparisons or []} == {Verdict.INCONCLUSIVE}


# -- the reconcile ------------------------------------------------------------------------------


def _obj(deployment_obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(deployment_obj)
    obj["spec"] = experiment_spec(obj["spec"])
    obj["metadata"].setdefault("uid", "d-1")
    return obj


def _facts(obj: dict[str, Any], **kw: Any) -> deployment.Facts:
    return deployment.Facts(
        spec=LLMDeploymentSpec.model_validate(obj["spec"]),
        model=MODEL,
        policies=(POLICY,),
        deployment=serving_deployment(),
        **kw,
    )


def _analyzed(plan: Any) -> Any:
    return next(c for c in plan.conditions if c.type == "Analyzed")


def test_decide_fills_status_variants_from_the_signals(deployment_obj: dict[str, Any]) -> None:
    obj = _obj(deployment_obj)
    signals = {
        "control": VariantSignals(requests=1000, errors=10),
        "v2": VariantSignals(requests=1000, errors=200, latency_p95_s=1.5),
    }
    plan = deployment.decide(obj, _facts(obj, variant_signals=signals), PROM, POLL)
    variants = dump(plan.status)["variants"]
    assert [(v["name"], v["servedModel"], v["requests"], v["errorRate"]) for v in variants] == [
        ("control", "support-bot", 1000, 0.01),
        ("v2", "support-bot-v2", 1000, 0.2),
    ]
    comparison = variants[1]["comparisons"][0]
    assert comparison["metric"] == "errorRate" and comparison["baseline"] == "control"
    assert comparison["verdict"] == "Worse" and comparison["pValue"] < 1e-6
    assert variants[1]["latencyP95Seconds"] == 1.5
    analyzed = _analyzed(plan)
    assert (analyzed.status, analyzed.reason) == ("True", "VariantsAnalyzed")
    assert "2000 requests" in analyzed.message and "control" in analyzed.message
    assert plan.requeue_after == 45  # the statistics are read again at the interval


def test_without_prometheus_or_when_it_fails_the_condition_says_so(deployment_obj: dict[str, Any]) -> None:
    obj = _obj(deployment_obj)
    plan = deployment.decide(obj, _facts(obj), Settings(), POLL)
    analyzed = _analyzed(plan)
    assert (analyzed.status, analyzed.reason) == ("False", "PrometheusNotConfigured")
    assert "analysis.prometheus.url" in analyzed.message
    assert plan.requeue_after is None  # nothing to poll for
    assert "requests" not in dump(plan.status)["variants"][0]

    # the last numbers stand while Prometheus is away; the condition says they are not current
    signals = {"control": VariantSignals(requests=100, errors=1), "v2": VariantSignals(requests=90)}
    analyzed_obj = {
        **obj,
        "status": dump(deployment.decide(obj, _facts(obj, variant_signals=signals), PROM, POLL).status),
    }
    error = "Prometheus at http://prometheus.monitoring.svc:9090 is unreachable: ConnectError: refused"
    plan = deployment.decide(analyzed_obj, _facts(obj, analysis_error=error), PROM, POLL)
    analyzed = _analyzed(plan)
    assert (analyzed.status, analyzed.reason) == ("False", "PrometheusUnavailable")
    assert error in analyzed.message and plan.requeue_after == 45
    assert dump(plan.status)["variants"] == analyzed_obj["status"]["variants"]
    assert [v["requests"] for v in analyzed_obj["status"]["variants"]] == [100, 90]

    # no variants: no analysis, no condition
    plain = copy.deepcopy(deployment_obj)
    plan = deployment.decide(plain, _facts(plain), PROM, POLL)
    assert not [c for c in plan.conditions if c.type == "Analyzed"]


def test_observe_reads_at_most_once_per_interval(deployment_obj: dict[str, Any]) -> None:
    """A refused connection (a real one: nothing listens on the port) is reported, and reused until the
    interval passes instead of being retried on every watch event."""
    obj = _obj(deployment_obj)
    spec = LLMDeploymentSpec.model_validate(obj["spec"])
    settings = Settings(prometheus_url=f"http://127.0.0.1:{free_port()}", analysis_interval_seconds=3600)
    ctx = Context(kube=None, settings=settings, store=Store())  # type: ignore[arg-type]

    first = asyncio.run(deployment._variant_signals(ctx, obj, spec, True))
    assert first[0] is None and "unreachable" in first[1]
    assert asyncio.run(deployment._variant_signals(ctx, obj, spec, True)) is first
    ctx.forget(obj["metadata"]["uid"])
    assert asyncio.run(deployment._variant_signals(ctx, obj, spec, True)) is not first
    # no endpoint yet, or no variants: nothing is read
    assert asyncio.run(deployment._variant_signals(ctx, obj, spec, False)) == (None, "")
