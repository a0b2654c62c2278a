"""k8s.config: the official client's loaders feed Kube's async transport (and Kopf's login).

Against a real HTTPS server on loopback (self-signed CA, optional client certificates), so what is
checked is what the API server would receive: the Authorization header, the client certificate, the
TLS verification.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2 as httpx
import kopf
import kubernetes
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.config import incluster_config

from maestro.builders.serving import cpu_kv_cache_gib
from maestro.controllers.login import login, register
from maestro.k8s import ApiError, Kube
from maestro.k8s import config as k8s_config
from maestro.k8s.config import ConfigAuth, load_config, ssl_context

pytestmark = pytest.mark.unit

POD_PATH = "/api/v1/namespaces/team-a/pods/p"
SERVER_NAME = "api.maestro.test"
USER_CN = "maestro-test-user"


# -- a CA, a serving certificate, a client certificate ---------------------------------------------
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


@dataclass
class PKI:
    dir: Path
    ca: Path
    other_ca: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key, server_key, client_key = _key(), _key(), _key(), _key()
    ca = _cert("maestro-test-ca", ca_key)
    server = _cert(
        "apiserver",
        server_key,
        (ca, ca_key),
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName(SERVER_NAME)],
    )
    client = _cert(USER_CN, client_key, (ca, ca_key))
    files = {
        "ca": ca.public_bytes(serialization.Encoding.PEM),
        "other_ca": _cert("someone-else", other_key).public_bytes(serialization.Encoding.PEM),
        "server_crt": server.public_bytes(serialization.Encoding.PEM),
        "server_key": _pem_key(server_key),
        "client_crt": client.public_bytes(serialization.Encoding.PEM),
        "client_key": _pem_key(client_key),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    return PKI(d, *(d / name for name in files))


# -- the API server stand-in -----------------------------------------------------------------------
@dataclass
class ApiServer:
    url: str
    #: (Authorization header or None, client certificate CN or None) per request, in order
    seen: list[tuple[str | None, str | None]] = field(default_factory=list)
    #: Authorization values answered with 401
    rejected: set[str] = field(default_factory=set)


@pytest.fixture
async def api(pki: PKI) -> AsyncIterator[ApiServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(pki.server_crt, pki.server_key)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a client certificate is one way to authenticate, not the only
    server = ApiServer(url="")

    async def pod(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = dict(x[0] for x in peer["subject"]).get("commonName") if peer else None
        auth = request.headers.get("Authorization")
        server.seen.append((auth, cn))
        if auth in server.rejected:
            return web.json_response(
                {"kind": "Status", "reason": "Unauthorized", "message": "Unauthorized", "code": 401},
                status=401,
            )
        return web.json_response({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})

    app = web.Application()
    app.router.add_get(POD_PATH, pod)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"https://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


def kubeconfig(
    path: Path, server: str, user: dict[str, Any], *, ca: Path | None = None, **cluster: Any
) -> Path:
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


async def get_pod(kube: Kube) -> dict[str, Any] | None:
    return await kube.get("v1", "Pod", "p", "team-a")


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither this machine's service account (if it is a pod) nor the developer's kubeconfig."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# -- kubeconfig: client certificate, static token --------------------------------------------------
async def test_client_certificate(api: ApiServer, pki: PKI, tmp_path: Path) -> None:
    user = {
        "client-certificate-data": base64.b64encode(pki.client_crt.read_bytes()).decode(),
        "client-key-data": base64.b64encode(pki.client_key.read_bytes()).decode(),
    }
    kube = Kube(load_config(kubeconfig(tmp_path / "kc", api.url, user, ca=pki.ca)))
    try:
        assert (await get_pod(kube) or {})["metadata"]["name"] == "p"
    finally:
        await kube.close()
    assert api.seen == [(None, USER_CN)]


async def test_token_and_relative_files(api: ApiServer, pki: PKI, tmp_path: Path) -> None:
    """A bearer token; the CA given as a file path relative to the kubeconfig, as kubectl reads it."""
    (tmp_path / "ca.crt").write_bytes(pki.ca.read_bytes())
    path = kubeconfig(
        tmp_path / "kc", api.url, {"token": "static-token"}, **{"certificate-authority": "ca.crt"}
    )
    kube = Kube(load_config(path))
    try:
        await get_pod(kube)
        await get_pod(kube)
    finally:
        await kube.close()
    assert api.seen == [("Bearer static-token", None)] * 2


async def test_server_verification(api: ApiServer, pki: PKI, tmp_path: Path) -> None:
    """The server is checked against the kubeconfig's CA (and `tls-server-name`, when set); skipping
    verification is the kubeconfig's explicit choice."""
    user = {"token": "t"}

    async def outcome(path: Path) -> str:
        kube = Kube(load_config(path), timeout=5)
        try:
            await get_pod(kube)
            return "ok"
        except ApiError as exc:
            assert exc.code == 0 and exc.reason == "Unreachable", exc
            return "refused"
        finally:
            await kube.close()

    assert await outcome(kubeconfig(tmp_path / "a", api.url, user, ca=pki.other_ca)) == "refused"
    named = {"tls-server-name": SERVER_NAME}
    assert await outcome(kubeconfig(tmp_path / "b", api.url, user, ca=pki.ca, **named)) == "ok"
    wrong = {"tls-server-name": "elsewhere.test"}
    assert await outcome(kubeconfig(tmp_path / "c", api.url, user, ca=pki.ca, **wrong)) == "refused"
    insecure = {"insecure-skip-tls-verify": True}
    assert await outcome(kubeconfig(tmp_path / "d", api.url, user, **insecure)) == "ok"
    assert [a for a, _ in api.seen] == ["Bearer t", "Bearer t"]  # refused handshakes never got this far


