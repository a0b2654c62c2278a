"""The console's HTTP surface: server-rendered pages for reviewers, a JSON API, and the monitors' ingest.

Who is asking (in this order): an `Authorization: Bearer` token (TokenReview; API clients, monitors),
the auth proxy's identity header (only when MAESTRO_CONSOLE_IDENTITY_HEADER names one), or the
session cookie that signing in with a token issued. The cookie is signed (itsdangerous) and holds the
user's name and groups, never the token. What they may see or do is asked of Kubernetes RBAC per
request (SubjectAccessReview, cached for seconds): `get` on `llmdeployments/review` in a namespace to
see it, `update` on `llmdeployments/review` (named after the sample's deployment) to decide. A user
without it gets 403 and the namespace is left out of their list.

State-changing requests authenticated by a cookie or the proxy header (ambient credentials a browser
sends by itself) need a CSRF token bound to the session; bearer-token requests do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
import secrets
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import jinja2
from aiohttp import web
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maestro.workers.console import contract as c
from maestro.workers.console.config import ConsoleSettings
from maestro.workers.console.k8sauth import AuthUnavailable, Identity, KubeAuth
from maestro.workers.console.store import (
    MAX_TEXT,
    NotFound,
    ReviewStore,
    SampleIn,
    StoreError,
)

log = logging.getLogger(__name__)

MAX_INGEST_BODY = 4 * 1024 * 1024
MAX_FORM_BODY = 128 * 1024
MAX_METADATA = 16 * 1024
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^[0-9a-f]{64}$")
_TEMPLATES = Path(__file__).parent / "templates"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StartupError(RuntimeError):
    """The console cannot start; the message says which setting or mount to fix."""


# -- ingest body ------------------------------------------------------------------------------------
class SampleBody(BaseModel):
    """One sample a monitor pushes (camelCase on the wire, like every Maestro API)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", str_strip_whitespace=True)

    namespace: str | None = Field(default=None, description="defaults to the pushing service account's")
    deployment: str = Field(min_length=1, max_length=253)
    variant: str | None = Field(default=None, max_length=253)
    kind: Literal["policy-flag", "negative-feedback", "low-confidence", "bias-probe", "canary-disagreement"]
    reason: str = Field(default="", max_length=4096)
    created_at: dt.datetime | None = Field(default=None, alias="createdAt")
    request_id: str = Field(alias="requestId", min_length=1, max_length=256)
    prompt_text: str | None = Field(default=None, alias="promptText", max_length=MAX_TEXT)
    prompt_digest: str | None = Field(default=None, alias="promptDigest", max_length=128)
    response: str | None = Field(default=None, max_length=MAX_TEXT)
    metadata: dict[str, Any] = Field(default_factory=dict)


class IngestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[SampleBody] = Field(min_length=1, max_length=500)


def _validation_message(e: ValidationError) -> str:
    first = e.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}"


# -- sessions ---------------------------------------------------------------------------------------
@dataclass
class Viewer:
    """Who a request comes from, how they proved it, and their session id (for CSRF)."""

    identity: Identity | None
    via: Literal["bearer", "header", "session", "none"]
    sid: str
    bad_token: bool = False
    set_cookie: str | None = None  # a fresh cookie value to send with the response
    clear_cookie: bool = False

    @property
    def needs_csrf(self) -> bool:
        return self.via != "bearer"


VIEWER = web.RequestKey("viewer", Viewer)


class Sessions:
    """Signed session cookies and the CSRF tokens bound to them (itsdangerous, HMAC-SHA1 keyed)."""

    def __init__(self, secret: bytes, ttl: float) -> None:
        self.ttl = ttl
        self._cookie = URLSafeTimedSerializer(secret, salt="maestro-console-session")
        self._csrf = URLSafeTimedSerializer(secret, salt="maestro-console-csrf")

    def dump(self, sid: str, identity: Identity | None) -> str:
        data: dict[str, Any] = {"sid": sid}
        if identity is not None:
            data |= {"user": identity.username, "uid": identity.uid, "groups": list(identity.groups)}
        return self._cookie.dumps(data)

    def load(self, value: str | None) -> tuple[str, Identity | None] | None:
        if not value:
            return None
        try:
            data = self._cookie.loads(value, max_age=int(self.ttl))
        except BadSignature:  # includes SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
            return None
        user = data.get("user")
        if not isinstance(user, str):
            return data["sid"], None
        return data["sid"], Identity(user, str(data.get("uid") or ""), tuple(data.get("groups") or ()))

    def csrf_token(self, sid: str) -> str:
        return self._csrf.dumps(sid)

    def csrf_ok(self, sid: str, token: str | None) -> bool:
        if not token:
            return False
        try:
            return bool(self._csrf.loads(token, max_age=int(self.ttl)) == sid)
        except BadSignature:
            return False


