"""The rollout decision of an LLMDeployment (pure): which revision serves, the canary's step, the history.

Inputs are what the spec asks for now (a `Candidate`), what status remembers (`status.history`,
`status.canary`) and, while a canary runs, the two arms' signals over the current step (read from
Prometheus by the observer). The output says what to serve (the stable revision, and the canary with
its weight) and what to record, with one Event per transition. Everything is level-based: the same
inputs give the same plan, and a reconcile that loses its status patch decides the same thing again.

Why the stable revision is remembered in status and not re-resolved: after `spec.model` moves to a
new training job, status.history is the only place that still knows which adapter served before.
A lost status degrades to "the spec's model is stable" — no canary, never a wrong model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from maestro.api.conditions import ConditionType, Reason
from maestro.api.experiments import VariantSignals
from maestro.api.rollout import (
    MAX_HISTORY,
    CanaryAnalysis,
    CanaryStatus,
    RevisionRecord,
    RevisionState,
    Rollout,
    RolloutStrategy,
)
from maestro.status.conditions import Cond, cond, now_rfc3339

#: Variant names the guard routes a canary under (the `variant` label of the per-variant series).
STABLE, CANARY = "stable", "canary"
#: Suffix of the canary adapter's served model name, next to the stable one.
CANARY_SUFFIX = "-canary"
#: Re-analyse a step at most this often while waiting for requests or time.
ANALYSIS_POLL_SECONDS = 15.0


@dataclass(frozen=True)
class Candidate:
    """The revision the spec resolves to now."""

    model_uri: str
    model_digest: str | None = None
    adapter: bool = False
    lora_rank: int | None = None
    base_model: str | None = None
    training_job: str | None = None
    dataset_version: str | None = None
    prompt_digest: str | None = None
    policy_digest: str | None = None
    image: str | None = None

    def record(
        self, revision: int, state: RevisionState, reason: str, message: str, now: str
    ) -> RevisionRecord:
        return RevisionRecord(
            revision=revision,
            state=state,
            reason=reason,
            message=message,
            model_uri=self.model_uri,
            model_digest=self.model_digest,
            adapter=self.adapter,
            lora_rank=self.lora_rank,
            base_model=self.base_model,
            training_job=self.training_job,
            dataset_version=self.dataset_version,
            prompt_digest=self.prompt_digest,
            policy_digest=self.policy_digest,
            image=self.image,
            since=now,
        )


#: (stable errors, stable requests, canary errors, canary requests) -> one-sided p-value that the
#: canary's error rate is higher (the statistics live in maestro.status; injected to keep this pure).
ErrorTest = Callable[[float, float, float, float], float]


@dataclass
class RolloutPlan:
    history: list[RevisionRecord]
    canary: CanaryStatus | None
    #: The revision serving (100 - canary weight)% of traffic.
    stable: RevisionRecord
    #: The canary revision and its weight, while one runs.
    canary_record: RevisionRecord | None
    condition: Cond
    events: list[Cond] = field(default_factory=list)
    requeue_after: float | None = None
    #: The window the signals should cover at the next analysis (seconds since the step began).
    window_seconds: float | None = None

    @property
    def weight(self) -> int:
        return self.canary.weight if self.canary is not None else 0


def same_model(a: RevisionRecord | Candidate, b: RevisionRecord | Candidate) -> bool:
    """Same weights: the digest when both know it, else the URI."""
    if a.model_digest and b.model_digest:
        return a.model_digest == b.model_digest
    return a.model_uri == b.model_uri


def same_config(a: RevisionRecord, b: Candidate) -> bool:
    return (a.prompt_digest, a.policy_digest, a.image) == (b.prompt_digest, b.policy_digest, b.image)


def _event(reason: Reason, message: str, ok: bool = True) -> Cond:
    return cond(ConditionType.ROLLED_OUT, ok, reason, message)


def parse_time(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    try:
        return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _describe(r: RevisionRecord | Candidate) -> str:
    what = (r.training_job and f"training job {r.training_job}") or r.model_uri
    digest = f" ({r.model_digest[:19]})" if r.model_digest else ""
    return f"{what}{digest}"


def _supersede(history: list[RevisionRecord], now: str, keep: int | None = None) -> list[RevisionRecord]:
    out = []
    for r in history:
        if r.state == RevisionState.STABLE and r.revision != keep:
            r = r.model_copy(update={"state": RevisionState.SUPERSEDED, "since": now})
        out.append(r)
    return out


def _mark(
    history: list[RevisionRecord],
    revision: int,
    state: RevisionState,
    reason: str,
    message: str | None,
    ts: str,
) -> list[RevisionRecord]:
    """`history` with one revision moved to `state`."""
    update = {"state": state, "reason": reason, "since": ts}
    if message is not None:
        update["message"] = message
    return [r.model_copy(update=update) if r.revision == revision else r for r in history]


def _trim(history: list[RevisionRecord]) -> list[RevisionRecord]:
    live = {RevisionState.STABLE, RevisionState.CANARY}
    while len(history) > MAX_HISTORY:
        drop = next((r for r in history if r.state not in live), None)
        if drop is None:
            break
        history = [r for r in history if r is not drop]
    return history


def _settled(history: list[RevisionRecord], stable: RevisionRecord, events: list[Cond]) -> RolloutPlan:
    return RolloutPlan(
        history=_trim(history),
        canary=None,
        stable=stable,
        canary_record=None,
        condition=_event(
            Reason.SUCCEEDED, f"revision {stable.revision} ({_describe(stable)}) serves all traffic"
        ),
        events=events,
    )


def decide(
    rollout: Rollout | None,
    cand: Candidate,
    history: list[RevisionRecord],
    canary: CanaryStatus | None,
    signals: dict[str, VariantSignals] | None,
    signals_error: str | None,
    now: dt.datetime,
    error_test: ErrorTest,
    unavailable: str | None = None,
) -> RolloutPlan:
    """The rollout plan; see the module docstring. `unavailable` says why the pods that serve the
    canary cannot start (a crash loop: e.g. vLLM refusing a broken adapter): the canary is rolled back
    at once, which puts the stable's pod template back."""
    ts = now_rfc3339(now)
    spec = rollout or Rollout()
    history = list(history)
    next_rev = max((r.revision for r in history), default=0) + 1
    stable = next((r for r in reversed(history) if r.state == RevisionState.STABLE), None)
    if stable is None:
        first = cand.record(next_rev, RevisionState.STABLE, "Initial", "first revision served", ts)
        return _settled([*history, first], first, [])

    running = (
        next((r for r in history if r.revision == canary.revision and r.state == RevisionState.CANARY), None)
        if canary is not None
        else None
    )
    if running is not None and canary is not None:
        if same_model(running, cand):
            if unavailable:
                return _roll_back(history, stable, running, canary, "Unavailable", unavailable, ts)
            return _analyse(spec, history, stable, running, canary, signals, signals_error, now, error_test)
        # the spec moved while the canary ran: stop it (back to the stable, or on to a newer model)
        msg = f"spec.model changed during the canary of revision {running.revision}; it was stopped"
        history = _mark(history, running.revision, RevisionState.ROLLED_BACK, "Aborted", msg, ts)
        aborted = [_event(Reason.CANARY_ABORTED, msg, ok=False)]
        return _start(spec, cand, history, stable, next_rev, ts, aborted)
    # a Canary record without status.canary (status lost half-way): treat it as rolled back
    history = [
        r.model_copy(update={"state": RevisionState.ROLLED_BACK, "reason": "Aborted", "since": ts})
        if r.state == RevisionState.CANARY
        else r
        for r in history
    ]
    return _start(spec, cand, history, stable, next_rev, ts, [])


