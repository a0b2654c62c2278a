"""Per-variant statistics for status.variants, and each variant's comparison against the baseline.

The baseline is the first of spec.variants. For a rate (errors or refusals per request) the test is
Fisher's exact test on the 2x2 table (events / non-events × variant / baseline), two-sided: exact for
the small counts of a young experiment, where a normal approximation misleads. Its companion numbers:

- a 95% confidence interval for the difference of the rates (variant − baseline), Newcombe's hybrid
  score interval from the two Wilson intervals (`scipy.stats.binomtest(...).proportion_ci`), which
  stays inside [-1, 1] and behaves at rates of 0 — what error rates mostly are;
- `samplesNeeded`: requests per arm still missing before a difference of `min_effect` (absolute)
  from the baseline's rate would be detected at alpha 0.05 with power 0.8 — the normal-approximation
  sample size of a two-proportion test, n = (z₁₋α/₂·√(2p̄q̄) + z₁₋β·√(p₀q₀ + p₁q₁))² / δ²;
- a verdict: Better / Worse when the test is significant (lower rates are better), NoDifference when
  it is not and both arms have that many requests, Inconclusive before then.

Pure: numbers in, status models out. Counts are Prometheus window increases (floats); they are rounded
to whole requests here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from scipy.stats import binomtest, fisher_exact, norm

from maestro.api.experiments import VariantComparison, VariantSignals, VariantStatus, Verdict

ALPHA = 0.05
POWER = 0.8
#: Default smallest difference of a rate worth detecting (absolute: 0.02 = two points of error rate).
DEFAULT_MIN_EFFECT = 0.02
#: Significant digits kept in status (a status that changes on every noise digit patches every time).
_DIGITS = 4


def _round(value: float | None, digits: int = _DIGITS) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _count(value: float) -> int:
    return max(0, round(value))


def _wilson(events: int, n: int) -> tuple[float, float]:
    ci = binomtest(events, n).proportion_ci(confidence_level=1 - ALPHA, method="wilson")
    return float(ci.low), float(ci.high)


def samples_needed(baseline_rate: float, min_effect: float) -> int:
    """Requests per arm for a two-sided two-proportion test to detect `baseline_rate ± min_effect`
    (towards 0.5, the harder direction) at ALPHA with POWER."""
    if not 0 < min_effect < 1:
        raise ValueError(f"min_effect must be in (0, 1), got {min_effect}")
    p0 = min(max(baseline_rate, 0.0), 1.0)
    p1 = p0 + min_effect if p0 <= 0.5 else p0 - min_effect
    p1 = min(max(p1, 0.0), 1.0)
    p_bar = (p0 + p1) / 2
    z_a = float(norm.ppf(1 - ALPHA / 2))
    z_b = float(norm.ppf(POWER))
    n = (
        z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    ) ** 2 / min_effect**2
    return math.ceil(n)


def compare_rate(
    metric: str,
    baseline: str,
    events: float,
    requests: float,
    baseline_events: float,
    baseline_requests: float,
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> VariantComparison:
    """One rate of a variant against the baseline's (see the module docstring)."""
    n1, n0 = _count(requests), _count(baseline_requests)
    k1, k0 = min(_count(events), n1), min(_count(baseline_events), n0)
    # the sample size for the baseline's rate as observed (0 while it has no requests)
    needed = samples_needed(k0 / n0 if n0 else 0.0, min_effect)
    missing = max(0, needed - min(n0, n1))
    if n1 == 0 or n0 == 0:
        return VariantComparison(
            metric=metric, baseline=baseline, samples_needed=missing, verdict=Verdict.INCONCLUSIVE
        )
    p1, p0 = k1 / n1, k0 / n0
    _, p_value = fisher_exact([[k1, n1 - k1], [k0, n0 - k0]], alternative="two-sided")
    p_value = min(1.0, float(p_value))
    (l1, u1), (l0, u0) = _wilson(k1, n1), _wilson(k0, n0)
    diff = p1 - p0
    low = diff - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    if p_value < ALPHA:
        verdict = Verdict.WORSE if p1 > p0 else Verdict.BETTER
    elif missing == 0:
        verdict = Verdict.NO_DIFFERENCE
    else:
        verdict = Verdict.INCONCLUSIVE
    return VariantComparison(
        metric=metric,
        baseline=baseline,
        difference=_round(diff),
        difference_low=_round(max(-1.0, low)),
        difference_high=_round(min(1.0, high)),
        p_value=_round(p_value, 3),
        samples_needed=missing,
        verdict=verdict,
    )


