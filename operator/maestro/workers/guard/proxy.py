"""The guard: an aiohttp reverse proxy that enforces the request side of an LLMPolicy.

Per request, in order (cheapest refusal first): authenticate → rate/budget admission → read the
body within the size limit → parse → model allow-lists → content rules (blocked terms, PII, token
caps) → forward over a pooled keep-alive connection → relay the answer (streamed events pass
through as they arrive unless the output mode holds them) → charge the token budget from the
upstream's usage → one audit line, one monitor event, metrics. The body is re-serialized only when
a rule changed it; otherwise the client's bytes go upstream untouched.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from maestro.workers.guard import codec, contract
from maestro.workers.guard.audit import AuditLog, EventSender, PromptDigest
from maestro.workers.guard.auth import KeyStore, authenticate, keys_signature, load_keys
from maestro.workers.guard.config import NO_POLICY, Policy, PolicyError, file_signature, load_policy
from maestro.workers.guard.errors import GuardError, bad_request, error_body, sse_error_event
from maestro.workers.guard.limits import Limiter
from maestro.workers.guard.rules import (
    ROUTE_CHAT,
    ROUTE_COMPLETIONS,
    ROUTE_EMBEDDINGS,
    Scanner,
    check_input,
    check_output,
    clamp_max_tokens,
    input_too_long,
    is_refusal,
)
from maestro.workers.guard.stream import StreamFilter
from maestro.workers.guard.telemetry import Telemetry
from maestro.workers.guard.upstream import Response, UpstreamError, UpstreamPool, UpstreamTimeout

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
    try:
        inp = Scanner(policy, policy.pii_input) if (policy.pii_input != "allow" or policy.blocked) else None
        out = Scanner(policy, policy.pii_output) if policy.output_checks else None
    except ImportError as exc:  # pragma: no cover - the PII engine ships in the same package
        raise PolicyError(f"request.pii: PII detection is unavailable in this image: {exc}") from None
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
        "completion_tokens",
        "decisions",
        "error",
        "est_tokens",
        "finish_reason",
        "key",
        "model",
        "pii",
        "prompt_chars",
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
    )

    def __init__(self, rid: str, route: str) -> None:
        self.rid = rid
        self.route = route
        self.t0 = time.perf_counter()
        self.start_ns = time.time_ns()
        self.key = ""
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
        reload_interval: float = contract.DEFAULT_RELOAD_INTERVAL_S,
        telemetry: Telemetry | None = None,
        body_timeout: float = _BODY_READ_TIMEOUT_S,
        prompt_digest: PromptDigest | None = None,
    ) -> None:
        self.body_timeout = body_timeout
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
        if self.reload_interval > 0:
            self._watcher = asyncio.create_task(self._watch())

    async def stop(self, app: web.Application | None = None) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self._pool.close()
        self.audit.close()
        self.events.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 31)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get(contract.HEALTH_PATH, self.healthz)
        app.router.add_get(contract.READY_PATH, self.readyz)
        app.router.add_get(contract.METRICS_PATH, self.metrics)
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
                "/v1/chat/completions, /v1/completions, /v1/embeddings and "
                "/v1/models.",
                "unknown_route",
            ),
        )

    async def models(self, request: web.Request) -> web.StreamResponse:
        r = _Req(self._rid(request), "models")
        active = self.active
        try:
            r.key = authenticate(active.policy, self.keys, request.headers.get("Authorization"))
            data, status, ctype = await self._get_models(active.policy, r.key)
            r.status = status
            return web.Response(
                body=data, status=status, headers={"Content-Type": ctype, contract.REQUEST_ID_HEADER: r.rid}
            )
        except GuardError as exc:
            return self._error(exc, r)
        finally:
            self._finish(r, active.policy)

    async def _get_models(self, policy: Policy, key: str) -> tuple[bytes, int, str]:
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
        spec = policy.keys.get(key)
        allowed = [s for s in (policy.allowed_models, spec.allowed_models if spec else None) if s is not None]
        out = []
        for item in items:
            if not isinstance(item, dict):
                continue
            if policy.upstream_model and item.get("id") == policy.upstream_model and policy.served_model_name:
                item = {**item, "id": policy.served_model_name}
            if all(item.get("id") in a for a in allowed):
                out.append(item)
        doc["data"] = out
        return codec.dumps(doc), status, _JSON

    # -- inference endpoints --------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, ROUTE_CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, ROUTE_COMPLETIONS)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._inference(request, ROUTE_EMBEDDINGS)

    def _rid(self, request: web.Request) -> str:
        rid = request.headers.get(contract.REQUEST_ID_HEADER)
        if rid and len(rid) <= 128:
            return rid
        return f"{self._id_prefix}-{next(self._ids):x}"

    async def _inference(self, request: web.Request, route: str) -> web.StreamResponse:
        r = _Req(self._rid(request), route)
        active = self.active  # this request's rules, whatever reloads happen meanwhile
        tel = self.telemetry
        if tel.otel is not None:
            r.span = tel.otel.start(request.headers)
        tel.inflight += 1
        try:
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
        policy = active.policy
        route = r.route
        r.key = key = authenticate(policy, self.keys, request.headers.get("Authorization"))
        spec = policy.keys.get(key)
        rpm = (
            spec.requests_per_minute
            if spec and spec.requests_per_minute is not None
            else policy.requests_per_minute
        )
        tpm = (
            spec.tokens_per_minute
            if spec and spec.tokens_per_minute is not None
            else policy.tokens_per_minute
        )
        if rpm is not None or tpm is not None:
            denied = self.limiter.admit(key, rpm, tpm, time.monotonic())
            if denied is not None:
                what = (
                    f"{denied.limit:g} requests per minute"
                    if denied.rule == "rateLimit"
                    else f"{denied.limit:g} tokens per minute"
                )
                raise GuardError(
                    429,
                    f"Rate limit reached for key {key!r}: {what}. Retry after {denied.retry_after:.1f} s.",
                    "rate_limit_exceeded" if denied.rule == "rateLimit" else "token_budget_exceeded",
                    retry_after=denied.retry_after,
                    rule=denied.rule,
                )

        raw = await self._read_body(request, policy.max_request_bytes)
        try:
            body = codec.loads(raw)
        except ValueError:
            raise bad_request("The request body is not valid JSON (UTF-8 encoded).", "invalid_json") from None
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", "invalid_json")

        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("'model' is required and must be a string.", param="model")
        r.model = model
        if policy.allowed_models is not None and model not in policy.allowed_models:
            raise GuardError(
                403,
                f"Model {model!r} is not allowed on this endpoint.",
                "model_not_allowed",
                param="model",
                rule="allowedModels",
            )
        if spec is not None and spec.allowed_models is not None and model not in spec.allowed_models:
            raise GuardError(
                403,
                f"Key {key!r} may not use model {model!r}.",
                "model_not_allowed",
                param="model",
                rule="auth.keys.allowedModels",
            )
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise bad_request("'stream' must be a boolean.", param="stream")
        r.stream = stream = bool(stream) and route != ROUTE_EMBEDDINGS

        checked = check_input(policy, active.input_scanner, route, body, want_text=True)
        r.pii = checked.pii
        r.decisions.extend(checked.decisions)
        r.prompt_text = checked.prompt_text
        r.prompt_chars = len(checked.prompt_text)
        r.est_tokens = checked.est_tokens
        modified = checked.modified
        cap = policy.max_input_tokens
        # every token is at least one byte, so a body no longer than the cap cannot exceed it
        if cap is not None and len(raw) > cap:
            exact = await self._count_tokens(route, body, policy)
            tokens = exact if exact is not None else checked.est_tokens
            if tokens > cap:
                raise input_too_long(policy, tokens, exact is not None)
        clamp = clamp_max_tokens(policy, route, body)
        if clamp is not None:
            r.decisions.append(clamp)
            modified = True
        if policy.upstream_model and model == policy.served_model_name:
            body["model"] = policy.upstream_model
            modified = True
        client_usage = True
        if stream:
            opts = body.get("stream_options")
            if opts is not None and not isinstance(opts, dict):
                raise bad_request("'stream_options' must be an object.", param="stream_options")
            client_usage = bool(opts and opts.get("include_usage") is True)
            if not client_usage:  # budgets and audit need the upstream's count
                body["stream_options"] = {**(opts or {}), "include_usage": True}
                modified = True
        payload = codec.dumps(body) if modified else raw

        headers = {"Content-Type": _JSON, contract.REQUEST_ID_HEADER: r.rid}
        if r.span is not None:
            self.telemetry.otel.inject(r.span, headers)  # type: ignore[union-attr]
        else:
            for h in ("traceparent", "tracestate"):
                v = request.headers.get(h)
                if v is not None:
                    headers[h] = v
        try:
            upstream = await self._pool.request(
                "POST",
                ROUTE_PATHS[route],
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
        try:
            if stream and upstream.status == 200 and upstream.content_type == "text/event-stream":
                return await self._relay_stream(
                    request, r, active, upstream, strip_usage=not client_usage, tpm=tpm
                )
            return await self._relay_json(r, active, upstream, tpm)
        finally:
            upstream.release()

    async def _count_tokens(self, route: str, body: dict[str, Any], policy: Policy) -> int | None:
        """The model server's exact prompt token count (vLLM `/tokenize`), or None where it has none.

        A server without the route (404/405) is remembered for a minute; any failure falls back to
        the estimate rather than failing the request.
        """
        if route == ROUTE_EMBEDDINGS or time.monotonic() < self._no_tokenize_until:
            return None
        model = (
            policy.upstream_model
            if policy.upstream_model and body.get("model") == policy.served_model_name
            else body.get("model")
        )
        query: dict[str, Any] = {"model": model}
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

    async def _relay_json(
        self, r: _Req, active: Active, upstream: Response, tpm: float | None
    ) -> web.Response:
        policy = active.policy
        try:
            data = await upstream.read()
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
                self._usage(r, usage, tpm)
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
            if (
                policy.upstream_model
                and obj.get("model") == policy.upstream_model
                and policy.served_model_name
            ):
                obj["model"] = policy.served_model_name
                changed = True
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
        tpm: float | None,
    ) -> web.StreamResponse:
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
                self._usage(r, filt.usage, tpm)
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

    def _usage(self, r: _Req, usage: dict[str, Any], tpm: float | None) -> None:
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        r.prompt_tokens = pt if isinstance(pt, int) else None
        r.completion_tokens = ct if isinstance(ct, int) else None
        total = usage.get("total_tokens")
        if not isinstance(total, int):
            total = (r.prompt_tokens or 0) + (r.completion_tokens or 0)
        if tpm is not None:
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
        duration = time.perf_counter() - r.t0
        pii = r.pii
        tel = self.telemetry
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
