"""The guard's policy: parse the operator-rendered JSON once into an immutable, precompiled `Policy`.

Everything the hot path needs is computed here, at load time: regexes combined into one pattern,
allow-lists turned into frozensets, timeouts into floats. A request takes a reference to
the current `Policy` at its start and keeps it to the end, so a reload never changes the rules under
an in-flight stream. A bad update raises `PolicyError` naming the field; the watcher keeps the last
good policy.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("maestro.guard")

PII_ACTIONS = ("redact", "block", "allow")
OUTPUT_MODES = ("window", "buffer", "audit")
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
DEFAULT_CONNECT_S = 5.0
DEFAULT_READ_S = 300.0  # generation of a long answer on a busy server can take minutes


class PolicyError(ValueError):
    """The policy file is not usable; the message names the offending field."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Per-key overrides from `request.auth.keys[]`; None means "use the policy default"."""

    id: str
    allowed_models: frozenset[str] | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str = ""
    digest: str = ""
    #: False when no policy file exists: pass-through, auth off.
    present: bool = True
    auth_required: bool = False
    keys: dict[str, KeySpec] = field(default_factory=dict)
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    pii_input: str = "allow"
    pii_output: str = "allow"
    #: Entity names to act on; None = every entity the detector knows.
    pii_entities: frozenset[str] | None = None
    #: Blocked terms and patterns, combined into one pattern (named groups say which rule fired).
    blocked: re.Pattern[str] | None = None
    blocked_rules: tuple[str, ...] = ()
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    allowed_models: frozenset[str] | None = None
    output_mode: str = "window"
    window_chars: int = 256
    window_overlap: int = 64
    connect_timeout_s: float = DEFAULT_CONNECT_S
    read_timeout_s: float = DEFAULT_READ_S
    audit_enabled: bool = True
    log_prompts: bool = False
    served_model_name: str | None = None
    upstream_model: str | None = None

    @property
    def output_checks(self) -> bool:
        """Whether responses must be scanned at all (if not, streams pass through untouched)."""
        return self.pii_output != "allow" or self.blocked is not None

    def key_spec(self, key_id: str) -> KeySpec | None:
        return self.keys.get(key_id)


#: The "no policy file" policy: a loud pass-through.
NO_POLICY = Policy(name="", digest="", present=False, auth_required=False, audit_enabled=True)


