"""Fixtures for the console tests: a local stand-in for the API server's TokenReview and
SubjectAccessReview endpoints (their JSON contract), the console on a real loopback port, and a real
PostgreSQL (tests/pgserver.py).

A uniquely named module instead of a conftest.py (test modules import the fixtures), like the data
worker's data_helpers.py. The API server is injectable (URL + token), so the lead's cluster test can
point the same console at the real one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from maestro.workers.console import contract as c
from maestro.workers.console.config import ConsoleSettings
from maestro.workers.console.k8sauth import SAR_PATH, TOKEN_REVIEW_PATH, KubeAuth
from maestro.workers.console.server import Console
from maestro.workers.console.store import ReviewStore
from pgserver import PostgresServer, start_postgres
from ports import free_port

CONSOLE_SA_TOKEN = "console-own-sa-token"
#: The audience the fake API server's own (non-projected) tokens carry.
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


@dataclass
class Grant:
    """A RoleBinding in miniature: subject (user or group) may `verb` llmdeployments/review in ns."""

    subject: str
    verb: str
    namespace: str
    name: str = "*"


@dataclass
class FakeKubeAPI:
    """TokenReview + SubjectAccessReview, answered like the API server (same request/response JSON).

    It authenticates the console itself (its own service-account token) and refuses anything else,
    checks apiVersion/kind, and evaluates SARs against `grants` for the console's resource only.
    """

    users: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # token -> (user, groups)
    grants: list[Grant] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    #: token -> the audiences it is bound to; tokens not listed are valid for the API server's own
    #: audience and the console's ingest audience alike.
    token_audiences: dict[str, tuple[str, ...]] = field(default_factory=dict)
    token_reviews: list[dict[str, Any]] = field(default_factory=list)
    #: False: answer like an authenticator without audience support (spec.audiences ignored, none named).
    audience_aware: bool = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TOKEN_REVIEW_PATH, self._token_review)
        app.router.add_post(SAR_PATH, self._sar)
        return app

    def _caller_ok(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {CONSOLE_SA_TOKEN}"

    async def _token_review(self, request: web.Request) -> web.Response:
        self.calls["tokenreview"] += 1
        if not self._caller_ok(request):
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        body = await request.json()
        assert body["apiVersion"] == "authentication.k8s.io/v1" and body["kind"] == "TokenReview", body
        spec = body["spec"]
        self.token_reviews.append(spec)
        known = self.users.get(spec["token"])
        # like the API server: spec.audiences (default: its own) must meet the token's, and the answer
        # names the intersection
        bound = self.token_audiences.get(spec["token"], (API_AUDIENCE, c.DEFAULT_INGEST_AUDIENCE))
        common = [a for a in spec.get("audiences") or [API_AUDIENCE] if a in bound]
        status: dict[str, Any] = {"authenticated": False}
        if not self.audience_aware:
            common = [API_AUDIENCE] if API_AUDIENCE in bound else []
        if known and common:
            status = {
                "authenticated": True,
                "user": {"username": known[0], "uid": f"uid-{known[0]}", "groups": list(known[1])},
            }
            if self.audience_aware:
                status["audiences"] = common
        return web.json_response({**body, "status": status}, status=201)

    async def _sar(self, request: web.Request) -> web.Response:
        self.calls["sar"] += 1
        if not self._caller_ok(request):
            return web.json_response({"kind": "Status", "code": 403}, status=403)
        body = await request.json()
        assert body["apiVersion"] == "authorization.k8s.io/v1" and body["kind"] == "SubjectAccessReview", body
        spec = body["spec"]
        self.reviews.append(spec)
        attrs = spec["resourceAttributes"]
        subjects = {spec["user"], *spec.get("groups", ())}
        allowed = (
            attrs.get("group") == c.RBAC_GROUP
            and attrs.get("resource") == c.RBAC_RESOURCE
            and attrs.get("subresource") == c.RBAC_SUBRESOURCE
            and any(
                g.subject in subjects
                and g.verb == attrs["verb"]
                and g.namespace == attrs.get("namespace")
                and (g.name == "*" or g.name == attrs.get("name"))
                for g in self.grants
            )
        )
        return web.json_response({**body, "status": {"allowed": allowed}}, status=201)

    def user(self, token: str, username: str, *groups: str) -> str:
        self.users[token] = (username, groups)
        return token

    def grant(self, subject: str, verb: str, namespace: str, name: str = "*") -> None:
        self.grants.append(Grant(subject, verb, namespace, name))


@dataclass
class ConsoleHarness:
    console: Console
    client: TestClient[web.Request, web.Application]
    api: FakeKubeAPI
    store: ReviewStore

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))


@pytest.fixture
async def kube_api() -> AsyncIterator[tuple[FakeKubeAPI, str]]:
    api = FakeKubeAPI()
    server = TestServer(api.app())
    await server.start_server()
    yield api, str(server.make_url("")).rstrip("/")
    await server.close()


_counter = itertools.count()


@pytest.fixture
async def start_console(
    kube_api: tuple[FakeKubeAPI, str], tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """`await start_console(**settings)` → a ConsoleHarness on SQLite in tmp_path (cookies over http)."""
    api, url = kube_api
    started: list[ConsoleHarness] = []

    async def start(store: ReviewStore | None = None, **overrides: Any) -> ConsoleHarness:
        settings = ConsoleSettings(api_server=url, secure_cookies=False, api_ca_file=None, **overrides)
        settings.validate()
        st = store or ReviewStore.open(f"sqlite:///{tmp_path}/console-{next(_counter)}.db")
        kube = KubeAuth(url, lambda: CONSOLE_SA_TOKEN, cache_ttl=settings.auth_cache_ttl)
        console = Console(settings, st, kube, b"k" * 32)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(console.app()))
        await client.start_server()
        h = ConsoleHarness(console, client, api, st)
        started.append(h)
        return h

    yield start
    for h in started:
        await h.client.close()
        await h.console.stop()
        h.store.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (tests take a fresh database each: `pg_database`)."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    import psycopg

    name = f"console_{next(_counter)}"
    with psycopg.connect(
        host="127.0.0.1", port=postgres.port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:{postgres.port}/{name}"


def self_signed(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (IP SAN) and its key, PEM files in `directory`: for HTTPS tests."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maestro-console-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


async def start_tls_console(h: ConsoleHarness, directory: Path) -> tuple[Console, str, str]:
    """A second console process-alike on HTTPS over the same store and API server: (console, base URL, CA)."""
    cert, key = self_signed(directory)
    settings = ConsoleSettings(
        host="127.0.0.1",
        port=free_port(),
        api_server=h.console.settings.api_server,
        api_ca_file=None,
        tls_cert_file=cert,
        tls_key_file=key,
    )
    assert settings.api_server
    kube = KubeAuth(settings.api_server, lambda: CONSOLE_SA_TOKEN)
    console = Console(settings, h.store, kube, b"k" * 32)
    await console.start()
    return console, f"https://127.0.0.1:{console.port}", cert
