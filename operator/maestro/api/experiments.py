"""Server-side prompts and traffic-split variants of an LLMDeployment (and their guard-config form).

A prompt is configuration, versioned like the model: the guard prepends it to every chat request,
and its content digest (`prompt_digest`) is what status, lineage, audit records and monitor events
carry, so an answer can always be traced to the exact instructions it was produced under. A variant
is one arm of an experiment: a served model (the deployment's own or one of its adapters) × an
optional prompt × optional sampling defaults, with an integer traffic weight in percent. The guard
assigns each caller to one variant by a stable hash, so the same caller keeps its variant.

`GuardPrompt` and `GuardVariant` are the resolved forms the operator writes into the guard's
policy.json (`maestro.api.policy.GuardConfig`): served model names and digests already worked out,
so the guard does no lookups and computes nothing the status could disagree with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from maestro.api.common import SpecModel, StatusModel, cel, unique_keys, validations

#: The placeholder a prompt template wraps the client's text with.
TEMPLATE_PLACEHOLDER = "{{input}}"
#: Longest system prompt or template accepted: large enough for few-shot instructions, small enough
#: that the guard config ConfigMap (1 MiB) holds one per variant.
MAX_PROMPT_CHARS = 32768
#: Most variants one deployment splits traffic over (also bounds the guard's `variant` metric label).
MAX_VARIANTS = 16
#: Total of the weights: weights are integer percents.
TOTAL_WEIGHT = 100

VARIANT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

WEIGHTS_MESSAGE = "spec.variants: the weights must sum to 100"
UNKNOWN_ADAPTER_MESSAGE = "spec.variants[].adapter must name one of spec.adapters[].name"


def prompt_digest(system: str, template: str | None = None) -> str:
    """`sha256:<hex>` of the prompt's content (system text and template; not the version label).

    Canonical JSON, so the digest is the same in the operator (status, lineage) and the guard (audit,
    events) and across releases; it changes exactly when the text the model sees changes.
    """
    doc = {"system": system, "template": template}
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _one_placeholder(template: str | None) -> str | None:
    if template is not None and template.count(TEMPLATE_PLACEHOLDER) != 1:
        raise ValueError(f"prompt.template must contain {TEMPLATE_PLACEHOLDER} exactly once")
    return template


class Prompt(SpecModel):
    """A server-side system prompt (and optional user-message template) the guard applies to chat
    requests. Clients cannot replace it: their own system/developer messages are refused unless the
    governing LLMPolicy sets request.allowClientSystemPrompt."""

    system: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="System message the guard puts first in every chat request's messages.",
    )
    template: Annotated[str | None, AfterValidator(_one_placeholder)] = Field(
        None,
        min_length=len(TEMPLATE_PLACEHOLDER),
        max_length=MAX_PROMPT_CHARS,
        description=f"Wraps the text of every user message: {TEMPLATE_PLACEHOLDER} (exactly once) is "
        "replaced by the client's text. Omitted: user messages pass unchanged.",
        json_schema_extra=validations(
            cel(
                f"size(self.split('{TEMPLATE_PLACEHOLDER}')) == 2",
                f"prompt.template must contain {TEMPLATE_PLACEHOLDER} exactly once",
            )
        ),
    )
    version: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Your label for this prompt (e.g. v3); reported next to the content digest, which "
        "is what identifies the prompt.",
    )

    @property
    def digest(self) -> str:
        return prompt_digest(self.system, self.template)


class SamplingDefaults(SpecModel):
    """Sampling parameters a variant applies when the client's request omits them (a client's own
    value always wins; the policy's maxOutputTokens still caps max_tokens)."""

    temperature: float | None = Field(None, ge=0, le=2, description="Default temperature.")
    top_p: float | None = Field(None, gt=0, le=1, description="Default nucleus-sampling top_p.")
    max_tokens: int | None = Field(None, ge=1, le=1_048_576, description="Default max_tokens.")


