"""The rollout decision (maestro.reconcile.rollout): canary steps, promotion, rollback, history."""

from __future__ import annotations

import datetime as dt

import pytest
from scipy.stats import fisher_exact

from maestro.api.conditions import Reason
from maestro.api.experiments import VariantSignals as S
from maestro.api.rollout import CanaryAnalysis, RevisionState, Rollout, RolloutStrategy
from maestro.reconcile import rollout as r

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=dt.UTC)
BASE = "pvc://models/base"


def fisher(se: float, sn: float, ce: float, cn: float) -> float:
    return float(fisher_exact([[ce, cn - ce], [se, sn - se]], alternative="greater")[1])


def adapter(job: str, digest: str, **kw: object) -> r.Candidate:
    return r.Candidate(
        model_uri=f"pvc://{job}/model",
        model_digest=digest,
        adapter=True,
        lora_rank=8,
        base_model=BASE,
        training_job=job,
        **kw,  # type: ignore[arg-type]
    )


CANARY = Rollout(
    strategy=RolloutStrategy.CANARY,
    steps=[10, 50],
    step_seconds=60,
    analysis=CanaryAnalysis(min_requests=50, max_error_rate=0.05),
)


def step(
    plan: r.RolloutPlan | None,
    spec: Rollout | None,
    cand: r.Candidate,
    now: dt.datetime,
    signals: dict[str, S] | None = None,
) -> r.RolloutPlan:
    history = plan.history if plan else []
    canary = plan.canary if plan else None
    return r.decide(spec, cand, history, canary, signals, None, now, fisher)


def healthy(n: float) -> dict[str, S]:
    return {
        r.STABLE: S(requests=9 * n, errors=1),
        r.CANARY: S(requests=n, errors=0),
    }


def test_first_revision_is_stable_and_a_config_change_is_a_new_revision() -> None:
    v1 = adapter("tj-1", "sha256:aaa", prompt_digest="sha256:p1")
    p = step(None, CANARY, v1, T0)
    assert [(h.revision, h.state, h.reason) for h in p.history] == [(1, RevisionState.STABLE, "Initial")]
    assert p.canary is None and p.condition.status == "True"
    # the same inputs again: the same plan, nothing new recorded
    assert step(p, CANARY, v1, T0).history == p.history
    p2 = step(p, CANARY, adapter("tj-1", "sha256:aaa", prompt_digest="sha256:p2"), T0)
    assert [(h.revision, h.state) for h in p2.history] == [
        (1, RevisionState.SUPERSEDED),
        (2, RevisionState.STABLE),
    ]
    assert p2.history[-1].reason == "Configured" and p2.history[-1].prompt_digest == "sha256:p2"


def test_a_healthy_canary_steps_up_and_is_promoted_with_an_event_per_step() -> None:
    v1, v2 = adapter("tj-1", "sha256:aaa"), adapter("tj-2", "sha256:bbb")
    p = step(step(None, CANARY, v1, T0), CANARY, v2, T0)
    assert p.canary is not None and p.canary.weight == 10 and p.canary_record is not None
    assert p.canary_record.revision == 2 and p.stable.revision == 1
    assert [e.reason for e in p.events] == [Reason.CANARY_STARTED]
    assert p.condition.reason == Reason.CANARY_PROGRESSING and p.condition.status == "False"

    # too early and too few requests: hold, no event
    held = step(p, CANARY, v2, T0 + dt.timedelta(seconds=30), healthy(10))
    assert held.canary is not None and held.canary.weight == 10 and not held.events
    assert "waiting for requests: 10 of 50" in (held.canary.analysis or "")
    assert held.requeue_after is not None and held.requeue_after <= r.ANALYSIS_POLL_SECONDS
    # enough requests but the step's time is not over: still hold
    held = step(p, CANARY, v2, T0 + dt.timedelta(seconds=30), healthy(80))
    assert held.canary is not None and held.canary.step == 0 and not held.events

    t1 = T0 + dt.timedelta(seconds=61)
    up = step(p, CANARY, v2, t1, healthy(80))
    assert up.canary is not None and (up.canary.step, up.canary.weight) == (1, 50)
    assert up.canary.step_started == "2026-12-04T12:01:01Z"
    assert [e.reason for e in up.events] == [Reason.CANARY_STEP_ADVANCED]

    done = step(up, CANARY, v2, t1 + dt.timedelta(seconds=61), healthy(400))
    assert done.canary is None and done.canary_record is None
    assert done.stable.revision == 2 and done.stable.reason == "Promoted"
    assert [(h.revision, h.state) for h in done.history] == [
        (1, RevisionState.SUPERSEDED),
        (2, RevisionState.STABLE),
    ]
    assert [e.reason for e in done.events] == [Reason.CANARY_PROMOTED]
    assert done.condition.status == "True"