def _start(
    spec: Rollout,
    cand: Candidate,
    history: list[RevisionRecord],
    stable: RevisionRecord,
    next_rev: int,
    ts: str,
    events: list[Cond],
) -> RolloutPlan:
    """No canary runs: keep the stable, record a configuration change, restore, replace or canary."""
    if same_model(stable, cand):
        if same_config(stable, cand):
            return _settled(history, stable, events)
        rec = cand.record(next_rev, RevisionState.STABLE, "Configured", "prompt, policy or image changed", ts)
        return _settled([*_supersede(history, ts), rec], rec, events)
    failed = next(
        (r for r in reversed(history) if r.state == RevisionState.ROLLED_BACK and same_model(r, cand)), None
    )
    if failed is not None and failed.reason != "Aborted":
        msg = (
            f"revision {failed.revision} ({_describe(failed)}) was rolled back: {failed.message}; revision "
            f"{stable.revision} keeps serving. Point spec.model at another model (or back at "
            f"{_describe(stable)}) to roll out again"
        )
        return RolloutPlan(
            history=_trim(history),
            canary=None,
            stable=stable,
            canary_record=None,
            condition=_event(Reason.CANARY_ROLLED_BACK, msg, ok=False),
            events=events,
        )
    earlier = next(
        (r for r in reversed(history) if r.state == RevisionState.SUPERSEDED and same_model(r, cand)), None
    )
    if earlier is not None:
        msg = f"the model of revision {earlier.revision} ({_describe(earlier)}) restored at once"
        rec = cand.record(next_rev, RevisionState.STABLE, "Restored", msg, ts)
        return _settled(
            [*_supersede(history, ts), rec],
            rec,
            [*events, _event(Reason.REVISION_RESTORED, f"revision {next_rev}: {msg}")],
        )
    if spec.strategy == RolloutStrategy.CANARY:
        why = _canary_unsupported(stable, cand)
        if why is None:
            rec = cand.record(next_rev, RevisionState.CANARY, "CanaryStarted", "", ts)
            weight = spec.steps[0]
            status = CanaryStatus(
                revision=next_rev,
                stable_revision=stable.revision,
                step=0,
                weight=weight,
                step_started=ts,
                analysis="step started",
            )
            msg = (
                f"revision {next_rev} ({_describe(cand)}) gets {weight}% of traffic "
                f"(step 1/{len(spec.steps)}); revision {stable.revision} serves the rest"
            )
            return RolloutPlan(
                history=_trim([*history, rec]),
                canary=status,
                stable=stable,
                canary_record=rec,
                condition=_event(Reason.CANARY_PROGRESSING, msg, ok=False),
                events=[*events, _event(Reason.CANARY_STARTED, msg, ok=False)],
                requeue_after=float(spec.step_seconds),
                window_seconds=float(spec.step_seconds),
            )
        rec = cand.record(next_rev, RevisionState.STABLE, "CanaryUnsupported", why, ts)
        return _settled(
            [*_supersede(history, ts), rec],
            rec,
            [*events, _event(Reason.CANARY_UNSUPPORTED, f"revision {next_rev} replaced the model: {why}")],
        )
    rec = cand.record(next_rev, RevisionState.STABLE, "Replaced", f"replaced revision {stable.revision}", ts)
    return _settled([*_supersede(history, ts), rec], rec, events)