def _get(obj: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if kind in (int, float) or kind == (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PolicyError(f"{path}.{key}: expected a number, got {type(value).__name__}")
        return value
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise PolicyError(f"{path}.{key}: expected {names}, got {type(value).__name__}")
    return value


def _positive(value: Any, where: str) -> Any:
    if value is not None and value <= 0:
        raise PolicyError(f"{where}: must be > 0, got {value}")
    return value


def _str_list(obj: dict[str, Any], key: str, path: str) -> list[str]:
    items: list[Any] = _get(obj, key, path, list, [])
    out: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise PolicyError(f"{path}.{key}[{i}]: expected a non-empty string")
        out.append(item)
    return out


def compile_blocked(terms: list[str], patterns: list[str]) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    """One case-insensitive pattern for all blocked terms and patterns: a single scan per text.

    Terms match as whole words where they start/end with a word character (so "ass" does not hit
    "class"); each alternative is a named group `r<i>` whose index maps back to the rule.
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
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PolicyError(f"request.blockedPatterns[{i}]: invalid regex {pattern!r}: {exc}") from None
        parts.append(pattern)
        rules.append(f"blockedPatterns[{i}]")
    if not parts:
        return None, ()
    combined = "|".join(f"(?P<r{i}>{p})" for i, p in enumerate(parts))
    try:
        return re.compile(combined, re.IGNORECASE), tuple(rules)
    except re.error as exc:  # e.g. a pattern with a global inline flag in the middle
        raise PolicyError(f"request.blockedPatterns: patterns cannot be combined: {exc}") from None


def _validate_with_api(
    request: dict[str, Any], audit: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate against the CRD models when `maestro.api` ships them (one source of truth)."""
    try:
        from maestro.api import AuditPolicy, RequestPolicy
    except ImportError:
        return request, audit
    from pydantic import ValidationError

    out = []
    for where, model, value in (("request", RequestPolicy, request), ("audit", AuditPolicy, audit)):
        try:
            out.append(model.model_validate(value).model_dump(mode="json", by_alias=True, exclude_none=True))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in (where, *err["loc"]))
            raise PolicyError(f"{loc}: {err['msg']}") from None
    req, aud = out
    return req, aud


def parse_policy(doc: Any) -> Policy:
    """Turn the guard config document into a `Policy`; raise `PolicyError` naming the bad field."""
    if not isinstance(doc, dict):
        raise PolicyError(f"policy document: expected a JSON object, got {type(doc).__name__}")
    request = _get(doc, "request", "policy", dict, {})
    audit = _get(doc, "audit", "policy", dict, {})
    request, audit = _validate_with_api(request, audit)
    p = "request"

    auth_spec = _get(request, "auth", p, dict)
    auth = auth_spec or {}
    keys: dict[str, KeySpec] = {}
    for i, k in enumerate(_get(auth, "keys", f"{p}.auth", list, [])):
        where = f"{p}.auth.keys[{i}]"
        if not isinstance(k, dict) or not isinstance(k.get("id"), str) or not k["id"]:
            raise PolicyError(f"{where}.id: every key needs a non-empty string id")
        models = _str_list(k, "allowedModels", where)
        keys[k["id"]] = KeySpec(
            id=k["id"],
            allowed_models=frozenset(models) if models else None,
            requests_per_minute=_positive(
                _get(k, "requestsPerMinute", where, (int, float)), f"{where}.requestsPerMinute"
            ),
            tokens_per_minute=_positive(
                _get(k, "tokensPerMinute", where, (int, float)), f"{where}.tokensPerMinute"
            ),
        )

    limits = _get(request, "rateLimits", p, dict, {})
    pii = _get(request, "pii", p, dict, {})
    pii_in = _get(pii, "input", f"{p}.pii", str, "redact")  # CRD defaults: redact both ways
    pii_out = _get(pii, "output", f"{p}.pii", str, "redact")
    for name, value in (("input", pii_in), ("output", pii_out)):
        if value not in PII_ACTIONS:
            raise PolicyError(f"{p}.pii.{name}: must be one of {', '.join(PII_ACTIONS)}, got {value!r}")
    entities = _str_list(pii, "entities", f"{p}.pii")

    blocked, blocked_rules = compile_blocked(
        _str_list(request, "blockedTerms", p), _str_list(request, "blockedPatterns", p)
    )
    mode = _get(request, "streamingOutputMode", p, str, "window")
    if mode not in OUTPUT_MODES:
        raise PolicyError(f"{p}.streamingOutputMode: must be one of {', '.join(OUTPUT_MODES)}, got {mode!r}")
    window = _get(request, "outputWindow", p, dict, {})
    chars = int(
        _positive(_get(window, "chars", f"{p}.outputWindow", (int, float), 256), f"{p}.outputWindow.chars")
    )
    overlap = int(_get(window, "overlap", f"{p}.outputWindow", (int, float), 64))
    if not 0 <= overlap < chars:
        raise PolicyError(f"{p}.outputWindow.overlap: must be >= 0 and < chars ({chars}), got {overlap}")
    timeouts = _get(request, "timeouts", p, dict, {})
    connect = float(
        _positive(
            _get(timeouts, "connectSeconds", f"{p}.timeouts", (int, float), DEFAULT_CONNECT_S),
            f"{p}.timeouts.connectSeconds",
        )
    )
    read = float(
        _positive(
            _get(timeouts, "readSeconds", f"{p}.timeouts", (int, float), DEFAULT_READ_S),
            f"{p}.timeouts.readSeconds",
        )
    )
    allowed = _str_list(request, "allowedModels", p)

    def opt_int(key: str) -> int | None:
        value = _positive(_get(request, key, p, (int, float)), f"{p}.{key}")
        return None if value is None else int(value)

    served = _get(doc, "servedModelName", "policy", str)
    upstream = _get(doc, "upstreamModel", "policy", str)
    return Policy(
        name=_get(doc, "name", "policy", str, ""),
        digest=_get(doc, "digest", "policy", str, ""),
        present=True,
        # no `auth` block = open endpoint (as the CRD documents); with one, keys are required by default
        auth_required=auth_spec is not None and bool(_get(auth, "required", f"{p}.auth", bool, True)),
        keys=keys,
        requests_per_minute=_positive(
            _get(limits, "requestsPerMinute", f"{p}.rateLimits", (int, float)),
            f"{p}.rateLimits.requestsPerMinute",
        ),
        tokens_per_minute=_positive(
            _get(limits, "tokensPerMinute", f"{p}.rateLimits", (int, float)),
            f"{p}.rateLimits.tokensPerMinute",
        ),
        pii_input=pii_in,
        pii_output=pii_out,
        pii_entities=frozenset(entities) if entities else None,
        blocked=blocked,
        blocked_rules=blocked_rules,
        max_input_tokens=opt_int("maxInputTokens"),
        max_output_tokens=opt_int("maxOutputTokens"),
        max_request_bytes=opt_int("maxRequestBytes") or DEFAULT_MAX_REQUEST_BYTES,
        allowed_models=frozenset(allowed) if allowed else None,
        output_mode=mode,
        window_chars=chars,
        window_overlap=overlap,
        connect_timeout_s=connect,
        read_timeout_s=read,
        audit_enabled=bool(_get(audit, "enabled", "audit", bool, True)),
        log_prompts=bool(_get(audit, "logPrompts", "audit", bool, False)),
        served_model_name=served or None,
        upstream_model=upstream or None,
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