def with_signals(
    variants: Sequence[VariantStatus],
    signals: Mapping[str, VariantSignals],
    min_effect: float = DEFAULT_MIN_EFFECT,
) -> list[VariantStatus]:
    """status.variants (as configured) with each variant's numbers over the window and, for every
    variant after the first, its error and refusal rates compared with the first's. A variant
    without traffic reads as zero requests (it is in force, nobody reached it)."""
    if not variants:
        return []
    base_name = variants[0].name
    base = signals.get(base_name, VariantSignals())
    out = []
    for i, v in enumerate(variants):
        s = signals.get(v.name, VariantSignals())
        n = _count(s.requests)
        errors, refusals = min(_count(s.errors), n), min(_count(s.refusals), n)
        comparisons = (
            [
                compare_rate(
                    "errorRate", base_name, s.errors, s.requests, base.errors, base.requests, min_effect
                ),
                compare_rate(
                    "refusalRate", base_name, s.refusals, s.requests, base.refusals, base.requests, min_effect
                ),
            ]
            if i > 0
            else None
        )
        out.append(
            v.model_copy(
                update={
                    "requests": n,
                    "errors": errors,
                    "error_rate": _round(errors / n) if n else None,
                    "refusals": refusals,
                    "refusal_rate": _round(refusals / n) if n else None,
                    "policy_hits": _count(s.policy_hits),
                    "latency_p50_seconds": _round(s.latency_p50_s),
                    "latency_p95_seconds": _round(s.latency_p95_s),
                    "input_tokens": _count(s.input_tokens),
                    "output_tokens": _count(s.output_tokens),
                    "feedback_count": _count(s.feedback_count),
                    "feedback_score": _round(s.feedback_mean),
                    "comparisons": comparisons,
                }
            )
        )
    return out


#: The VariantStatus fields `with_signals` fills (the rest is configuration).
STATISTICS = (
    "requests",
    "errors",
    "error_rate",
    "refusals",
    "refusal_rate",
    "policy_hits",
    "latency_p50_seconds",
    "latency_p95_seconds",
    "input_tokens",
    "output_tokens",
    "feedback_count",
    "feedback_score",
    "comparisons",
)


def keep_statistics(
    variants: Sequence[VariantStatus], previous: Sequence[VariantStatus]
) -> list[VariantStatus]:
    """status.variants as configured, with the numbers last reported for the variants of the same name:
    while Prometheus does not answer, the last statistics stand (the Analyzed condition says they are
    not current) instead of vanishing and coming back with every outage."""
    last = {v.name: v for v in previous}
    out = []
    for v in variants:
        old = last.get(v.name)
        out.append(v.model_copy(update={f: getattr(old, f) for f in STATISTICS}) if old is not None else v)
    return out


def error_rate_p_value(
    stable_errors: float, stable_requests: float, canary_errors: float, canary_requests: float
) -> float:
    """One-sided p-value of "the canary errs more often than the stable" (1.0 without data): the
    canary analysis (maestro.reconcile.rollout) fails a step on a significantly *higher* rate only."""
    sn, cn = _count(stable_requests), _count(canary_requests)
    if sn == 0 or cn == 0:
        return 1.0
    se, ce = min(_count(stable_errors), sn), min(_count(canary_errors), cn)
    _, p = fisher_exact([[ce, cn - ce], [se, sn - se]], alternative="greater")
    return float(p)