def test_an_erroring_canary_is_rolled_back_at_once_and_not_retried() -> None:
    v1, v2 = adapter("tj-1", "sha256:aaa"), adapter("tj-2", "sha256:bbb")
    p = step(step(None, CANARY, v1, T0), CANARY, v2, T0)
    bad = {r.STABLE: S(requests=600, errors=1), r.CANARY: S(requests=60, errors=12)}
    # judged as soon as it has minRequests, before the step's time is over
    back = step(p, CANARY, v2, T0 + dt.timedelta(seconds=20), bad)
    assert back.canary is None and back.stable.revision == 1
    assert back.history[-1].state == RevisionState.ROLLED_BACK and back.history[-1].reason == "AnalysisFailed"
    assert "maxErrorRate" in (back.history[-1].message or "")
    assert [e.reason for e in back.events] == [Reason.CANARY_ROLLED_BACK] and back.events[0].warning
    # the spec still names the rolled-back model: the stable keeps serving, nothing restarts
    again = step(back, CANARY, v2, T0 + dt.timedelta(seconds=40))
    assert again.canary is None and again.stable.revision == 1 and not again.events
    assert again.condition.reason == Reason.CANARY_ROLLED_BACK
    assert "point spec.model at another model" in again.condition.message.lower()


def test_a_significantly_worse_error_rate_fails_even_under_the_threshold() -> None:
    v1, v2 = adapter("tj-1", "sha256:aaa"), adapter("tj-2", "sha256:bbb")
    p = step(step(None, CANARY, v1, T0), CANARY, v2, T0)
    # 4% on the canary (under maxErrorRate 5%) vs 0.1% on the stable over thousands: p << 0.05
    worse = {
        r.STABLE: S(requests=9000, errors=9),
        r.CANARY: S(requests=1000, errors=40),
    }
    back = step(p, CANARY, v2, T0 + dt.timedelta(seconds=61), worse)
    assert back.canary is None and "Fisher" in (back.history[-1].message or "")
    # the same rates on small samples are not significant: it steps up
    small = {
        r.STABLE: S(requests=450, errors=1),
        r.CANARY: S(requests=50, errors=1),
    }
    up = step(p, CANARY, v2, T0 + dt.timedelta(seconds=61), small)
    assert up.canary is not None and up.canary.step == 1


def test_policy_hits_and_latency_gates() -> None:
    spec = CANARY.model_copy(
        update={"analysis": CanaryAnalysis(min_requests=50, max_policy_hit_rate=0.1, max_latency_p95_ratio=2)}
    )
    v1, v2 = adapter("tj-1", "sha256:aaa"), adapter("tj-2", "sha256:bbb")
    p = step(step(None, spec, v1, T0), spec, v2, T0)
    blocked = {r.STABLE: S(requests=500), r.CANARY: S(requests=100, policy_hits=30)}
    assert "maxPolicyHitRate" in (step(p, spec, v2, T0, blocked).history[-1].message or "")
    slow = {
        r.STABLE: S(requests=500, latency_p95_s=0.5),
        r.CANARY: S(requests=100, latency_p95_s=1.5),
    }
    assert "p95 latency" in (step(p, spec, v2, T0, slow).history[-1].message or "")


