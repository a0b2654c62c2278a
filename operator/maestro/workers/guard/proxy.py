"""The guard: an aiohttp reverse proxy that enforces the request side of an LLMPolicy.

An inference request (`Guard._serve`) runs as named steps, cheapest refusal first, each a method
that raises a `GuardError` to refuse: authorize (the key, and its `Access`: limits and models,
resolved once per policy) → admit (rate limit and token budget) → read the JSON body within the
size limit → check the model against the key's access → check the stream flag → input rules
(blocked terms, PII) → token caps → the upstream body → forward over a pooled keep-alive connection
→ relay the answer with the output rules (streamed events pass through as they arrive unless the
output mode holds them) and charge the token budget from the upstream's usage → finish: one audit
line, one monitor event, metrics. The body is re-serialized only when a rule changed it; otherwise
the client's bytes go upstream untouched.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from maestro.workers.guard import codec, contract, variants
from maestro.workers.guard.audit import AuditLog, EventSender, PromptDigest
from maestro.workers.guard.auth import ANONYMOUS, KeyStore, authenticate, keys_signature, load_keys
from maestro.workers.guard.config import NO_POLICY, Access, Policy, PolicyError, file_signature, load_policy
from maestro.workers.guard.errors import GuardError, bad_request, error_body, sse_error_event
from maestro.workers.guard.limits import Denied, Limiter
from maestro.workers.guard.rules import (
    CHARS_PER_TOKEN,
    ROUTE_CHAT,
    ROUTE_COMPLETIONS,
    ROUTE_EMBEDDINGS,
    Scanner,
    check_input,
    check_output,
    clamp_max_tokens,
    input_too_long,
    is_refusal,
    redact,
)
from maestro.workers.guard.stream import StreamFilter
from maestro.workers.guard.telemetry import Telemetry
from maestro.workers.guard.upstream import Response, UpstreamError, UpstreamPool, UpstreamTimeout

if TYPE_CHECKING:  # the CLI imports it only where shared limits are configured
    from maestro.workers.guard.shared_limits import SharedLimiter, Unavailable

log = logging.getLogger("maestro.guard")

_JSON = "application/json"
_READY_CACHE_S = 1.0
_BODY_READ_TIMEOUT_S = 30.0
_MAX_MODEL_LABELS = 64
ROUTE_PATHS = {
    ROUTE_CHAT: "/v1/chat/completions",
    ROUTE_COMPLETIONS: "/v1/completions",
    ROUTE_EMBEDDINGS: "/v1/embeddings",
}


@dataclass(frozen=True, slots=True)
class Active:
    """The policy in force with its compiled scanners; swapped as one reference on reload."""

    policy: Policy
    input_scanner: Scanner | None
    output_scanner: Scanner | None


def compile_active(policy: Policy) -> Active:
    """The policy with the scanners its input and output rules need (None where nothing is checked)."""
    checks_input = policy.pii_input != "allow" or policy.blocked is not None or policy.injection_mode != "off"
    inp = Scanner(policy, policy.pii_input, injection=True) if checks_input else None
    out = Scanner(policy, policy.pii_output) if policy.output_checks else None
    return Active(policy, inp, out)


class _ClientGone(Exception):
    """The client stopped reading (disconnect): not an upstream failure, nothing left to tell it."""


async def _send(resp: web.StreamResponse, data: bytes) -> None:
    try:
        await resp.write(data)
    except (ConnectionError, aiohttp.ClientConnectionError) as exc:
        raise _ClientGone from exc


class _Req:
    """Accounting for one request, filled in as it goes and written out once at the end."""

    __slots__ = (
        "access",
        "completion_tokens",
        "decisions",
        "error",
        "est_tokens",
        "finish_reason",
        "key",
        "model",
        "pii",
        "prompt_chars",
        "prompt_digest",
        "prompt_text",
        "prompt_tokens",
        "refusal",
        "response_chars",
        "response_text",
        "rid",
        "route",
        "span",
        "start_ns",
        "status",
        "stream",
        "t0",
        "ttft",
        "variant",
    )

    def __init__(self, rid: str, route: str) -> None:
        self.rid = rid
        self.route = route
        self.t0 = time.perf_counter()
        self.start_ns = time.time_ns()
        self.key = ""
        #: the key's limits and model access, once authorized
        self.access: Access | None = None
        self.model = ""
        self.stream = False
        self.status = 200
        self.decisions: list[dict[str, str]] = []
        self.pii: dict[str, int] = {}
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.ttft: float | None = None
        self.finish_reason: str | None = None
        self.prompt_chars = 0
        self.response_chars = 0
        self.refusal = False
        self.prompt_text = ""
        self.response_text: str | None = None
        self.error: str | None = None
        #: the traffic-split variant and the server-side prompt digest, when routing applied them
        self.variant: str | None = None
        self.prompt_digest: str | None = None
        self.est_tokens = 0
        self.span: Any = None


class Guard:
    def __init__(
        self,
        upstream: str = contract.DEFAULT_UPSTREAM,
        *,
        config_path: str = contract.DEFAULT_CONFIG,
        keys_dir: str = contract.DEFAULT_KEYS_DIR,
        audit_path: str | None = None,
        events_path: str | None = None,
        feedback_url: str | None = None,
        reload_interval: float = contract.DEFAULT_RELOAD_INTERVAL_S,
        telemetry: Telemetry | None = None,
        body_timeout: float = _BODY_READ_TIMEOUT_S,
        prompt_digest: PromptDigest | None = None,
        shared_limits: SharedLimiter | None = None,
    ) -> None:
        self.body_timeout = body_timeout
        #: the monitor's feedback route (same pod); None: feedback is off
        self.feedback_url = feedback_url
        self._feedback_client: aiohttp.ClientSession | None = None
        #: keyed digest of prompts in audit lines (a random per-process key unless one is given)
        self.prompt_digest = prompt_digest or PromptDigest()
        self.upstream = upstream.rstrip("/")
        self._pool = UpstreamPool(self.upstream)  # validates the URL now, connects lazily
        self.config_path = config_path
        self.keys_dir = keys_dir
        self.reload_interval = reload_interval
        self.telemetry = telemetry or Telemetry()
        self.audit = AuditLog(audit_path)
        self.events = EventSender(events_path)
        self.limiter = Limiter()
        #: per-key limits shared by all replicas (Redis); None: `limiter` counts for this pod alone
        self.shared_limits = shared_limits
        if shared_limits is not None:
            shared_limits.attach(self.telemetry)
        self.keys = KeyStore()
        self.active = compile_active(NO_POLICY)
        self._policy_sig: object = ()
        self._keys_sig: object = None
        self._watcher: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._ready_at = 0.0
        self._ready = False
        self._model_labels: set[str] = set()
        self._dropped_seen = 0
        self._no_tokenize_until = 0.0
        self.reload(initial=True)

    # -- policy and keys ------------------------------------------------------------------------

    def reload(self, initial: bool = False) -> bool:
        """Re-read the policy and keys when their files changed. Returns whether anything was applied.

        A policy that fails to parse is logged and counted; the last good one stays in force (at
        start-up there is none, so the error propagates and the process exits non-zero).
        """
        changed = False
        sig = file_signature(self.config_path)
        if sig != self._policy_sig:
            try:
                active = compile_active(load_policy(self.config_path))
            except PolicyError as exc:
                self.telemetry.reloads.labels("error").inc()
                if initial:
                    raise
                log.error(
                    "policy update rejected, keeping policy %r (digest %s): %s",
                    self.active.policy.name,
                    self.active.policy.digest,
                    exc,
                )
                self._policy_sig = sig  # do not re-log the same bad file every poll
            else:
                self._policy_sig = sig
                self._apply(active)
                changed = True
        ksig = keys_signature(self.keys_dir)
        if ksig != self._keys_sig:
            self._keys_sig = ksig
            keys = load_keys(self.keys_dir)
            for err in keys.errors:
                log.error("API key skipped: %s", err)
            self.keys = keys
            self.telemetry.reloads.labels("keys").inc()
            log.info("loaded %d API key(s) from %s", len(keys.by_digest), self.keys_dir)
            missing = set(self.active.policy.keys) - keys.ids
            if missing:
                log.warning(
                    "policy names keys with no Secret entry (they cannot authenticate): %s",
                    ", ".join(sorted(missing)),
                )
            changed = True
        return changed

    def _apply(self, active: Active) -> None:
        p = active.policy
        self.active = active
        self._model_labels.clear()
        self.telemetry.reloads.labels("ok").inc()
        self.telemetry.set_policy(p.name, p.digest)
        if not p.present:
            log.warning(
                "NO POLICY at %s: the guard is a pass-through (no auth, no limits, no PII checks). "
                "Mount the operator-rendered policy to enforce one.",
                self.config_path,
            )
        else:
            log.info(
                "policy %r (digest %s) in force: auth=%s pii=%s/%s output=%s",
                p.name,
                p.digest,
                "required" if p.auth_required else "optional",
                p.pii_input,
                p.pii_output,
                p.output_mode,
            )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                self.reload()
            except Exception:  # the watcher must outlive any surprise
                log.exception("policy reload failed")

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, app: web.Application | None = None) -> None:
        if self.shared_limits is not None:
            await self.shared_limits.start()
        if self.reload_interval > 0:
            self._watcher = asyncio.create_task(self._watch())

    async def stop(self, app: web.Application | None = None) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self._pool.close()
        if self.shared_limits is not None:
            await self.shared_limits.close()
        if self._feedback_client is not None:
            await self._feedback_client.close()
        self.audit.close()
        self.events.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 31)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/explain", self.explain)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post(contract.FEEDBACK_PATH, self.feedback)
        app.router.add_get(contract.HEALTH_PATH, self.healthz)
        app.router.add_get(contract.READY_PATH, self.readyz)
        app.router.add_get(contract.METRICS_PATH, self.metrics)
        app.on_response_prepare.append(variants.tag_response)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    # -- plain endpoints ------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type=_JSON)

    async def readyz(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if now - self._ready_at > _READY_CACHE_S:
            self._ready_at = now
            self._ready = await self._upstream_healthy()
        if self._ready:
            return web.Response(body=b'{"status":"ready"}', content_type=_JSON)
        return web.Response(
            status=503,
            content_type=_JSON,
            body=error_body(503, f"The model server at {self.upstream} is not ready.", "upstream_not_ready"),
        )

    async def _upstream_healthy(self) -> bool:
        try:
            resp = await self._pool.request(
                "GET", contract.UPSTREAM_HEALTH_PATH, connect_timeout=2, read_timeout=2
            )
            await resp.read()
        except (UpstreamError, UpstreamTimeout):
            return False
        resp.release()
        return resp.status == 200

    async def metrics(self, request: web.Request) -> web.Response:
        self.audit.flush()
        self.telemetry.events_dropped.inc(self.events.dropped - self._dropped_seen)
        self._dropped_seen = self.events.dropped
        return web.Response(
            body=self.telemetry.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def not_found(self, request: web.Request) -> web.Response:
        return web.Response(
            status=404,
            content_type=_JSON,
            body=error_body(
                404,
                f"Unknown route {request.method} {request.path}. The guard serves "
                "/v1/chat/completions, /v1/completions, /v1/embeddings, "
                "/v1/explain, /v1/models and /v1/feedback.",
                "unknown_route",
            ),
        )

    async def models(self, request: web.Request) -> web.StreamResponse:
        r = _Req(self._rid(request), "models")
        active = self.active
        try:
            access = self._authorize(request, r, active.policy)
            data, status, ctype = await self._get_models(active.policy, access)
            r.status = status
            return web.Response(
                body=data, status=status, headers={"Content-Type": ctype, contract.REQUEST_ID_HEADER: r.rid}
            )
        except GuardError as exc:
            return self._error(exc, r)
        finally:
            self._finish(r, active.policy)

    async def _get_models(self, policy: Policy, access: Access) -> tuple[bytes, int, str]:
        """The upstream's model list, filtered to the models this key may use."""
        try:
            resp = await self._pool.request(
                "GET",
                "/v1/models",
                connect_timeout=policy.connect_timeout_s,
                read_timeout=policy.read_timeout_s,
            )
            data = await resp.read()
        except UpstreamTimeout:
            raise GuardError(504, "The model server did not answer in time.", "upstream_timeout") from None
        except UpstreamError as exc:
            raise GuardError(502, f"The model server is unreachable: {exc}", "upstream_unavailable") from None
        resp.release()
        ctype = resp.headers.get("content-type", _JSON)
        status = resp.status
        if status != 200:
            return data, status, ctype
        try:
            doc = codec.loads(data)
            items = doc["data"]
        except (ValueError, KeyError, TypeError):
            return data, status, ctype
        doc["data"] = [item for item in items if isinstance(item, dict) and access.lists(item.get("id"))]
        return codec.dumps(doc), status, _JSON

    # -- feedback ----------------------------------------------------------------------------------

    async def feedback(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/feedback`: a verdict on an answer, under the same keys and request rate as chat.
        Free text (correction, comment) gets the policy's input PII rule; the monitor (same pod) writes
        the record to the deployment's feedback claim."""
        r = _Req(self._rid(request), "feedback")
        active = self.active
        try:
            if self.feedback_url is None:
                raise GuardError(
                    404,
                    "Feedback is off for this deployment (spec.monitoring.feedback).",
                    "feedback_disabled",
                )
            access = self._authorize(request, r, active.policy)
            await self._admit(r, access, active.policy)
            raw = await self._read_body(request, contract.MAX_FEEDBACK_BYTES)
            try:
                body = codec.loads(raw)
            except ValueError:
                raise bad_request("The feedback body is not JSON.", "invalid_json") from None
            if not isinstance(body, dict):
                raise bad_request("The feedback body must be a JSON object.", "invalid_body")
            self._redact_feedback(r, active, body)
            status, data = await self._relay_feedback(codec.dumps(body))
            r.status = status
            return web.Response(
                body=data, status=status, content_type=_JSON, headers={contract.REQUEST_ID_HEADER: r.rid}
            )
        except GuardError as exc:
            return self._error(exc, r)
        finally:
            self._finish(r, active.policy)

    @staticmethod
    def _redact_feedback(r: _Req, active: Active, body: dict[str, Any]) -> None:
        """PII in the correction or comment, as the policy treats it in prompts (redact, or 400)."""
        scanner = active.input_scanner
        if scanner is None or scanner.pii_action == "allow":
            return
        for field_ in ("correction", "comment"):
            text = body.get(field_)
            if not isinstance(text, str) or not text:
                continue
            hits = scanner.pii(text)
            if not hits:
                continue
            for h in hits:
                r.pii[h.label] = r.pii.get(h.label, 0) + 1
            if scanner.pii_action == "reject":
                found = ", ".join(sorted({h.label for h in hits}))
                raise GuardError(
                    400,
                    f"The feedback {field_} contains personal data ({found}); the policy rejects it.",
                    "pii_rejected",
                    field_,
                    rule="pii",
                )
            body[field_] = redact(text, hits)
            r.decisions.append({"rule": "pii", "action": "redact"})

    async def _relay_feedback(self, payload: bytes) -> tuple[int, bytes]:
        assert self.feedback_url is not None
        if self._feedback_client is None:
            self._feedback_client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._feedback_client.post(
                self.feedback_url, data=payload, headers={"Content-Type": _JSON}
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GuardError(
                503,
                f"The monitor did not take the feedback ({type(exc).__name__}); retry.",
                "feedback_unavailable",
            ) from None

    # -- inference endpoints --------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, ROUTE_CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, ROUTE_COMPLETIONS)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, ROUTE_EMBEDDINGS)

    async def explain(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/explain`: prompt-segment attributions of a response, under chat's rules and audit;
        the steps live in `explain.route` (imported on first use: the other routes never need it)."""
        from maestro.workers.guard.explain import route as explain_route

        return await self._inference(request, explain_route.ROUTE, serve=explain_route.serve)

    def _rid(self, request: web.Request) -> str:
        rid = request.headers.get(contract.REQUEST_ID_HEADER)
        if rid and len(rid) <= 128:
            return rid
        return f"{self._id_prefix}-{next(self._ids):x}"

    async def _inference(
        self,
        request: web.Request,
        route: str,
        serve: Callable[..., Awaitable[web.StreamResponse]] | None = None,
    ) -> web.StreamResponse:
        r = _Req(self._rid(request), route)
        active = self.active  # this request's rules, whatever reloads happen meanwhile
        tel = self.telemetry
        if tel.otel is not None:
            r.span = tel.otel.start(request.headers)
        tel.inflight += 1
        try:
            if serve is not None:  # another route's steps (explain), same accounting and error handling
                return await serve(self, request, r, active)
            return await self._serve(request, r, active)
        except GuardError as exc:
            return self._error(exc, r)
        except ConnectionError:  # the client went away before the answer was sent
            r.status = 499
            r.error = "client_disconnected"
            raise
        except Exception as exc:
            log.exception("request %s failed", r.rid)
            return self._error(
                GuardError(
                    500,
                    f"Internal guard error ({type(exc).__name__}); see the guard log for request {r.rid}.",
                    "internal_error",
                ),
                r,
            )
        finally:
            tel.inflight -= 1
            self._finish(r, active.policy)

    def _error(self, exc: GuardError, r: _Req) -> web.Response:
        r.status = exc.status
        r.error = exc.code
        if exc.rule:
            r.decisions.append({"rule": exc.rule, "action": "block" if exc.status < 429 else "limit"})
        headers = exc.response_headers()
        headers[contract.REQUEST_ID_HEADER] = r.rid
        if exc.status == 413:
            headers["Connection"] = "close"  # the unread body makes the connection unusable
        return web.Response(status=exc.status, body=exc.body(), content_type=_JSON, headers=headers)

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        length = request.content_length
        if length is not None and length > limit:
            raise GuardError(
                413,
                f"The request body is {length} bytes; this endpoint accepts at most {limit}.",
                "request_too_large",
                rule="maxRequestBytes",
            )
        if length is not None and request.content.is_eof():  # all of it already arrived: no timer needed
            return await request.read()
        try:
            async with asyncio.timeout(self.body_timeout):
                if length is not None:
                    return await request.read()
                buf = bytearray()
                async for chunk in request.content.iter_any():
                    buf += chunk
                    if len(buf) > limit:
                        raise GuardError(
                            413,
                            f"The request body exceeds {limit} bytes, the most this endpoint accepts.",
                            "request_too_large",
                            rule="maxRequestBytes",
                        )
                return bytes(buf)
        except TimeoutError:
            raise GuardError(
                408,
                f"The request body did not arrive within {self.body_timeout:g} s.",
                "request_timeout",
            ) from None

    async def _serve(self, request: web.Request, r: _Req, active: Active) -> web.StreamResponse:
        """One inference request, step by step; any step refuses by raising a `GuardError`."""
        policy = active.policy
        access = self._authorize(request, r, policy)
        await self._admit(r, access, policy)
        raw, body = await self._read_json(request, policy)
        self._check_model(r, body, access)
        self._check_prompt_logprobs(policy, body)
        stream = self._check_stream(r, body)
        modified = self._check_input(r, active, body)
        if policy.routing is not None:
            modified = self._route(request, r, policy, body) or modified
        modified = await self._check_token_caps(r, policy, body, raw) or modified
        payload, client_usage = self._upstream_body(body, raw, stream, modified)
        upstream = await self._forward(request, r, policy, payload)
        try:
            if stream and upstream.status == 200 and upstream.content_type == "text/event-stream":
                return await self._relay_stream(request, r, active, upstream, strip_usage=not client_usage)
            return await self._relay_json(r, active, upstream)
        finally:
            upstream.release()

    # -- the steps of a request, in order ----------------------------------------------------------

    def _authorize(self, request: web.Request, r: _Req, policy: Policy) -> Access:
        """Who calls (401 where keys are required and none is valid) and what that key may do."""
        r.key = authenticate(policy, self.keys, request.headers.get("Authorization"))
        r.access = access = policy.access(r.key)
        return access

    async def _admit(self, r: _Req, access: Access, policy: Policy) -> None:
        """The key's request rate and token budget, before any byte of the body is read (429; 503 when
        the shared store is down and the policy fails closed). Unlimited keys never wait on the store."""
        if access.limited:
            if self.shared_limits is not None:
                denied: Denied | Unavailable | None = await self.shared_limits.admit(
                    r.key,
                    access.requests_per_minute,
                    access.tokens_per_minute,
                    fail_closed=policy.limits_fail_closed,
                )
            else:
                denied = self.limiter.admit(
                    r.key, access.requests_per_minute, access.tokens_per_minute, time.monotonic()
                )
            if denied is not None:
                raise denied.error(r.key)

    async def _read_json(self, request: web.Request, policy: Policy) -> tuple[bytes, dict[str, Any]]:
        """The body within maxRequestBytes (413, 408 when it trickles), parsed as a JSON object (400)."""
        raw = await self._read_body(request, policy.max_request_bytes)
        try:
            body = codec.loads(raw)
        except ValueError:
            raise bad_request("The request body is not valid JSON (UTF-8 encoded).", "invalid_json") from None
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", "invalid_json")
        return raw, body

    @staticmethod
    def _check_model(r: _Req, body: dict[str, Any], access: Access) -> None:
        """A model is named (400) and this key may use it (403)."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("'model' is required and must be a string.", param="model")
        r.model = model
        access.check_model(r.key, model)

    @staticmethod
    def _check_prompt_logprobs(policy: Policy, body: dict[str, Any]) -> None:
        """400 for prompt log-probabilities where the model server cannot compute them safely
        (GuardConfig.prompt_logprobs: a request batched with others would kill the engine)."""
        if policy.prompt_logprobs:
            return
        echo = body.get("echo") is True and body.get("logprobs") not in (None, False)
        if body.get("prompt_logprobs") is not None or echo:
            raise bad_request(
                "This endpoint's model server cannot return prompt log-probabilities (vLLM on CPU "
                "serving LoRA adapters); leave out prompt_logprobs (and echo with logprobs).",
                "prompt_logprobs_unsupported",
                param="prompt_logprobs",
            )

    @staticmethod
    def _check_stream(r: _Req, body: dict[str, Any]) -> bool:
        """Whether the answer streams (embeddings never do); a non-boolean `stream` is a 400."""
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise bad_request("'stream' must be a boolean.", param="stream")
        r.stream = stream = bool(stream) and r.route != ROUTE_EMBEDDINGS
        return stream

    @staticmethod
    def _check_input(r: _Req, active: Active, body: dict[str, Any]) -> bool:
        """Blocked terms (400) and PII (redacted in place, or 400) in the prompt; True if the body changed."""
        checked = check_input(active.policy, active.input_scanner, r.route, body, want_text=True)
        r.pii = checked.pii
        r.decisions.extend(checked.decisions)
        r.prompt_text = checked.prompt_text
        r.prompt_chars = len(checked.prompt_text)
        r.est_tokens = checked.est_tokens
        return checked.modified

    @staticmethod
    def _route(request: web.Request, r: _Req, policy: Policy, body: dict[str, Any]) -> bool:
        """The deployment's server-side prompt and traffic-split variant (`variants.apply`: 400 for a
        client system message the policy refuses); True if the body changed."""
        assert policy.routing is not None
        user = variants.user_of(request.headers.get(contract.USER_HEADER), body)
        key = None if r.key == ANONYMOUS else r.key
        done = variants.apply(policy.routing, r.route, body, key, user, policy.allow_client_system_prompt)
        r.variant, r.prompt_digest = done.variant, done.prompt_digest
        r.est_tokens += -(-done.added_chars // CHARS_PER_TOKEN)  # the estimate counts the server's text
        if done.variant is not None:
            request[variants.REQUEST_KEY] = done.variant  # the x-maestro-variant header (tag_response)
        return done.modified

    async def _check_token_caps(self, r: _Req, policy: Policy, body: dict[str, Any], raw: bytes) -> bool:
        """maxInputTokens (400) and maxOutputTokens (max_tokens clamped); True if the body changed."""
        cap = policy.max_input_tokens
        # every token is at least one byte, so a body no longer than the cap cannot exceed it
        if cap is not None and len(raw) > cap:
            exact = await self._count_tokens(r.route, body, policy)
            tokens = exact if exact is not None else r.est_tokens
            if tokens > cap:
                raise input_too_long(policy, tokens, exact is not None)
        clamp = clamp_max_tokens(policy, r.route, body)
        if clamp is None:
            return False
        r.decisions.append(clamp)
        return True

    @staticmethod
    def _upstream_body(body: dict[str, Any], raw: bytes, stream: bool, modified: bool) -> tuple[bytes, bool]:
        """The bytes to forward (the client's own unless a rule changed the body) and whether the client
        asked for streamed usage itself; budgets and audit need the upstream's count, so a stream always
        asks for it and the extra event is stripped again on the way back."""
        client_usage = True
        if stream:
            opts = body.get("stream_options")
            if opts is not None and not isinstance(opts, dict):
                raise bad_request("'stream_options' must be an object.", param="stream_options")
            client_usage = bool(opts and opts.get("include_usage") is True)
            if not client_usage:
                body["stream_options"] = {**(opts or {}), "include_usage": True}
                modified = True
        return (codec.dumps(body) if modified else raw), client_usage

    async def _forward(self, request: web.Request, r: _Req, policy: Policy, payload: bytes) -> Response:
        """Send the request upstream with its id and trace context (502 unreachable, 504 too slow)."""
        headers = {"Content-Type": _JSON, contract.REQUEST_ID_HEADER: r.rid}
        if r.span is not None:
            self.telemetry.otel.inject(r.span, headers)  # type: ignore[union-attr]
        else:
            for h in ("traceparent", "tracestate"):
                v = request.headers.get(h)
                if v is not None:
                    headers[h] = v
        return await self.post_upstream(ROUTE_PATHS[r.route], payload, headers, policy)

    async def post_upstream(
        self, path: str, payload: bytes, headers: dict[str, str], policy: Policy
    ) -> Response:
        """One POST to the model server under the policy's timeouts, its failures as the guard's
        502/504 (and counted), for every route that calls the engine: inference and explain."""
        try:
            return await self._pool.request(
                "POST",
                path,
                payload,
                headers,
                connect_timeout=policy.connect_timeout_s,
                read_timeout=policy.read_timeout_s,
            )
        except UpstreamTimeout:
            self.telemetry.upstream_errors.labels("timeout").inc()
            raise GuardError(504, "The model server did not answer in time.", "upstream_timeout") from None
        except UpstreamError as exc:
            self.telemetry.upstream_errors.labels("connect").inc()
            raise GuardError(
                502, f"The model server is unreachable ({exc}); retry shortly.", "upstream_unavailable"
            ) from None

    async def _count_tokens(self, route: str, body: dict[str, Any], policy: Policy) -> int | None:
        """The model server's exact prompt token count (vLLM `/tokenize`), or None where it has none.

        A server without the route (404/405) is remembered for a minute; any failure falls back to
        the estimate rather than failing the request.
        """
        if route == ROUTE_EMBEDDINGS or time.monotonic() < self._no_tokenize_until:
            return None
        query: dict[str, Any] = {"model": body.get("model")}
        if route == ROUTE_CHAT:
            query["messages"] = body.get("messages")
        else:
            query["prompt"] = body.get("prompt")
        try:
            resp = await self._pool.request(
                "POST",
                "/tokenize",
                codec.dumps(query),
                {"Content-Type": _JSON},
                connect_timeout=policy.connect_timeout_s,
                read_timeout=10.0,
            )
            data = await resp.read()
        except (UpstreamError, UpstreamTimeout):
            return None
        resp.release()
        if resp.status in (404, 405):
            self._no_tokenize_until = time.monotonic() + 60.0
            return None
        try:
            count = codec.loads(data).get("count") if resp.status == 200 else None
        except (ValueError, AttributeError):
            return None
        return count if isinstance(count, int) else None

    async def read_upstream(self, upstream: Response) -> bytes:
        """A whole answer's body, a timeout or a dropped connection mid-answer as 504/502 (counted)."""
        try:
            return await upstream.read()
        except UpstreamTimeout:
            self.telemetry.upstream_errors.labels("timeout").inc()
            raise GuardError(
                504, "The model server did not finish its answer in time.", "upstream_timeout"
            ) from None
        except UpstreamError:
            self.telemetry.upstream_errors.labels("disconnect").inc()
            raise GuardError(
                502, "The model server closed the connection mid-answer.", "upstream_error"
            ) from None

    async def _relay_json(self, r: _Req, active: Active, upstream: Response) -> web.Response:
        """A whole answer: output rules on its first choice, usage charged, refusal noted."""
        policy = active.policy
        data = await self.read_upstream(upstream)
        r.status = upstream.status
        ctype = upstream.headers.get("content-type", _JSON)
        if upstream.status != 200:
            r.error = "upstream_status"
            return web.Response(
                body=data,
                status=upstream.status,
                headers={"Content-Type": ctype, contract.REQUEST_ID_HEADER: r.rid},
            )
        try:
            obj = codec.loads(data)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            changed = False
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self._usage(r, usage)
            choices = obj.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                c0 = choices[0]
                text = (c0.get("message") or {}).get("content") if r.route == ROUTE_CHAT else c0.get("text")
                r.finish_reason = c0.get("finish_reason")
                if active.output_scanner is not None:
                    changed = check_output(active.output_scanner, r.route, obj, r.pii, r.decisions)
                    c0 = obj["choices"][0]
                    text = (
                        (c0.get("message") or {}).get("content") if r.route == ROUTE_CHAT else c0.get("text")
                    )
                if isinstance(text, str):
                    r.response_chars = len(text)
                    r.refusal = is_refusal(text) or bool((c0.get("message") or {}).get("refusal"))
                    if policy.log_prompts:
                        r.response_text = text
            if changed:
                data = codec.dumps(obj)
        return web.Response(
            body=data, status=200, headers={"Content-Type": ctype, contract.REQUEST_ID_HEADER: r.rid}
        )

    async def _relay_stream(
        self,
        request: web.Request,
        r: _Req,
        active: Active,
        upstream: Response,
        *,
        strip_usage: bool,
    ) -> web.StreamResponse:
        """An SSE answer relayed event by event through the output-mode filter; usage charged at the end."""
        policy = active.policy
        filt = StreamFilter(
            policy, active.output_scanner, r.route, strip_usage=strip_usage, keep_text=policy.log_prompts
        )
        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                contract.REQUEST_ID_HEADER: r.rid,
            },
        )
        await resp.prepare(request)
        clean = False
        try:
            try:
                async for chunk in upstream.iter_chunks():
                    out = filt.feed(chunk)
                    if out:
                        await _send(resp, out)
                        if r.ttft is None and filt.first_content:
                            r.ttft = time.perf_counter() - r.t0
                    if filt.blocked is not None:
                        break  # stop the generation: the client got the error event
                else:
                    clean = True
            except UpstreamTimeout:
                self.telemetry.upstream_errors.labels("timeout").inc()
                r.error = "upstream_timeout"
                await _send(resp, sse_error_event("The model server stalled mid-stream.", "upstream_timeout"))
            except UpstreamError:
                self.telemetry.upstream_errors.labels("disconnect").inc()
                r.error = "upstream_error"
                await _send(
                    resp, sse_error_event("The model server closed the stream mid-answer.", "upstream_error")
                )
            except _ClientGone:
                raise
            except Exception:  # headers are out: a bug must still end the stream the OpenAI way
                log.exception("request %s failed mid-stream", r.rid)
                r.error = "internal_error"
                await _send(
                    resp,
                    sse_error_event(
                        f"Internal guard error; see the guard log for request {r.rid}.", "internal_error"
                    ),
                )
            else:
                tail = filt.finish()
                if tail:
                    await _send(resp, tail)
                    if r.ttft is None and filt.first_content:
                        r.ttft = time.perf_counter() - r.t0
            try:
                await resp.write_eof()
            except (ConnectionError, aiohttp.ClientConnectionError) as exc:
                raise _ClientGone from exc
        except _ClientGone:
            r.status = 499
            r.error = "client_disconnected"
        finally:
            if not clean:
                upstream.close()  # drop the connection so the model server aborts the generation
            if filt.usage is not None:
                self._usage(r, filt.usage)
            r.decisions.extend(filt.decisions)
            for k, v in filt.pii.items():
                r.pii[k] = r.pii.get(k, 0) + v
            r.finish_reason = filt.finish_reason
            r.response_chars = filt.response_chars
            r.refusal = filt.refusal
            if policy.log_prompts:
                r.response_text = filt.text
        if filt.blocked is not None:
            r.error = filt.blocked.code
        return resp

    def _usage(self, r: _Req, usage: dict[str, Any]) -> None:
        """Record the upstream's token counts and charge them to the key's token budget."""
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        r.prompt_tokens = pt if isinstance(pt, int) else None
        r.completion_tokens = ct if isinstance(ct, int) else None
        total = usage.get("total_tokens")
        if not isinstance(total, int):
            total = (r.prompt_tokens or 0) + (r.completion_tokens or 0)
        tpm = r.access.tokens_per_minute if r.access is not None else None
        if tpm is not None:
            if self.shared_limits is not None:
                self.shared_limits.charge_soon(r.key, tpm, total)
            else:
                self.limiter.charge(r.key, tpm, total, time.monotonic())

    # -- accounting -----------------------------------------------------------------------------

    def _model_label(self, model: str) -> str:
        if model in self._model_labels:
            return model
        if len(self._model_labels) < _MAX_MODEL_LABELS and len(model) <= 128:
            self._model_labels.add(model)
            return model
        return "other"

    def _finish(self, r: _Req, policy: Policy) -> None:
        """The last step of every request, refused or not: metrics, one monitor event, one audit line."""
        duration = time.perf_counter() - r.t0
        pii = r.pii
        tel = self.telemetry
        if r.variant is not None or r.prompt_digest is not None:
            tel.record_variant(
                r.variant,
                r.prompt_digest,
                status=r.status,
                duration_s=duration,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                refusal=r.refusal,
                decisions=r.decisions,
                span=r.span,
            )
        tel.record(
            route=r.route,
            status=r.status,
            model=self._model_label(r.model),
            stream=r.stream,
            duration_s=duration,
            ttft_s=r.ttft,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            decisions=r.decisions,
            pii=pii,
            error=r.error,
            span=r.span,
        )
        if r.route == "models":
            return
        event: dict[str, Any] = {
            "ts": r.start_ns / 1e9,
            "requestId": r.rid,
            "key": r.key,
            "model": r.model,
            "route": r.route,
            "status": r.status,
            "stream": r.stream,
            "promptTokens": r.prompt_tokens,
            "completionTokens": r.completion_tokens,
            "latencyMs": round(duration * 1000, 3),
            "ttftMs": None if r.ttft is None else round(r.ttft * 1000, 3),
            "finishReason": r.finish_reason,
            "decisions": r.decisions,
            "pii": pii,
            "promptChars": r.prompt_chars,
            "responseChars": r.response_chars,
            "refusal": r.refusal,
            "policy": policy.digest,
        }
        if r.error:
            event["error"] = r.error
        if r.variant is not None:
            event["variant"] = r.variant
        if r.prompt_digest is not None:
            event["promptDigest"] = r.prompt_digest
        if policy.log_prompts:
            event["promptText"] = r.prompt_text
            event["responseText"] = r.response_text
        elif r.prompt_text:
            event["promptHmacSha256"] = self.prompt_digest(r.prompt_text)
            event["promptDigestKeyId"] = self.prompt_digest.key_id
        line = codec.dumps(event)
        self.events.send(line)
        if policy.audit_enabled:
            self.audit.write(line)
