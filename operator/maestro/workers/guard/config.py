"""The guard's policy: the operator-rendered JSON, validated with the API's models, compiled once.

The file is a `maestro.api.policy.GuardConfig` (builders/guard_config.py renders it from the
LLMPolicy), so it is read back with the very models the CRD is generated from: every default lives
in one place, the API model's `Field`. `Policy.compile` then precomputes what the hot path needs:
regexes combined into one pattern, allow-lists turned into frozensets, timeouts into floats, and each
key's effective limits and model access into one `Access`. A request takes a reference to the current
`Policy` at its start and keeps it to the end, so a reload never changes the rules under an in-flight
stream. A bad update raises `PolicyError` naming the field; the watcher keeps the last good policy.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from maestro.api.policy import AuditPolicy, GuardConfig, InjectionFamily, LimitsBackendMode, RequestPolicy
from maestro.workers.guard.errors import GuardError
from maestro.workers.guard.variants import Routing, compile_routing

log = logging.getLogger("maestro.guard")


class PolicyError(ValueError):
    """The policy file is not usable; the message names the offending field."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Per-key overrides as declared in `request.auth.keys[]`; None means "use the policy default"."""

    id: str
    allowed_models: frozenset[str] | None
    requests_per_minute: int | None
    tokens_per_minute: int | None