def test_without_signals_the_step_holds_and_says_why() -> None:
    v1, v2 = adapter("tj-1", "sha256:aaa"), adapter("tj-2", "sha256:bbb")
    p = step(step(None, CANARY, v1, T0), CANARY, v2, T0)
    held = r.decide(
        CANARY,
        v2,
        p.history,
        p.canary,
        None,
        "PrometheusUnavailable: refused",
        T0 + dt.timedelta(hours=1),
        fisher,
    )
    assert held.canary is not None and held.canary.step == 0
    assert "PrometheusUnavailable" in (held.canary.analysis or "")


def test_rolling_back_by_hand_restores_at_once_and_a_spec_change_aborts_a_canary() -> None:
    v1, v2, v3 = (adapter(f"tj-{i}", f"sha256:{c * 3}") for i, c in ((1, "a"), (2, "b"), (3, "c")))
    p = step(step(None, CANARY, v1, T0), CANARY, v2, T0)
    p = step(p, CANARY, v2, T0 + dt.timedelta(seconds=61), healthy(80))
    p = step(p, CANARY, v2, T0 + dt.timedelta(seconds=130), healthy(400))
    assert p.stable.revision == 2
    # kubectl patch / git revert spec.model back to tj-1: restored without a canary
    back = step(p, CANARY, v1, T0 + dt.timedelta(seconds=200))
    assert back.canary is None and back.stable.revision == 3 and back.stable.reason == "Restored"
    assert back.stable.training_job == "tj-1"
    assert [e.reason for e in back.events] == [Reason.REVISION_RESTORED]
    # a canary of tj-3, then the spec moves on to... tj-1 again (the stable): the canary is aborted
    c = step(back, CANARY, v3, T0 + dt.timedelta(seconds=300))
    assert c.canary is not None and c.canary.revision == 4
    stop = step(c, CANARY, v1, T0 + dt.timedelta(seconds=310))
    assert stop.canary is None and stop.stable.revision == 3
    assert stop.history[-1].reason == "Aborted" and [e.reason for e in stop.events] == [Reason.CANARY_ABORTED]
    # an aborted canary may be tried again
    assert step(stop, CANARY, v3, T0 + dt.timedelta(seconds=320)).canary is not None


def test_replace_and_unsupported_changes_replace_the_model() -> None:
    v1, v2 = adapter("tj-1", "sha256:aaa"), adapter("tj-2", "sha256:bbb")
    p = step(step(None, None, v1, T0), None, v2, T0)
    assert p.canary is None and p.stable.revision == 2 and p.stable.reason == "Replaced"
    full = r.Candidate(model_uri="pvc://tj-3/model", model_digest="sha256:ccc", training_job="tj-3")
    u = step(p, CANARY, full, T0)
    assert u.canary is None and u.stable.reason == "CanaryUnsupported"
    assert [e.reason for e in u.events] == [Reason.CANARY_UNSUPPORTED]
    other_base = r.Candidate(
        model_uri="pvc://x/m", model_digest="sha256:ddd", adapter=True, base_model="pvc://other"
    )
    assert "base model" in (step(p, CANARY, other_base, T0).stable.message or "")


def test_history_is_bounded_and_keeps_the_live_revisions() -> None:
    p = step(None, None, adapter("tj-0", "sha256:0"), T0)
    for i in range(1, 40):
        p = step(p, None, adapter(f"tj-{i}", f"sha256:{i}"), T0)
    assert len(p.history) == 20 and p.history[-1].revision == 40
    assert p.history[-1].state == RevisionState.STABLE


def test_the_operators_test_is_one_sided_fisher_on_whole_requests() -> None:
    from maestro.status.experiment import error_rate_p_value

    assert error_rate_p_value(9, 9000, 40, 1000) < 1e-12  # the canary errs more: significant
    assert error_rate_p_value(40, 1000, 9, 9000) == pytest.approx(1.0)  # fewer errors: never "worse"
    assert error_rate_p_value(1.4, 450.2, 1, 50) == pytest.approx(fisher(1, 450, 1, 50))  # rounded
    assert error_rate_p_value(0, 0, 5, 10) == 1.0 and error_rate_p_value(3, 10, 0, 0) == 1.0