# -- exec credential plugins ------------------------------------------------------------------------
def exec_plugin(tmp_path: Path, expires_in: datetime.timedelta) -> tuple[dict[str, Any], Path]:
    """A plugin printing an ExecCredential whose token says how often it has run (exec-1, exec-2…)."""
    count = tmp_path / "exec-count"
    count.write_text("0")
    script = tmp_path / "plugin.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import datetime, json, pathlib, sys\n"
        f"count = pathlib.Path({str(count)!r})\n"
        "n = int(count.read_text()) + 1\n"
        "count.write_text(str(n))\n"
        f"valid = datetime.timedelta(seconds={expires_in.total_seconds()})\n"
        "expires = datetime.datetime.now(datetime.UTC) + valid\n"
        "json.dump({'apiVersion': 'client.authentication.k8s.io/v1beta1', 'kind': 'ExecCredential',\n"
        "           'status': {'token': f'exec-{n}',\n"
        "                      'expirationTimestamp': expires.strftime('%Y-%m-%dT%H:%M:%SZ')}}, sys.stdout)\n"
    )
    script.chmod(0o755)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(script)}}
    return user, count


def runs(count: Path) -> int:
    return int(count.read_text())


async def test_exec_plugin_token_is_reused_while_valid(api: ApiServer, pki: PKI, tmp_path: Path) -> None:
    user, count = exec_plugin(tmp_path, datetime.timedelta(hours=1))
    cfg = load_config(kubeconfig(tmp_path / "kc", api.url, user, ca=pki.ca))
    assert runs(count) == 1
    auth = ConfigAuth(cfg, recheck_seconds=0)  # consult the refresh hook before every request
    async with httpx.AsyncClient(base_url=cfg.host, verify=ssl_context(cfg), auth=auth) as http:
        for _ in range(3):
            assert (await http.get(POD_PATH)).status_code == 200
    assert runs(count) == 1
    assert [a for a, _ in api.seen] == ["Bearer exec-1"] * 3


async def test_exec_plugin_token_is_refreshed_when_expiring(api: ApiServer, pki: PKI, tmp_path: Path) -> None:
    """The official loader renews a token 5 minutes before its expiry; one expiring in a minute is
    renewed at every look, and each request carries the newest."""
    user, count = exec_plugin(tmp_path, datetime.timedelta(minutes=1))
    cfg = load_config(kubeconfig(tmp_path / "kc", api.url, user, ca=pki.ca))
    auth = ConfigAuth(cfg, recheck_seconds=0)
    async with httpx.AsyncClient(base_url=cfg.host, verify=ssl_context(cfg), auth=auth) as http:
        for _ in range(3):
            assert (await http.get(POD_PATH)).status_code == 200
    seen = [a for a, _ in api.seen]
    assert runs(count) >= 4  # once at load, then before each request
    assert len(set(seen)) == 3 and f"Bearer exec-{runs(count)}" == seen[-1]


async def test_refresh_is_throttled_and_a_401_refreshes_at_once(
    api: ApiServer, pki: PKI, tmp_path: Path
) -> None:
    """Through Kube (default recheck period): requests in a burst do not re-run the plugin; a 401
    does, and the request is retried once with the new token."""
    user, count = exec_plugin(tmp_path, datetime.timedelta(minutes=1))
    kube = Kube(load_config(kubeconfig(tmp_path / "kc", api.url, user, ca=pki.ca)))
    try:
        await asyncio.gather(*(get_pod(kube) for _ in range(5)))
        before = runs(count)
        assert {a for a, _ in api.seen} == {f"Bearer exec-{before}"}
        api.rejected.add(f"Bearer exec-{before}")  # revoked early
        api.seen.clear()
        assert await get_pod(kube) is not None
    finally:
        await kube.close()
    assert [a for a, _ in api.seen] == [f"Bearer exec-{before}", f"Bearer exec-{runs(count)}"]
    assert runs(count) > before