@dataclass(frozen=True, slots=True)
class Access:
    """What one API key may do under a policy, resolved once at compile time.

    The single answer to "which limits and which models for this key": the inference routes admit
    and check the requested model with it, `/v1/models` filters its listing with it, and the token
    budget is charged against its `tokens_per_minute`. A key's own limit replaces the policy's; its
    model list narrows the policy's (a model must be in both).
    """

    requests_per_minute: int | None
    tokens_per_minute: int | None
    #: the policy's `allowedModels`; None allows every served model
    policy_models: frozenset[str] | None
    #: the key's own `allowedModels`; None allows the policy's
    key_models: frozenset[str] | None

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def check_model(self, key: str, model: str) -> None:
        """Raise the 403 for a model this key may not use (the policy's list is checked first)."""
        if self.policy_models is not None and model not in self.policy_models:
            raise GuardError(
                403,
                f"Model {model!r} is not allowed on this endpoint.",
                "model_not_allowed",
                param="model",
                rule="allowedModels",
            )
        if self.key_models is not None and model not in self.key_models:
            raise GuardError(
                403,
                f"Key {key!r} may not use model {model!r}.",
                "model_not_allowed",
                param="model",
                rule="auth.keys.allowedModels",
            )

    def lists(self, model_id: Any) -> bool:
        """Whether `/v1/models` shows this model id to the key."""
        return (self.policy_models is None or model_id in self.policy_models) and (
            self.key_models is None or model_id in self.key_models
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """The compiled request rules. Build it with `Policy.compile` (or `parse_policy` from the file)."""

    name: str
    digest: str
    #: False when no policy file exists: pass-through, auth off.
    present: bool
    auth_required: bool
    keys: dict[str, KeySpec]
    requests_per_minute: int | None
    tokens_per_minute: int | None
    #: `rateLimits.backendUnavailable: failClosed`: refuse limited keys while the shared store is down.
    limits_fail_closed: bool
    pii_input: str
    pii_output: str
    #: Entity names to act on; None = every entity the detector knows.
    pii_entities: frozenset[str] | None
    #: `request.injection`: "off", "flag" or "block"; the detector's threshold; the detector family
    #: names acted on (None = all); whether system/developer messages are checked too.
    injection_mode: str
    injection_threshold: float
    injection_families: frozenset[str] | None
    injection_scan_system: bool
    #: Blocked terms and patterns, combined into one pattern (named groups say which rule fired).
    blocked: re.Pattern[str] | None
    blocked_rules: tuple[str, ...]
    max_input_tokens: int | None
    max_output_tokens: int | None
    max_request_bytes: int
    allowed_models: frozenset[str] | None
    output_mode: str
    window_chars: int
    window_overlap: int
    connect_timeout_s: float
    read_timeout_s: float
    audit_enabled: bool
    log_prompts: bool
    served_model_name: str | None
    #: `Access` of every key the policy lists; all other keys (and anonymous callers) get `default_access`.
    grants: dict[str, Access]
    default_access: Access
    #: `request.explain`: /v1/explain on or off, its methods (first = default) and size caps.
    explain_enabled: bool
    explain_methods: tuple[str, ...]
    explain_max_segments: int
    explain_max_samples: int
    #: `request.allowClientSystemPrompt`: clients may add system messages after a server-side prompt.
    allow_client_system_prompt: bool
    #: The deployment's server-side prompt and variants (`variants.Routing`); None: neither.
    routing: Routing | None
    #: The model server computes prompt log-probabilities safely (GuardConfig.prompt_logprobs).
    prompt_logprobs: bool = True

    @classmethod
    def compile(
        cls,
        request: RequestPolicy,
        audit: AuditPolicy,
        *,
        name: str = "",
        digest: str = "",
        served_model_name: str | None = None,
        present: bool = True,
        routing: Routing | None = None,
        prompt_logprobs: bool = True,
    ) -> Policy:
        """The runtime form of an LLMPolicy's request and audit rules (already validated models).

        Raises `PolicyError` only for what the models cannot see: blocked patterns that are valid one
        by one but cannot be combined into one alternation.
        """
        auth = request.auth
        keys = {
            k.id: KeySpec(
                id=k.id,
                allowed_models=frozenset(k.allowed_models) or None,
                requests_per_minute=k.requests_per_minute,
                tokens_per_minute=k.tokens_per_minute,
            )
            for k in (auth.keys if auth is not None else ())
        }
        limits = request.rate_limits
        allowed = frozenset(request.allowed_models) or None
        default_access = Access(limits.requests_per_minute, limits.tokens_per_minute, allowed, None)
        grants = {
            kid: Access(
                k.requests_per_minute if k.requests_per_minute is not None else limits.requests_per_minute,
                k.tokens_per_minute if k.tokens_per_minute is not None else limits.tokens_per_minute,
                allowed,
                k.allowed_models,
            )
            for kid, k in keys.items()
        }
        blocked, blocked_rules = compile_blocked(request.blocked_terms, request.blocked_patterns)
        pii = request.pii
        return cls(
            name=name,
            digest=digest,
            present=present,
            # no `auth` block = open endpoint (as the CRD documents); with one, `required` decides
            auth_required=auth is not None and auth.required,
            keys=keys,
            requests_per_minute=limits.requests_per_minute,
            tokens_per_minute=limits.tokens_per_minute,
            limits_fail_closed=limits.backend_unavailable == LimitsBackendMode.FAIL_CLOSED,
            pii_input=pii.input.value,
            pii_output=pii.output.value,
            pii_entities=frozenset(e.value for e in pii.entities) or None,
            injection_mode=request.injection.mode.value,
            injection_threshold=request.injection.threshold,
            injection_families=frozenset(INJECTION_FAMILIES[f] for f in request.injection.families) or None,
            injection_scan_system=request.injection.scan_system_prompt,
            blocked=blocked,
            blocked_rules=blocked_rules,
            max_input_tokens=request.max_input_tokens,
            max_output_tokens=request.max_output_tokens,
            max_request_bytes=request.max_request_bytes,
            allowed_models=allowed,
            output_mode=request.streaming_output_mode.value,
            window_chars=request.output_window.chars,
            window_overlap=request.output_window.overlap,
            connect_timeout_s=float(request.timeouts.connect_seconds),
            read_timeout_s=float(request.timeouts.read_seconds),
            audit_enabled=audit.enabled,
            log_prompts=audit.log_prompts,
            served_model_name=served_model_name or None,
            grants=grants,
            default_access=default_access,
            explain_enabled=request.explain.enabled,
            explain_methods=tuple(m.value for m in request.explain.methods),
            explain_max_segments=request.explain.max_segments,
            explain_max_samples=request.explain.max_samples,
            allow_client_system_prompt=request.allow_client_system_prompt,
            routing=routing,
            prompt_logprobs=prompt_logprobs,
        )

    @property
    def output_checks(self) -> bool:
        """Whether responses must be scanned at all (if not, streams pass through untouched)."""
        return self.pii_output != "allow" or self.blocked is not None

    def access(self, key_id: str) -> Access:
        """The limits and model access of one key (see `Access`)."""
        return self.grants.get(key_id, self.default_access)


#: The API's family names (camelCase, as in the CRD) -> the detector's (`maestro.text.injection`).
INJECTION_FAMILIES: dict[InjectionFamily, str] = {
    InjectionFamily.INSTRUCTION_OVERRIDE: "instruction_override",
    InjectionFamily.ROLEPLAY_JAILBREAK: "roleplay_jailbreak",
    InjectionFamily.PROMPT_EXTRACTION: "prompt_extraction",
    InjectionFamily.EMBEDDED_INJECTION: "embedded_injection",
    InjectionFamily.ENCODED: "encoded",
}
#: ... and back, for the rule names of decisions and metrics (`injection.promptExtraction`).
INJECTION_RULES: dict[str, str] = {v: f"injection.{k.value}" for k, v in INJECTION_FAMILIES.items()}


def compile_blocked(terms: list[str], patterns: list[str]) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    """One case-insensitive pattern for all blocked terms and patterns: a single scan per text.

    Terms match as whole words where they start/end with a word character (so "ass" does not hit
    "class"); each alternative is a named group `r<i>` whose index maps back to the rule. Each
    pattern was already checked on its own by the API model.
    """
    parts: list[str] = []
    rules: list[str] = []
    for i, term in enumerate(terms):
        body = re.escape(term)
        if term[0].isalnum() or term[0] == "_":
            body = r"\b" + body
        if term[-1].isalnum() or term[-1] == "_":
            body += r"\b"
        parts.append(body)
        rules.append(f"blockedTerms[{i}]")
    for i, pattern in enumerate(patterns):
        parts.append(pattern)
        rules.append(f"blockedPatterns[{i}]")
    if not parts:
        return None, ()
    combined = "|".join(f"(?P<r{i}>{p})" for i, p in enumerate(parts))
    try:
        return re.compile(combined, re.IGNORECASE), tuple(rules)
    except re.error as exc:  # e.g. the same group name in two patterns
        raise PolicyError(f"request.blockedPatterns: patterns cannot be combined: {exc}") from None


#: The "no policy file" policy: a loud pass-through (audit as the API defaults it).
NO_POLICY = Policy.compile(RequestPolicy.pass_through(), AuditPolicy(), present=False)


def parse_policy(doc: Any) -> Policy:
    """Validate the guard config document with the API models, then compile it; errors name the field."""
    if not isinstance(doc, dict):
        raise PolicyError(f"policy document: expected a JSON object, got {type(doc).__name__}")
    try:
        cfg = GuardConfig.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "policy"
        raise PolicyError(f"{loc}: {err['msg']}") from None
    try:
        routing = compile_routing(cfg.served_model_name, cfg.prompt, cfg.variants, cfg.routing_salt)
    except ValueError as exc:
        raise PolicyError(str(exc)) from None
    return Policy.compile(
        cfg.request,
        cfg.audit,
        name=cfg.name,
        digest=cfg.digest,
        served_model_name=cfg.served_model_name,
        routing=routing,
        prompt_logprobs=cfg.prompt_logprobs,
    )


def load_policy(path: str | Path) -> Policy:
    """Read and parse the policy file. A missing file is `NO_POLICY`; anything else bad raises."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return NO_POLICY
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise PolicyError(f"{path}: not valid JSON: {exc}") from None
    return parse_policy(doc)


def file_signature(path: str | Path) -> tuple[int, int, int] | None:
    """(inode, mtime_ns, size) of the file behind any symlinks; ConfigMap updates swap the `..data` link."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