class Variant(SpecModel):
    """One arm of a traffic split: which model serves it, with which prompt and sampling defaults."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=VARIANT_NAME_PATTERN,
        description="Variant name (a DNS label): the x-maestro-variant response header, the `variant` "
        "label of the guard's metrics, audit records, monitor events, traces and feedback.",
    )
    adapter: str | None = Field(
        None,
        max_length=128,
        description="Name of one of spec.adapters this variant serves; omitted: the deployment's model.",
    )
    prompt: Prompt | None = Field(None, description="This variant's prompt; omitted: spec.prompt.")
    sampling: SamplingDefaults | None = Field(
        None, description="Sampling defaults applied when the client omits them."
    )
    weight: int = Field(
        ge=0,
        le=TOTAL_WEIGHT,
        description="Share of traffic in percent; the weights of all variants sum to 100 (0 keeps a "
        "variant defined but unused).",
    )


def _unique_variants(variants: list[Variant]) -> list[Variant]:
    return unique_keys("name", "spec.variants")(variants)


#: The `variants` field of LLMDeploymentSpec, with its list semantics (unique names, bounded size).
Variants = Annotated[list[Variant], AfterValidator(_unique_variants)]

VARIANTS_FIELD: Any = Field(
    default_factory=list,
    max_length=MAX_VARIANTS,
    description="Traffic-split variants. The guard assigns each caller (API key, or the user id it "
    "sends) to one variant by a stable hash, so the caller keeps it, and routes requests for the "
    "deployment's model name to the variant's model with its prompt and sampling defaults. Empty: "
    "no split.",
    json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
)

#: CEL rules of LLMDeploymentSpec about its variants (the Python mirror is `check_variants`).
VARIANT_RULES = (
    cel(
        f"!has(self.variants) || size(self.variants) == 0 || "
        f"self.variants.map(v, v.weight).sum() == {TOTAL_WEIGHT}",
        WEIGHTS_MESSAGE,
        field_path=".variants",
    ),
    cel(
        "!has(self.variants) || self.variants.all(v, !has(v.adapter) || "
        "(has(self.adapters) && self.adapters.exists(a, a.name == v.adapter)))",
        UNKNOWN_ADAPTER_MESSAGE,
        field_path=".variants",
    ),
)


def check_variants(variants: list[Variant], adapter_names: set[str]) -> None:
    """Python mirror of VARIANT_RULES; the messages name the field (and here also the variant)."""
    if variants:
        total = sum(v.weight for v in variants)
        if total != TOTAL_WEIGHT:
            raise ValueError(f"{WEIGHTS_MESSAGE} (they sum to {total})")
    for i, v in enumerate(variants):
        if v.adapter is not None and v.adapter not in adapter_names:
            known = ", ".join(sorted(adapter_names)) or "none"
            raise ValueError(
                f"{UNKNOWN_ADAPTER_MESSAGE}: spec.variants[{i}] ({v.name}) names adapter {v.adapter!r} "
                f"(adapters: {known})"
            )


# --- the guard config form ---------------------------------------------------------------------


class GuardPrompt(StatusModel):
    """A prompt as the guard applies it (policy.json), with the digest the operator reports."""

    system: str = Field(description="System message.")
    template: str | None = Field(None, description="User-message template with one {{input}}.")
    version: str | None = Field(None, description="The prompt's version label.")
    digest: str = Field(description="prompt_digest(system, template).")

    @model_validator(mode="after")
    def _consistent(self) -> GuardPrompt:
        _one_placeholder(self.template)
        if self.digest != prompt_digest(self.system, self.template):
            raise ValueError("prompt.digest does not match the prompt's content")
        return self

    @classmethod
    def of(cls, prompt: Prompt) -> GuardPrompt:
        return cls(
            system=prompt.system, template=prompt.template, version=prompt.version, digest=prompt.digest
        )


class GuardVariant(StatusModel):
    """A variant as the guard routes it: the served model name to send upstream, resolved."""

    name: str = Field(description="Variant name.")
    model: str = Field(description="Served model name requests of this variant are sent to.")
    weight: int = Field(ge=0, le=TOTAL_WEIGHT, description="Share of traffic in percent.")
    prompt: GuardPrompt | None = Field(None, description="Its prompt (the deployment's when it has none).")
    sampling: SamplingDefaults | None = Field(None, description="Sampling defaults.")


# --- status --------------------------------------------------------------------------------------


class PromptStatus(StatusModel):
    """The prompt in force."""

    digest: str | None = Field(None, description="sha256 of the prompt's content (system + template).")
    version: str | None = Field(None, description="The prompt's version label, when it has one.")


class Verdict(StrEnum):
    """What a comparison against the baseline variant concludes (lower rates are better)."""

    #: significantly lower rate than the baseline
    BETTER = "Better"
    #: significantly higher rate than the baseline
    WORSE = "Worse"
    #: not significant, with enough requests to have detected the minimum effect
    NO_DIFFERENCE = "NoDifference"
    #: not significant yet, and too few requests to rule the minimum effect out (see samplesNeeded)
    INCONCLUSIVE = "Inconclusive"


class VariantComparison(StatusModel):
    """One rate of a variant against the same rate of the baseline (the first variant): Fisher's exact
    test on the 2x2 table of requests, with a confidence interval for the difference."""

    metric: str = Field(description="The rate compared: errorRate (5xx answers) or refusalRate.")
    baseline: str = Field(description="The variant compared against (the first of spec.variants).")
    difference: float | None = Field(
        None, description="This variant's rate minus the baseline's (negative: fewer errors/refusals)."
    )
    difference_low: float | None = Field(
        None, description="Lower bound of the 95% confidence interval of the difference (Newcombe/Wilson)."
    )
    difference_high: float | None = Field(None, description="Upper bound of that interval.")
    p_value: float | None = Field(
        None, ge=0, le=1, description="Two-sided p-value of Fisher's exact test; unset without requests."
    )
    samples_needed: int | None = Field(
        None,
        ge=0,
        description="Requests still needed in each arm to detect the operator's minimum effect (an "
        "absolute difference of the rate) at alpha 0.05 and power 0.8; 0: enough.",
    )
    verdict: Verdict = Field(description="Better, Worse, NoDifference or Inconclusive.")


class VariantStatus(StatusModel):
    """One variant as configured in the running guards, with its traffic statistics over the analysis
    window when the operator reads a Prometheus (MAESTRO_PROMETHEUS_URL)."""

    name: str = Field(description="Variant name.")
    served_model: str | None = Field(None, description="Served model name its requests go to.")
    weight: int | None = Field(None, ge=0, le=TOTAL_WEIGHT, description="Share of traffic in percent.")
    prompt_digest: str | None = Field(None, description="Digest of the prompt its requests get.")
    requests: int | None = Field(None, ge=0, description="Requests routed to it in the analysis window.")
    errors: int | None = Field(None, ge=0, description="Of those, answered with a 5xx status.")
    error_rate: float | None = Field(None, ge=0, le=1, description="errors / requests.")
    refusals: int | None = Field(None, ge=0, description="Answers the guard classified as refusals.")
    refusal_rate: float | None = Field(None, ge=0, le=1, description="refusals / requests.")
    policy_hits: int | None = Field(
        None, ge=0, description="Requests on which a policy rule blocked, flagged or redacted content."
    )
    latency_p50_seconds: float | None = Field(None, ge=0, description="Median request latency at the guard.")
    latency_p95_seconds: float | None = Field(None, ge=0, description="95th percentile latency.")
    input_tokens: int | None = Field(None, ge=0, description="Prompt tokens, from the upstream's usage.")
    output_tokens: int | None = Field(None, ge=0, description="Completion tokens.")
    feedback_count: int | None = Field(None, ge=0, description="User feedback on its answers.")
    feedback_score: float | None = Field(
        None, ge=0, le=1, description="Mean feedback score (thumbs up 1, down 0; rating 1-5 as 0..1)."
    )
    comparisons: list[VariantComparison] | None = Field(
        None,
        max_length=4,
        description="Its rates against the baseline's (unset on the baseline itself).",
    )


@dataclass(frozen=True)
class VariantSignals:
    """One variant's traffic over an analysis window, as read from Prometheus (maestro.k8s.metrics)
    and turned into status (maestro.status.experiment). Counts are window increases, so they can
    carry a fraction from Prometheus' extrapolation; status rounds them."""

    requests: float = 0.0
    errors: float = 0.0
    refusals: float = 0.0
    policy_hits: float = 0.0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    feedback_count: float = 0.0
    feedback_score_sum: float = 0.0

    @property
    def feedback_mean(self) -> float | None:
        return self.feedback_score_sum / self.feedback_count if self.feedback_count > 0 else None