async def test_401_with_the_same_credential_is_an_error_not_a_loop(
    api: ApiServer, pki: PKI, tmp_path: Path
) -> None:
    kube = Kube(load_config(kubeconfig(tmp_path / "kc", api.url, {"token": "bad"}, ca=pki.ca)))
    api.rejected.add("Bearer bad")
    try:
        with pytest.raises(ApiError) as err:
            await get_pod(kube)
    finally:
        await kube.close()
    assert err.value.code == 401
    assert len(api.seen) == 1


# -- in-cluster service account ---------------------------------------------------------------------
@pytest.fixture
def in_pod(api: ApiServer, pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What the kubelet gives a pod: the service's address in the environment, a token and the CA."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-token-1")
    (sa / "ca.crt").write_bytes(pki.ca.read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", api.url.rsplit(":", 1)[1])
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(sa / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(sa / "ca.crt"))
    return sa / "token"


class _Later(datetime.datetime):
    """`datetime.datetime` two minutes from now: past the loader's one-minute token re-read period."""

    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> _Later:
        return super().now(tz) + datetime.timedelta(minutes=2)


async def test_in_cluster_token_is_re_read_when_rotated(
    api: ApiServer, in_pod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config()
    assert cfg.host == api.url
    auth = ConfigAuth(cfg, recheck_seconds=0)
    async with httpx.AsyncClient(base_url=cfg.host, verify=ssl_context(cfg), auth=auth) as http:
        await http.get(POD_PATH)
        in_pod.write_text("sa-token-2")  # the kubelet rotated the projected token
        await http.get(POD_PATH)  # within the re-read period: still the first one (still valid)
        clock = SimpleNamespace(datetime=_Later, timedelta=datetime.timedelta)
        monkeypatch.setattr(incluster_config, "datetime", clock)
        await http.get(POD_PATH)
    # the official loader writes the scheme in lower case (RFC 7235: case-insensitive)
    assert [(a or "").lower() for a, _ in api.seen] == ["bearer sa-token-1"] * 2 + ["bearer sa-token-2"]


async def test_resolution_order(
    api: ApiServer, pki: PKI, in_pod: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Explicit kubeconfig → in-cluster service account → $KUBECONFIG → ~/.kube/config."""
    explicit = kubeconfig(tmp_path / "explicit", api.url, {"token": "explicit"}, ca=pki.ca)
    env = kubeconfig(tmp_path / "env", api.url, {"token": "from-env"}, ca=pki.ca)
    home = tmp_path / "home" / ".kube"
    home.mkdir(parents=True)
    kubeconfig(home / "config", api.url, {"token": "from-home"}, ca=pki.ca)
    monkeypatch.setenv("KUBECONFIG", str(env))

    def token(kc: str | None = None) -> str | None:
        return k8s_config.authorization(load_config(kc))

    assert token(str(explicit)) == "Bearer explicit"
    assert (token() or "").lower() == "bearer sa-token-1"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert token() == "Bearer from-env"
    monkeypatch.delenv("KUBECONFIG")
    assert token() == "Bearer from-home"


def test_no_configuration_says_what_to_do() -> None:
    with pytest.raises(ApiError) as err:
        load_config()
    assert err.value.reason == "NoConfig"
    assert "KUBECONFIG" in err.value.message and "not in a cluster" in err.value.message
    with pytest.raises(ApiError, match="NoConfig"):
        load_config("/nonexistent/kubeconfig")


# -- Kopf logs in through the same loader ----------------------------------------------------------
def test_kopf_login_uses_the_same_configuration(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "KUBECONFIG", str(kubeconfig(tmp_path / "kc", "https://127.0.0.1:6443", {"token": "kt"}, ca=pki.ca))
    )
    info = login(settings=kopf.OperatorSettings())
    assert (info.server, info.scheme, info.token, info.insecure) == (
        "https://127.0.0.1:6443",
        "Bearer",
        "kt",
        False,
    )
    assert info.ca_path and Path(info.ca_path).read_bytes() == pki.ca.read_bytes()

    user = {"client-certificate": str(pki.client_crt), "client-key": str(pki.client_key)}
    monkeypatch.setenv(
        "KUBECONFIG", str(kubeconfig(tmp_path / "kc2", "https://127.0.0.1:6443", user, ca=pki.ca))
    )
    info = login(settings=kopf.OperatorSettings())
    assert (info.token, info.certificate_path, info.private_key_path) == (
        None,
        str(pki.client_crt),
        str(pki.client_key),
    )

    monkeypatch.delenv("KUBECONFIG")
    with pytest.raises(kopf.LoginError, match="KUBECONFIG"):
        login(settings=kopf.OperatorSettings())


# -- secrets stay out of reprs, errors and logs ----------------------------------------------------
async def test_the_token_never_shows(
    api: ApiServer, pki: PKI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-t0ken-value"
    api.rejected.add(f"Bearer {secret}")
    caplog.set_level(logging.DEBUG)
    kube = Kube(load_config(kubeconfig(tmp_path / "kc", api.url, {"token": secret}, ca=pki.ca)))
    try:
        with pytest.raises(ApiError) as err:
            await get_pod(kube)
        shown = [repr(kube), repr(kube.config), repr(kube._http.auth), str(err.value), repr(err.value)]
    finally:
        await kube.close()
    assert api.seen == [(f"Bearer {secret}", None)]
    assert not [s for s in shown if secret in s]
    assert secret not in caplog.text


def test_sync_clients_get_the_header_too(pki: PKI, tmp_path: Path) -> None:
    """ConfigAuth's synchronous flow (httpx's default would silently send no credential)."""
    cfg = load_config(kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", {"token": "sync"}, ca=pki.ca))
    flow = ConfigAuth(cfg).sync_auth_flow(httpx.Request("GET", cfg.host + POD_PATH))
    assert next(flow).headers["Authorization"] == "Bearer sync"


# -- quantities: the official client's parser ------------------------------------------------------
@pytest.mark.parametrize(
    ("memory", "gib"),
    [("16Gi", 4), ("8Gi", 2), ("1500Mi", 1), ("16G", 3), ("17179869184", 4), ("64e9", 14)],
)
def test_cpu_kv_cache_from_the_memory_limit(memory: str, gib: int) -> None:
    assert cpu_kv_cache_gib({"limits": {"memory": memory}}) == gib
    assert cpu_kv_cache_gib({}) == 4


def test_a_malformed_quantity_is_an_error() -> None:
    with pytest.raises(ValueError):
        cpu_kv_cache_gib({"limits": {"memory": "lots"}})


def test_the_login_handler_replaces_kopfs_fallbacks() -> None:
    """Registered, Kopf uses it alone: not its own kubeconfig parsing, nor the client piggybacking."""
    from kopf._core.intents.causes import Activity
    from kopf._core.intents.registries import SmartOperatorRegistry

    registry = kopf.OperatorRegistry()
    register(registry)
    assert [h.id for h in registry._activities.get_handlers(Activity.AUTHENTICATION)] == ["login"]
    smart = SmartOperatorRegistry()  # what kopf.get_default_registry() makes
    assert {h.id for h in smart._activities.get_handlers(Activity.AUTHENTICATION)} == {"login_via_client"}
    register(smart)
    assert [h.id for h in smart._activities.get_handlers(Activity.AUTHENTICATION)] == ["login"]


def test_a_broken_kubeconfig_is_named_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text("users:\n- name: u\n  user: {token: s3cr3t-in-a-broken-file\n")
    with pytest.raises(ApiError) as err:
        load_config(path)
    assert err.value.reason == "NoConfig" and str(path) in err.value.message
    assert "not valid YAML" in err.value.message and "s3cr3t" not in str(err.value)


def test_the_environments_proxy_is_left_to_httpx(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx applies HTTPS_PROXY itself, with NO_PROXY; passing it explicitly would lose NO_PROXY."""
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://env-proxy:3128")
    path = kubeconfig(tmp_path / "kc", "https://10.0.0.1:6443", {"token": "t"}, ca=pki.ca)
    assert k8s_config.explicit_proxy(load_config(path)) is None
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert login(settings=kopf.OperatorSettings()).proxy_url is None


@pytest.mark.skipif(
    int(kubernetes.__version__.split(".")[0]) < 37, reason="the loader reads proxy-url from release 37"
)
def test_a_kubeconfig_proxy_url_is_used(pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    named = {"proxy-url": "http://kube-proxy.corp:8080"}
    path = kubeconfig(tmp_path / "kc", "https://10.0.0.1:6443", {"token": "t"}, ca=pki.ca, **named)
    assert k8s_config.explicit_proxy(load_config(path)) == "http://kube-proxy.corp:8080"
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert login(settings=kopf.OperatorSettings()).proxy_url == "http://kube-proxy.corp:8080"
