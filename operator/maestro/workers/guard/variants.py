"""Server-side prompts and traffic-split variants: which variant a request belongs to, and what that
changes in its body before it goes upstream.

Assignment is sticky without any state: a caller's identity (its API key id, with the user id it
sends in `x-maestro-user` or the OpenAI body's `user` field) is hashed with the deployment's salt
(BLAKE2b, 64 bits) into one of 10,000 buckets, and the variants own consecutive bucket ranges in
proportion to their weights. The same caller lands in the same bucket on every replica and after
every restart; changing the weights moves only the callers in the buckets that change hands (50/50
→ 60/40 moves a tenth of them, all from the second variant to the first). A request with no identity
at all (no key, no user id) is assigned at random: there is nothing to stick to.

Only requests that name the deployment's model (`servedModelName`) are routed: their `model` is
rewritten to the variant's served model (an adapter, or the deployment's own), the variant's prompt
and its sampling defaults are applied. A request naming an adapter directly reaches that adapter
unrouted, with the deployment's prompt. Prompts apply to chat only (completions have no messages);
routing applies to chat and completions, never to embeddings.

Applied after the input rules: the server's prompt and template are the owner's configuration, not
client text, so they are neither scanned nor part of the audited prompt; the client's own system
messages are refused (or kept after the server's) before anything goes upstream.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from aiohttp import web

from maestro.api.experiments import TEMPLATE_PLACEHOLDER, TOTAL_WEIGHT, GuardPrompt, GuardVariant
from maestro.workers.guard.contract import VARIANT_HEADER
from maestro.workers.guard.errors import GuardError
from maestro.workers.guard.fields import ROUTE_CHAT, ROUTE_EMBEDDINGS

#: Hash buckets: weights are whole percents, so 100 buckets per percent point.
BUCKETS = 10_000
#: Longest user id taken into the hash (longer ones are cut: the id only needs to be stable).
MAX_USER_CHARS = 256
#: Roles whose messages instruct the model the way the server's system prompt does.
INSTRUCTION_ROLES = frozenset({"system", "developer"})
#: The OpenAI sampling fields a variant may default, as its `SamplingDefaults` names them.
SAMPLING_KEYS = (("temperature", "temperature"), ("top_p", "top_p"), ("max_tokens", "max_tokens"))
#: Where the proxy leaves a routed request's variant on the aiohttp request, for `tag_response`.
REQUEST_KEY = web.RequestKey("maestro.variant", str)


@dataclass(frozen=True, slots=True)
class CompiledPrompt:
    """A prompt ready for the hot path: the system text, the template split at its placeholder."""

    system: str
    prefix: str
    suffix: str
    templated: bool
    digest: str
    version: str | None
    #: characters the prompt adds to a request, for the token estimate of the input cap
    chars: int

    @classmethod
    def of(cls, prompt: GuardPrompt) -> CompiledPrompt:
        prefix, suffix = "", ""
        if prompt.template is not None:
            prefix, suffix = prompt.template.split(TEMPLATE_PLACEHOLDER, 1)
        return cls(
            system=prompt.system,
            prefix=prefix,
            suffix=suffix,
            templated=prompt.template is not None,
            digest=prompt.digest,
            version=prompt.version,
            chars=len(prompt.system) + len(prefix) + len(suffix),
        )


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant as the guard routes it."""

    name: str
    model: str
    prompt: CompiledPrompt | None
    #: (OpenAI field, value) applied when the request omits the field
    sampling: tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Applied:
    """What routing did to one request: for the accounting (header, audit, metrics, span)."""

    variant: str | None
    prompt_digest: str | None
    modified: bool
    added_chars: int


_UNCHANGED = Applied(None, None, False, 0)


@dataclass(frozen=True, slots=True)
class Routing:
    """A deployment's prompt and variants, compiled once per policy document."""

    #: requests for this model name are routed (None: every request is)
    served_model: str | None
    #: the deployment's prompt: requests not routed to a variant with its own prompt get it
    prompt: CompiledPrompt | None
    arms: tuple[Arm, ...]
    #: cumulative upper bucket bound of each arm (the last is BUCKETS)
    bounds: tuple[int, ...]
    salt: bytes

    def bucket(self, identity: str) -> int:
        """The caller's bucket in 0..BUCKETS-1: stable across requests, replicas and restarts."""
        h = blake2b(identity.encode("utf-8", "surrogatepass"), digest_size=8, key=self.salt).digest()
        return int.from_bytes(h, "big") % BUCKETS

    def pick(self, identity: str | None) -> Arm:
        """The variant of a caller (random for a caller without identity)."""
        b = self.bucket(identity) if identity is not None else random.randrange(BUCKETS)
        return self.arms[bisect_right(self.bounds, b)]