def _canary_unsupported(stable: RevisionRecord, cand: Candidate) -> str | None:
    """Why the same vLLM cannot serve both (None: it can)."""
    if not (cand.adapter and stable.adapter):
        return "a canary needs both the stable and the new model to be LoRA adapters (one vLLM serves both)"
    if cand.base_model != stable.base_model:
        return (
            f"the new adapter's base model ({cand.base_model}) differs from the stable's "
            f"({stable.base_model})"
        )
    return None


def _verdict(
    a: CanaryAnalysis, stable: VariantSignals, canary: VariantSignals, error_test: ErrorTest
) -> tuple[bool, str]:
    """(failed, what the analysis saw)."""
    n = canary.requests
    err = canary.errors / n
    seen = [f"canary {n:.0f} requests, error rate {err:.3f}"]
    bad: list[str] = []
    if err > a.max_error_rate:
        bad.append(f"error rate {err:.3f} above maxErrorRate {a.max_error_rate}")
    if stable.requests > 0:
        p = error_test(stable.errors, stable.requests, canary.errors, canary.requests)
        seen.append(f"stable error rate {stable.errors / stable.requests:.3f}, p={p:.3g}")
        if p < a.significance and err > stable.errors / stable.requests:
            bad.append(f"error rate higher than the stable's (Fisher p={p:.3g} < {a.significance})")
    if a.max_policy_hit_rate is not None and canary.policy_hits / n > a.max_policy_hit_rate:
        bad.append(
            f"policy-hit rate {canary.policy_hits / n:.3f} above maxPolicyHitRate {a.max_policy_hit_rate}"
        )
    if a.max_refusal_rate is not None and canary.refusals / n > a.max_refusal_rate:
        bad.append(f"refusal rate {canary.refusals / n:.3f} above maxRefusalRate {a.max_refusal_rate}")
    if (
        a.max_latency_p95_ratio is not None
        and canary.latency_p95_s is not None
        and stable.latency_p95_s
        and canary.latency_p95_s > a.max_latency_p95_ratio * stable.latency_p95_s
    ):
        bad.append(
            f"p95 latency {canary.latency_p95_s:.3f}s above {a.max_latency_p95_ratio}x the stable's "
            f"{stable.latency_p95_s:.3f}s"
        )
    return bool(bad), "; ".join(bad) if bad else ", ".join(seen)