def read_secret(path: str | None) -> bytes:
    """The session key from a file; without one, a random key (sessions end when the process does)."""
    if not path:
        log.warning(
            "no %s: signing sessions with a random key (sign-ins end at restart, and replicas do not share "
            "them); mount a Secret and name the file",
            c.ENV_SESSION_SECRET_FILE,
        )
        return secrets.token_bytes(32)
    try:
        with open(path, "rb") as fh:
            key = fh.read().strip()
    except OSError as e:
        raise StartupError(
            f"cannot read the session key {path}: {e.strerror} ({c.ENV_SESSION_SECRET_FILE})"
        ) from e
    if len(key) < 32:
        raise StartupError(f"the session key in {path} is {len(key)} bytes; use at least 32 random bytes")
    return key


# -- the server -------------------------------------------------------------------------------------
def _api_error(status: int, message: str) -> web.Response:
    resp = web.json_response({"error": {"message": message, "code": status}}, status=status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="maestro-console"'
    return resp


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A pushed timestamp in UTC (a naive one is taken as UTC already)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _safe_next(value: str | None) -> str:
    # only a path on this site: never an open redirect to another host
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


class Console:
    def __init__(
        self,
        settings: ConsoleSettings,
        store: ReviewStore,
        kube: KubeAuth,
        secret: bytes,
    ) -> None:
        self.settings = settings
        self.store = store
        self.kube = kube
        self.sessions = Sessions(secret, settings.session_ttl)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
        )
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port: int | None = None

    # -- wiring ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_INGEST_BODY, middlewares=[self._middleware])
        r = app.router
        r.add_get(c.HEALTH_PATH, self._health)
        r.add_post(c.INGEST_PATH, self._ingest)
        r.add_get("/api/v1/session", self._api_session)
        r.add_get("/api/v1/namespaces", self._api_namespaces)
        r.add_get("/api/v1/namespaces/{ns}/samples", self._api_queue)
        r.add_get("/api/v1/namespaces/{ns}/samples/{id:\\d+}", self._api_sample)
        r.add_post("/api/v1/namespaces/{ns}/samples/{id:\\d+}/decisions", self._api_decide)
        r.add_get("/api/v1/namespaces/{ns}/exports/corrections", self._export_latest)
        r.add_get("/api/v1/namespaces/{ns}/exports/corrections/{version}.jsonl", self._export_version)
        r.add_get("/", self._page_root)
        r.add_get("/signin", self._page_signin)
        r.add_post("/signin", self._signin)
        r.add_post("/signout", self._signout)
        r.add_get("/namespaces", self._page_namespaces)
        r.add_get("/namespaces/{ns}", self._page_queue)
        r.add_get("/namespaces/{ns}/samples/{id:\\d+}", self._page_sample)
        r.add_post("/namespaces/{ns}/samples/{id:\\d+}/decisions", self._form_decide)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in (c.HEALTH_PATH, c.INGEST_PATH):
            return await handler(request)  # the ingest authenticates its own way (service accounts)
        try:
            request[VIEWER] = viewer = await self._viewer(request)
            resp = await handler(request)
        except AuthUnavailable as e:
            log.error("authentication unavailable: %s", e)
            msg = f"cannot check your access right now: {e}"
            if request.path.startswith("/api/"):
                return _api_error(503, msg)
            return self._page(503, "error.html.j2", request, message=msg)
        if viewer.clear_cookie:
            resp.del_cookie(c.SESSION_COOKIE, path="/")
        elif viewer.set_cookie:
            resp.set_cookie(
                c.SESSION_COOKIE,
                viewer.set_cookie,
                path="/",
                httponly=True,
                samesite="Strict",
                secure=self.settings.secure_cookies,
                max_age=int(self.settings.session_ttl),
            )
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        )
        return resp

    async def _viewer(self, request: web.Request) -> Viewer:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            identity = await self.kube.review_token(auth[7:].strip())
            return Viewer(identity, "bearer", "", bad_token=identity is None)
        loaded = self.sessions.load(request.cookies.get(c.SESSION_COOKIE))
        fresh = loaded is None
        sid, from_cookie = loaded if loaded is not None else (secrets.token_urlsafe(24), None)
        viewer = Viewer(from_cookie, "session" if from_cookie else "none", sid)
        header = self.settings.identity_header
        if header and request.headers.get(header):
            groups: tuple[str, ...] = ()
            if self.settings.groups_header:
                raw = request.headers.get(self.settings.groups_header, "")
                groups = tuple(g.strip() for g in raw.split(",") if g.strip())
            viewer = Viewer(Identity(request.headers[header].strip(), "", groups), "header", sid)
        if fresh:
            viewer.set_cookie = self.sessions.dump(sid, None)
        return viewer

    # -- access ---------------------------------------------------------------------------------
    async def _access(
        self, request: web.Request, verb: str, ns: str, name: str = ""
    ) -> tuple[Identity | None, web.Response | None]:
        """(identity, None) when allowed, else (None, the 401/403/404 answer)."""
        api = request.path.startswith("/api/")
        viewer: Viewer = request[VIEWER]
        who = viewer.identity
        if who is None:
            if api:
                return None, self._unauthenticated(viewer)
            return None, _redirect(f"/signin?next={quote(request.path_qs, safe='')}")
        if not _NAMESPACE.match(ns):
            return None, self._deny(request, 404, f"{ns!r} is not a namespace name")
        if not await self.kube.allowed(who, verb, ns, name):
            what = f"llmdeployments/{c.RBAC_SUBRESOURCE}" + (f" {name}" if name else "")
            return None, self._deny(
                request,
                403,
                f"{who.username} may not {verb} {what} ({c.RBAC_GROUP}) in namespace {ns}; ask for a "
                "RoleBinding (see docs/console.md)",
            )
        return who, None

    @staticmethod
    def _unauthenticated(viewer: Viewer) -> web.Response:
        if viewer.bad_token:
            return _api_error(401, "the bearer token was not accepted by the API server")
        return _api_error(401, "sign in: send Authorization: Bearer <your Kubernetes token>")

    def _deny(self, request: web.Request, status: int, message: str) -> web.Response:
        if request.path.startswith("/api/"):
            return _api_error(status, message)
        return self._page(status, "error.html.j2", request, message=message)

    def _csrf_ok(self, request: web.Request, submitted: str | None) -> bool:
        viewer: Viewer = request[VIEWER]
        return not viewer.needs_csrf or self.sessions.csrf_ok(viewer.sid, submitted)

    async def _visible(self, who: Identity) -> list[str]:
        names = await asyncio.to_thread(self.store.namespaces)
        allowed = await asyncio.gather(*(self.kube.allowed(who, c.VERB_VIEW, ns) for ns in names))
        return [ns for ns, ok in zip(names, allowed, strict=True) if ok]

    # -- pages ----------------------------------------------------------------------------------
    def _page(self, status: int, template: str, request: web.Request, **ctx: Any) -> web.Response:
        viewer: Viewer | None = request.get(VIEWER)
        html = self.templates.get_template(template).render(
            user=viewer.identity.username if viewer and viewer.identity else None,
            csrf_field=c.CSRF_FIELD,
            csrf=self.sessions.csrf_token(viewer.sid) if viewer and viewer.sid else "",
            **ctx,
        )
        return web.Response(status=status, text=html, content_type="text/html", charset="utf-8")

    async def _page_root(self, request: web.Request) -> web.Response:
        viewer: Viewer = request[VIEWER]
        return _redirect("/namespaces" if viewer.identity else "/signin")

    async def _page_signin(self, request: web.Request) -> web.Response:
        viewer: Viewer = request[VIEWER]
        if viewer.via == "header":
            return _redirect(_safe_next(request.query.get("next")))
        status = 401 if viewer.identity is None else 200
        return self._page(
            status, "signin.html.j2", request, next=_safe_next(request.query.get("next")), error=None
        )

    async def _signin(self, request: web.Request) -> web.Response:
        viewer: Viewer = request[VIEWER]
        form = await request.post()
        nxt = _safe_next(str(form.get("next") or ""))
        if not self.sessions.csrf_ok(viewer.sid, str(form.get(c.CSRF_FIELD) or "")):
            msg = "the form expired; reload the sign-in page"
            return self._page(403, "error.html.j2", request, message=msg)
        token = str(form.get("token") or "").strip()
        identity = await self.kube.review_token(token) if token else None
        if identity is None:
            return self._page(
                401,
                "signin.html.j2",
                request,
                next=nxt,
                error="the API server did not accept that token (expired, or not a Kubernetes token)",
            )
        # a new session id on sign-in, so a session planted before it cannot ride along
        viewer.sid = secrets.token_urlsafe(24)
        viewer.set_cookie = self.sessions.dump(viewer.sid, identity)
        log.info("sign-in: %s", identity.username)
        return _redirect(nxt if nxt != "/" else "/namespaces")

    async def _signout(self, request: web.Request) -> web.Response:
        form = await request.post()
        if not self._csrf_ok(request, str(form.get(c.CSRF_FIELD) or "")):
            return self._page(403, "error.html.j2", request, message="missing or stale CSRF token")
        request[VIEWER].clear_cookie = True
        return _redirect("/signin")

    async def _page_namespaces(self, request: web.Request) -> web.Response:
        viewer: Viewer = request[VIEWER]
        if viewer.identity is None:
            return _redirect("/signin?next=/namespaces")
        visible = await self._visible(viewer.identity)
        counts = [(ns, await asyncio.to_thread(self.store.counts, ns)) for ns in visible]
        return self._page(200, "namespaces.html.j2", request, namespaces=counts)

    async def _page_queue(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        _, denied = await self._access(request, c.VERB_VIEW, ns)
        if denied:
            return denied
        state = request.query.get("state", "pending")
        if state not in (*c.STATES, "all"):
            state = "pending"
        items = await asyncio.to_thread(self.store.queue, ns, None if state == "all" else state)
        counts = await asyncio.to_thread(self.store.counts, ns)
        return self._page(
            200,
            "queue.html.j2",
            request,
            namespace=ns,
            state=state,
            states=c.STATES,
            samples=items,
            counts=counts,
        )

    async def _page_sample(self, request: web.Request) -> web.Response:
        ns, sid = request.match_info["ns"], int(request.match_info["id"])
        who, denied = await self._access(request, c.VERB_VIEW, ns)
        if denied or who is None:
            return denied or _redirect("/signin")
        try:
            sample = await asyncio.to_thread(self.store.get, ns, sid)
        except NotFound as e:
            return self._page(404, "error.html.j2", request, message=str(e))
        history = await asyncio.to_thread(self.store.decisions, sid)
        may_decide = await self.kube.allowed(who, c.VERB_DECIDE, ns, sample.deployment)
        return self._page(
            200,
            "sample.html.j2",
            request,
            namespace=ns,
            sample=sample,
            history=history,
            may_decide=may_decide,
            error=request.query.get("error"),
        )

    async def _form_decide(self, request: web.Request) -> web.Response:
        ns, sid = request.match_info["ns"], int(request.match_info["id"])
        if request.content_length is not None and request.content_length > MAX_FORM_BODY:
            return self._deny(request, 413, f"form over {MAX_FORM_BODY} bytes")
        form = await request.post()
        if not self._csrf_ok(request, str(form.get(c.CSRF_FIELD) or "")):
            return self._deny(request, 403, "missing or stale CSRF token: reload the page and try again")
        result = await self._decide(request, ns, sid, {k: str(v) for k, v in form.items()})
        if isinstance(result, web.Response):
            if result.status == 400:
                msg = json.loads(result.text or "{}").get("error", {}).get("message", "invalid decision")
                return _redirect(f"/namespaces/{ns}/samples/{sid}?error={quote(msg, safe='')}")
            return result if result.status != 401 else _redirect("/signin")
        return _redirect(f"/namespaces/{ns}/samples/{sid}")

    # -- JSON API -------------------------------------------------------------------------------
    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "store": self.store.backend})

    async def _api_session(self, request: web.Request) -> web.Response:
        viewer: Viewer = request[VIEWER]
        if viewer.identity is None:
            return self._unauthenticated(viewer)
        body: dict[str, Any] = {"user": viewer.identity.username, "groups": list(viewer.identity.groups)}
        if viewer.needs_csrf:
            body["csrfToken"] = self.sessions.csrf_token(viewer.sid)
        return web.json_response(body)

    async def _api_namespaces(self, request: web.Request) -> web.Response:
        viewer: Viewer = request[VIEWER]
        if viewer.identity is None:
            return self._unauthenticated(viewer)
        return web.json_response({"namespaces": await self._visible(viewer.identity)})

    async def _api_queue(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        _, denied = await self._access(request, c.VERB_VIEW, ns)
        if denied:
            return denied
        state = request.query.get("state", "pending")
        if state not in (*c.STATES, "all"):
            return _api_error(400, f"state {state!r}: expected one of {', '.join(c.STATES)} or all")
        try:
            limit = int(request.query.get("limit", "100"))
            before = int(request.query["before"]) if "before" in request.query else None
        except ValueError:
            return _api_error(400, "limit and before are integers")
        items = await asyncio.to_thread(
            self.store.queue, ns, None if state == "all" else state, limit, before
        )
        return web.json_response(
            {
                "namespace": ns,
                "samples": [s.to_json() for s in items],
                "counts": await asyncio.to_thread(self.store.counts, ns),
            }
        )

    async def _api_sample(self, request: web.Request) -> web.Response:
        ns, sid = request.match_info["ns"], int(request.match_info["id"])
        _, denied = await self._access(request, c.VERB_VIEW, ns)
        if denied:
            return denied
        try:
            sample = await asyncio.to_thread(self.store.get, ns, sid)
        except NotFound as e:
            return _api_error(404, str(e))
        history = await asyncio.to_thread(self.store.decisions, sid)
        return web.json_response(sample.to_json() | {"decisions": [d.to_json() for d in history]})

    async def _api_decide(self, request: web.Request) -> web.Response:
        ns, sid = request.match_info["ns"], int(request.match_info["id"])
        if not self._csrf_ok(request, request.headers.get(c.CSRF_HEADER)):
            msg = f"missing or stale CSRF token: send {c.CSRF_HEADER} from GET /api/v1/session"
            return _api_error(403, msg)
        if request.content_length is not None and request.content_length > MAX_FORM_BODY:
            return _api_error(413, f"body over {MAX_FORM_BODY} bytes")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _api_error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _api_error(400, "body must be a JSON object")
        result = await self._decide(request, ns, sid, {k: v for k, v in body.items() if isinstance(v, str)})
        if isinstance(result, web.Response):
            return result
        return web.json_response(result, status=201)

    async def _decide(
        self, request: web.Request, ns: str, sid: int, fields: dict[str, str]
    ) -> web.Response | dict[str, Any]:
        _, denied = await self._access(request, c.VERB_VIEW, ns)
        if denied:
            return denied
        try:
            sample = await asyncio.to_thread(self.store.get, ns, sid)
        except NotFound as e:
            return self._deny(request, 404, str(e))
        who, denied = await self._access(request, c.VERB_DECIDE, ns, sample.deployment)
        if denied or who is None:
            return denied or _api_error(401, "not signed in")
        try:
            decision = await asyncio.to_thread(
                self.store.decide,
                ns,
                sid,
                who.username,
                fields.get("action", ""),
                fields.get("reason"),
                fields.get("correction"),
            )
        except NotFound as e:
            return _api_error(404, str(e))
        except StoreError as e:
            return _api_error(400, str(e))
        return decision.to_json()

    # -- exports --------------------------------------------------------------------------------
    def _export_url(self, ns: str, version: str) -> str:
        return f"/api/v1/namespaces/{ns}/exports/corrections/{version}.jsonl"

    async def _export_latest(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        _, denied = await self._access(request, c.VERB_VIEW, ns)
        if denied:
            return denied
        export = await asyncio.to_thread(self.store.export_corrections, ns)
        url = self._export_url(ns, export.version)
        headers = {
            c.EXPORT_VERSION_HEADER: export.version,
            "Content-Location": url,
            "ETag": f'"{export.version}"',
            "X-Maestro-Export-Records": str(export.records),
            "X-Maestro-Export-Skipped": str(export.skipped),
        }
        if request.query.get("format") == "json":
            return web.json_response(
                {
                    "namespace": ns,
                    "version": export.version,
                    "sha256": export.version,
                    "records": export.records,
                    "skippedWithoutPromptText": export.skipped,
                    "url": url,
                },
                headers=headers,
            )
        return web.Response(body=export.content, content_type="application/x-ndjson", headers=headers)

    async def _export_version(self, request: web.Request) -> web.Response:
        ns, version = request.match_info["ns"], request.match_info["version"]
        _, denied = await self._access(request, c.VERB_VIEW, ns)
        if denied:
            return denied
        if not _VERSION.match(version):
            return _api_error(404, "an export version is the 64-hex sha256 of its bytes")
        try:
            export = await asyncio.to_thread(self.store.export_version, ns, version)
        except NotFound as e:
            return _api_error(404, str(e))
        return web.Response(
            body=export.content,
            content_type="application/x-ndjson",
            headers={
                c.EXPORT_VERSION_HEADER: version,
                "ETag": f'"{version}"',
                "Cache-Control": "private, max-age=31536000, immutable",
            },
        )

    # -- ingest ---------------------------------------------------------------------------------
    async def _ingest(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() != "bearer ":
            msg = "push samples with the pod's service-account token (Authorization: Bearer)"
            return _api_error(401, msg)
        try:
            audiences = (self.settings.ingest_audience,) if self.settings.ingest_audience else ()
            who = await self.kube.review_token(auth[7:].strip(), audiences)
        except AuthUnavailable as e:
            log.error("ingest: authentication unavailable: %s", e)
            return _api_error(503, "cannot check the token right now; retry")
        if who is None:
            aud = self.settings.ingest_audience
            return _api_error(
                401,
                "the token was not accepted by the API server"
                + (f" for audience {aud} (push with a projected token of that audience)" if aud else ""),
            )
        own = who.service_account_namespace
        if own is None:
            return _api_error(403, f"{who.username} is not a service account; only monitors push samples")
        try:
            body = IngestBody.model_validate_json(await request.read())
        except ValidationError as e:
            return _api_error(400, _validation_message(e))
        except web.HTTPRequestEntityTooLarge:
            return _api_error(413, f"body over {MAX_INGEST_BODY} bytes")
        items: list[SampleIn] = []
        for i, s in enumerate(body.samples):
            ns = s.namespace or own
            if ns != own:
                return _api_error(
                    403, f"samples[{i}].namespace {ns}: {who.username} may push samples for {own} only"
                )
            if len(json.dumps(s.metadata)) > MAX_METADATA:
                return _api_error(400, f"samples[{i}].metadata: over {MAX_METADATA} bytes as JSON")
            items.append(
                SampleIn(
                    namespace=ns,
                    deployment=s.deployment,
                    kind=s.kind,
                    request_id=s.request_id,
                    reason=s.reason,
                    variant=s.variant,
                    created_at=_as_utc(s.created_at),
                    prompt_text=s.prompt_text or None,
                    prompt_digest=s.prompt_digest or None,
                    response=s.response or None,
                    meta=s.metadata,
                )
            )
        res = await asyncio.to_thread(self.store.ingest, items)
        return web.json_response({"accepted": res.accepted, "duplicates": res.duplicates}, status=202)

    # -- lifecycle ------------------------------------------------------------------------------
    async def sweep_once(self) -> None:
        s = self.settings
        res = await asyncio.to_thread(
            self.store.sweep, dt.timedelta(days=s.retention_days), s.max_samples_per_namespace
        )
        if res.expired or res.over_limit or res.decisions or res.exports:
            log.info(
                "retention: removed %d expired and %d over-limit samples, %d decisions, %d export snapshots",
                res.expired,
                res.over_limit,
                res.decisions,
                res.exports,
            )

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:  # a failed sweep is retried next round; the console keeps serving
                log.exception("retention sweep failed")
            await asyncio.sleep(self.settings.sweep_interval)

    async def start(self) -> None:
        s = self.settings
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="retention")
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        tls: ssl.SSLContext | None = None
        if s.tls_cert_file and s.tls_key_file:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                tls.load_cert_chain(s.tls_cert_file, s.tls_key_file)
            except (OSError, ssl.SSLError) as e:
                await self.stop()
                raise StartupError(
                    f"cannot load the TLS certificate {s.tls_cert_file} / key {s.tls_key_file}: {e} "
                    f"({c.ENV_TLS_CERT_FILE}, {c.ENV_TLS_KEY_FILE})"
                ) from e
        site = web.TCPSite(self._runner, s.host, s.port, ssl_context=tls)
        try:
            await site.start()
        except OSError as e:
            await self.stop()
            raise StartupError(f"cannot listen on {s.host}:{s.port}: {e.strerror}; set {c.ENV_PORT}") from e
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else s.port
        log.info(
            "console on %s://%s:%s (store %s, API server %s, identity header %s)",
            "https" if tls else "http",
            s.host,
            self.port,
            self.store.backend,
            s.api_server,
            s.identity_header or "off",
        )

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        await self.kube.close()

    async def serve_forever(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await self.stop()