def compile_routing(
    served_model: str | None, prompt: GuardPrompt | None, variants: Sequence[GuardVariant], salt: str
) -> Routing | None:
    """The runtime form of the config's prompt and variants; None when it has neither (the hot path
    then pays one attribute test). Raises ValueError for a split that cannot route."""
    if prompt is None and not variants:
        return None
    base = CompiledPrompt.of(prompt) if prompt is not None else None
    arms: list[Arm] = []
    bounds: list[int] = []
    total = 0
    seen: set[str] = set()
    for v in variants:
        if v.name in seen:
            raise ValueError(f"variants: two variants are named {v.name!r}")
        seen.add(v.name)
        total += v.weight
        sampling: tuple[tuple[str, Any], ...] = ()
        if v.sampling is not None:
            sampling = tuple(
                (openai_key, getattr(v.sampling, attr))
                for openai_key, attr in SAMPLING_KEYS
                if getattr(v.sampling, attr) is not None
            )
        arms.append(
            Arm(v.name, v.model, CompiledPrompt.of(v.prompt) if v.prompt is not None else base, sampling)
        )
        bounds.append(total * (BUCKETS // TOTAL_WEIGHT))
    if variants and total != TOTAL_WEIGHT:
        raise ValueError(f"variants: the weights sum to {total}, not {TOTAL_WEIGHT}")
    # keyed BLAKE2b takes at most 64 key bytes: a longer salt is hashed down first
    key = salt.encode()
    if len(key) > 64:
        key = blake2b(key, digest_size=32).digest()
    return Routing(served_model, base, tuple(arms), tuple(bounds), key)


def identity(key_id: str | None, user: str | None) -> str | None:
    """Who the caller is for stickiness: the key with the user id it names (ids are per app, so the
    same user id under two keys is two callers), the key alone, or None (anonymous, no user id)."""
    if user:
        return f"{key_id or ''}\x00{user[:MAX_USER_CHARS]}"
    return key_id


def user_of(header: str | None, body: dict[str, Any]) -> str | None:
    """The user id a request names: the `x-maestro-user` header, else the OpenAI `user` field."""
    if header:
        return header
    user = body.get("user")
    return user if isinstance(user, str) and user else None


def apply(
    routing: Routing,
    route: str,
    body: dict[str, Any],
    key_id: str | None,
    user: str | None,
    allow_client_system: bool,
) -> Applied:
    """Route one request (already through the input rules) and rewrite its body in place."""
    if route == ROUTE_EMBEDDINGS:
        return _UNCHANGED
    arm: Arm | None = None
    prompt = routing.prompt
    modified = False
    if routing.arms and (routing.served_model is None or body.get("model") == routing.served_model):
        arm = routing.pick(identity(key_id, user))
        prompt = arm.prompt
        if body.get("model") != arm.model:
            body["model"] = arm.model
            modified = True
        for k, v in arm.sampling:
            own = body.get(k)
            if own is None and k == "max_tokens":
                own = body.get("max_completion_tokens")
            if own is not None:
                continue  # the client's own value wins (max_completion_tokens is chat's max_tokens)
            body[k] = v
            modified = True
    digest = None
    added = 0
    if prompt is not None and route == ROUTE_CHAT:
        _apply_prompt(prompt, body, allow_client_system)
        digest, added, modified = prompt.digest, prompt.chars, True
    return Applied(arm.name if arm is not None else None, digest, modified, added)


def _apply_prompt(prompt: CompiledPrompt, body: dict[str, Any], allow_client_system: bool) -> None:
    """The server's system message first; the client's own refused unless the policy allows them;
    the template around every user message's text."""
    messages: list[Any] = body["messages"]  # a non-empty list of role-bearing dicts (input rules checked)
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role in INSTRUCTION_ROLES and not allow_client_system:
            raise GuardError(
                400,
                f"messages[{i}] is a {role} message, but this endpoint sets its own system prompt and its "
                "policy does not let clients add one (request.allowClientSystemPrompt). Send the "
                "conversation without it.",
                "system_prompt_not_allowed",
                param=f"messages[{i}]",
                rule="allowClientSystemPrompt",
            )
        if prompt.templated and role == "user":
            _wrap(msg, prompt.prefix, prompt.suffix)
    messages.insert(0, {"role": "system", "content": prompt.system})


def _wrap(msg: dict[str, Any], prefix: str, suffix: str) -> None:
    content = msg.get("content")
    if isinstance(content, str):
        msg["content"] = prefix + content + suffix
        return
    if isinstance(content, list):  # content parts: the template goes around the text parts as a whole
        texts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if texts and isinstance(texts[0].get("text"), str) and isinstance(texts[-1].get("text"), str):
            texts[0]["text"] = prefix + texts[0]["text"]
            texts[-1]["text"] = texts[-1]["text"] + suffix


async def tag_response(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp `on_response_prepare`: the x-maestro-variant header on every answer to a routed
    request (JSON, stream or error), set just before the headers go out."""
    variant = request.get(REQUEST_KEY)
    if variant is not None:
        response.headers[VARIANT_HEADER] = variant