def _roll_back(
    history: list[RevisionRecord],
    stable: RevisionRecord,
    running: RevisionRecord,
    canary: CanaryStatus,
    reason: str,
    why: str,
    ts: str,
) -> RolloutPlan:
    msg = f"revision {running.revision} rolled back at {canary.weight}% (step {canary.step + 1}): {why}"
    history = _mark(history, running.revision, RevisionState.ROLLED_BACK, reason, why, ts)
    return RolloutPlan(
        history=_trim(history),
        canary=None,
        stable=stable,
        canary_record=None,
        condition=_event(Reason.CANARY_ROLLED_BACK, msg, ok=False),
        events=[_event(Reason.CANARY_ROLLED_BACK, msg, ok=False)],
    )


def _analyse(
    spec: Rollout,
    history: list[RevisionRecord],
    stable: RevisionRecord,
    running: RevisionRecord,
    canary: CanaryStatus,
    signals: dict[str, VariantSignals] | None,
    signals_error: str | None,
    now: dt.datetime,
    error_test: ErrorTest,
) -> RolloutPlan:
    ts = now_rfc3339(now)
    started = parse_time(canary.step_started) or now
    elapsed = max(0.0, (now - started).total_seconds())
    step = min(canary.step, len(spec.steps) - 1)
    of = f"step {step + 1}/{len(spec.steps)} at {canary.weight}%"

    def hold(analysis: str) -> RolloutPlan:
        left = spec.step_seconds - elapsed
        msg = f"revision {running.revision} canary, {of}: {analysis}"
        return RolloutPlan(
            history=history,
            canary=canary.model_copy(update={"analysis": analysis}),
            stable=stable,
            canary_record=running,
            condition=_event(Reason.CANARY_PROGRESSING, msg, ok=False),
            requeue_after=max(1.0, min(ANALYSIS_POLL_SECONDS, left)) if left > 0 else ANALYSIS_POLL_SECONDS,
            window_seconds=max(elapsed, 1.0),
        )

    arm = (signals or {}).get(CANARY)
    if arm is None or arm.requests < spec.analysis.min_requests:
        if signals is None:
            return hold(f"no signals yet ({signals_error or 'Prometheus not configured'}); holding the step")
        got = 0 if arm is None else arm.requests
        return hold(f"waiting for requests: {got:.0f} of {spec.analysis.min_requests} in this step")
    base = (signals or {}).get(STABLE) or VariantSignals()
    failed, seen = _verdict(spec.analysis, base, arm, error_test)
    if failed:
        return _roll_back(history, stable, running, canary, "AnalysisFailed", seen, ts)
    if elapsed < spec.step_seconds:
        return hold(f"passing so far ({seen}); {spec.step_seconds - elapsed:.0f}s left in the step")
    if step + 1 < len(spec.steps):
        weight = spec.steps[step + 1]
        msg = (
            f"revision {running.revision} passed {of} ({seen}); now {weight}% "
            f"(step {step + 2}/{len(spec.steps)})"
        )
        return RolloutPlan(
            history=history,
            canary=canary.model_copy(
                update={"step": step + 1, "weight": weight, "step_started": ts, "analysis": "step started"}
            ),
            stable=stable,
            canary_record=running,
            condition=_event(Reason.CANARY_PROGRESSING, msg, ok=False),
            events=[_event(Reason.CANARY_STEP_ADVANCED, msg, ok=False)],
            requeue_after=float(spec.step_seconds),
            window_seconds=float(spec.step_seconds),
        )
    msg = f"revision {running.revision} ({_describe(running)}) promoted after {of}: {seen}"
    promoted = running.model_copy(
        update={"state": RevisionState.STABLE, "reason": "Promoted", "message": seen, "since": ts}
    )
    history = [promoted if r.revision == running.revision else r for r in _supersede(history, ts)]
    plan = _settled(history, promoted, [_event(Reason.CANARY_PROMOTED, msg)])
    return plan
