"""Progressive rollout of an LLMDeployment's model: canary steps, analysis, promotion, rollback, history.

A revision is what one answer was produced by: model weights (digest/URI, training job, dataset
version), prompt digest, policy digest and the serving image. Every revision the deployment served is
kept in `status.history`. Under `strategy: Canary` a new model (a new training job's LoRA adapter on
the same base model) is served next to the stable one by the same vLLM and the guard sends it a
growing share of traffic (`steps`), while the operator compares the canary's signals (error rate,
policy hits, refusals, latency — read from Prometheus, the series the guard exports per variant) with
the stable's. A step that fails the analysis rolls the canary back; passing the last step promotes
it. Rolling back by hand is one spec change: point `spec.model` at the earlier training job (a git
revert under GitOps); a model that was promoted before is restored at once, without a canary.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from maestro.api.common import SpecModel, StatusModel, cel, validations

#: Revisions kept in status.history (oldest dropped first).
MAX_HISTORY = 20
#: Canary weights are percent of traffic, below 100 (100 is promotion).
MAX_STEP_WEIGHT = 99


class RolloutStrategy(StrEnum):
    REPLACE = "Replace"
    CANARY = "Canary"


class CanaryAnalysis(SpecModel):
    """What a canary step must show before the next step (all rates are fractions of its requests)."""

    min_requests: int = Field(
        50,
        ge=1,
        le=1_000_000,
        description="Requests the canary must have answered in a step before the step is judged.",
    )
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="Highest share of 5xx answers the canary may give."
    )
    max_policy_hit_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Highest share of requests on which a policy rule acted (blocked, flagged, "
        "redacted). Omitted: not a gate.",
    )
    max_refusal_rate: float | None = Field(
        None, ge=0, le=1, description="Highest share of answers that are refusals. Omitted: not a gate."
    )
    max_latency_p95_ratio: float | None = Field(
        None,
        gt=1,
        le=100,
        description="Highest p95 latency of the canary as a multiple of the stable's. Omitted: not a gate.",
    )
    significance: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="A canary whose error rate is higher than the stable's with a p-value below this "
        "(Fisher's exact test) fails, even under maxErrorRate.",
    )


class Rollout(SpecModel):
    """How a change of model reaches traffic."""

    strategy: RolloutStrategy = Field(
        RolloutStrategy.REPLACE,
        description="Replace: the new model replaces the old through a rolling update. Canary: a new "
        "LoRA adapter on the same base model is served next to the stable one and gets `steps` of the "
        "traffic, analysed at each step, then promoted or rolled back (other model changes are "
        "replaced, with reason CanaryUnsupported in the history).",
    )
    steps: list[int] = Field(
        default_factory=lambda: [10, 50],
        min_length=1,
        max_length=10,
        description="Canary traffic weights in percent, ascending, each below 100.",
        json_schema_extra=validations(
            cel(
                f"self.all(w, w >= 1 && w <= {MAX_STEP_WEIGHT})",
                f"rollout.steps: each weight must be between 1 and {MAX_STEP_WEIGHT}",
            ),
            cel(
                "[1, 2, 3, 4, 5, 6, 7, 8, 9].all(i, i >= size(self) || self[i] > self[i - 1])",
                "rollout.steps must be strictly ascending",
            ),
        ),
    )
    step_seconds: int = Field(
        60,
        ge=10,
        le=86_400,
        description="Least time at each step before it is judged (the guards pick a new weight up "
        "within the ConfigMap sync period, about a minute).",
    )
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis, description="What a step must show.")

    @model_validator(mode="after")
    def _ascending(self) -> Rollout:
        if any(not 1 <= w <= MAX_STEP_WEIGHT for w in self.steps):
            raise ValueError(f"rollout.steps: each weight must be between 1 and {MAX_STEP_WEIGHT}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("rollout.steps must be strictly ascending")
        return self


# --- status --------------------------------------------------------------------------------------


class RevisionState(StrEnum):
    #: serving all traffic now
    STABLE = "Stable"
    #: receiving a canary share of traffic
    CANARY = "Canary"
    #: served before, replaced by a later revision
    SUPERSEDED = "Superseded"
    #: a canary that failed its analysis
    ROLLED_BACK = "RolledBack"


class RevisionRecord(StatusModel):
    """One revision the deployment served (or tried to)."""

    revision: int = Field(ge=1, description="Sequence number, 1 for the first.")
    state: RevisionState = Field(description="Stable, Canary, Superseded or RolledBack.")
    reason: str | None = Field(
        None, description="Why it entered that state (Initial, Promoted, Replaced, ...)."
    )
    message: str | None = Field(None, description="Details: the analysis that promoted or rolled it back.")
    model_uri: str | None = Field(None, description="URI of the served weights (or adapter).")
    model_digest: str | None = Field(None, description="sha256 of the weights, from the training job.")
    adapter: bool = Field(False, description="The weights are a LoRA adapter on base_model.")
    lora_rank: int | None = Field(None, description="LoRA rank of the adapter (for vLLM's --max-lora-rank).")
    base_model: str | None = Field(None, description="Base model the adapter applies to.")
    training_job: str | None = Field(None, description="LLMTrainingJob that produced the weights.")
    dataset_version: str | None = Field(None, description="Dataset version the weights were trained on.")
    prompt_digest: str | None = Field(None, description="Digest of the server-side prompt.")
    policy_digest: str | None = Field(None, description="Digest of the LLMPolicy in force.")
    image: str | None = Field(None, description="vLLM image.")
    since: str | None = Field(None, description="When it entered its state (RFC 3339).")


class CanaryStatus(StatusModel):
    """The canary in progress."""

    revision: int = Field(description="Revision under test.")
    stable_revision: int = Field(description="Revision serving the rest of the traffic.")
    step: int = Field(ge=0, description="Index into spec.rollout.steps.")
    weight: int = Field(ge=0, le=100, description="Share of traffic the canary gets now, in percent.")
    step_started: str = Field(description="When this step began (RFC 3339).")
    analysis: str | None = Field(None, description="The latest analysis of this step, in words.")
