"""The chart's console component (console.*): rendered by Helm's own engine, its pod restricted, its RBAC
exactly TokenReview + SubjectAccessReview, its values reaching the console's own config parser, the
operator pointed at its Service, its session key kept across upgrades (Helm `lookup`, exercised
against a loopback stand-in for the API server's discovery and Secret GET), and the real console
process started from the rendered pod's env."""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytestmark = pytest.mark.unit
helm = pytest.importorskip("helm_python")
ROOT = Path(__file__).resolve().parents[2]
NS = "maestro-system"
PG = {
    "url": "postgresql://maestro@pg.databases.svc:6543/console",
    "passwordSecret": {"name": "console-pg", "key": "pw"},
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    from test_chart import render as chart_render

    return chart_render(values)


def named(docs: list[dict[str, Any]], kind: str, suffix: str = "-console") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, (kind, suffix, [d["metadata"]["name"] for d in docs if d["kind"] == kind])
    return found[0]


def console_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = named(docs, "Deployment")["spec"]["template"]["spec"]
    return pod


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def mount_of(pod: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The volume a file path lies on, and the path inside it."""
    c = pod["containers"][0]
    m = max(
        (m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")),
        key=lambda m: len(m["mountPath"]),
    )
    vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
    return vol, path[len(m["mountPath"].rstrip("/")) + 1 :]


def _restricted() -> Any:
    spec = importlib.util.spec_from_file_location(
        "operator_conftest", ROOT / "tests/unit/operator/conftest.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.restricted_violations


def test_off_by_default() -> None:
    docs = render({})
    assert not [d for d in docs if "console" in d["metadata"]["name"]]
    operator = named(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    assert "MAESTRO_CONSOLE_URL" not in env_of(operator)


@pytest.mark.parametrize("values", [{}, {"database": PG, "tls": {"secretName": "console-tls"}}])
def test_console_pod_is_restricted_and_runs_from_the_operator_image(values: dict[str, Any]) -> None:
    docs = render({"console": {"enabled": True, **values}})
    pod = console_pod(docs)
    assert _restricted()(pod) == []
    c = pod["containers"][0]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    operator = named(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == operator["image"] and c["args"] == ["console"]
    # writable paths are volumes: the store's directory and /tmp
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/var/lib/maestro/console", "/tmp"}

    from maestro.workers.console import contract as cc

    scheme = "HTTPS" if values.get("tls") else "HTTP"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": cc.HEALTH_PATH, "port": "http", "scheme": scheme}
    assert {"requests", "limits"} <= set(c["resources"])


def test_console_cluster_role_is_exactly_token_and_access_reviews() -> None:
    docs = render({"console": {"enabled": True}})
    role = named(docs, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ]
    binding = named(docs, "ClusterRoleBinding")
    sa = named(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NS}
    ]
    assert console_pod(docs)["serviceAccountName"] == sa["metadata"]["name"]
    # the operator's own role is untouched, and the operator's objects never select console pods
    from maestro.k8s.rbac import RULES

    assert named(docs, "ClusterRole", "-operator")["rules"] == RULES
    console_labels = named(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "Deployment"):
        op = named(docs, kind, "-operator")
        sel = op["spec"]["selector"].get("matchLabels", op["spec"]["selector"])
        assert not sel.items() <= console_labels.items(), kind


def test_sqlite_values_reach_the_consoles_config() -> None:
    from maestro.workers.console import contract as cc
    from maestro.workers.console.config import ConsoleSettings

    values = {
        "enabled": True,
        "port": 8443,
        "storage": {"size": "5Gi", "storageClassName": "fast"},
        "session": {"ttlSeconds": 3600},
        "identityHeader": "X-Forwarded-User",
        "groupsHeader": "X-Forwarded-Groups",
        "retention": {"days": 7, "maxSamplesPerNamespace": 500},
    }
    docs = render({"console": values})
    pod = console_pod(docs)
    env = env_of(pod["containers"][0])
    s = ConsoleSettings.from_env({**env, "KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert s.port == 8443 and pod["containers"][0]["ports"][0]["containerPort"] == 8443
    assert s.database_url == cc.DEFAULT_DATABASE_URL
    assert (s.identity_header, s.groups_header) == ("X-Forwarded-User", "X-Forwarded-Groups")
    assert (s.retention_days, s.max_samples_per_namespace, s.session_ttl) == (7, 500, 3600)
    assert s.secure_cookies and s.tls_cert_file is None and s.database_password_file is None
    assert s.ingest_audience == cc.DEFAULT_INGEST_AUDIENCE
    # the SQLite file lies on the claim the chart creates, with the size and class asked for
    vol, _ = mount_of(pod, s.database_url.removeprefix("sqlite:///"))
    pvc = named(docs, "PersistentVolumeClaim", "-console-data")
    assert vol["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert named(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}  # one SQLite writer
    # the session key file is the rendered Secret's `key`, at least 32 bytes
    assert s.session_secret_file
    vol, inside = mount_of(pod, s.session_secret_file)
    secret = named(docs, "Secret", "-console-session")
    assert vol["secret"]["secretName"] == secret["metadata"]["name"]
    assert {"key": "key", "path": inside} in vol["secret"]["items"]
    assert len(base64.b64decode(secret["data"]["key"])) >= 32
    # the Service the operator points monitors at
    svc = named(docs, "Service")
    assert svc["spec"]["ports"][0]["port"] == 8443
    assert (
        svc["spec"]["selector"].items()
        <= named(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    existing = render({"console": {"enabled": True, "storage": {"existingClaim": "reviews"}}})
    assert not [d for d in existing if d["kind"] == "PersistentVolumeClaim"]
    vol, _ = mount_of(console_pod(existing), cc.DEFAULT_DATABASE_URL.removeprefix("sqlite:///"))
    assert vol["persistentVolumeClaim"]["claimName"] == "reviews"


def test_postgres_and_tls_values_reach_the_consoles_config() -> None:
    from maestro.builders.settings import Settings
    from maestro.workers.console.config import ConsoleSettings

    values = {"enabled": True, "replicas": 2, "database": PG, "tls": {"secretName": "console-tls"}}
    docs = render({"console": values})
    pod = console_pod(docs)
    s = ConsoleSettings.from_env({**env_of(pod["containers"][0]), "KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert s.database_url == PG["url"] and ":" not in PG["url"].split("//")[1].split("@")[0]
    assert s.database_password_file
    vol, inside = mount_of(pod, s.database_password_file)
    assert vol["secret"] == {"secretName": "console-pg", "items": [{"key": "pw", "path": inside}]}
    assert s.tls_cert_file and s.tls_key_file
    for path, key in ((s.tls_cert_file, "tls.crt"), (s.tls_key_file, "tls.key")):
        vol, inside = mount_of(pod, path)
        assert (
            vol["secret"]["secretName"] == "console-tls"
            and {"key": key, "path": inside} in vol["secret"]["items"]
        )
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]  # no SQLite claim
    dep = named(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    # the operator tells monitors to push over https to the console's Service
    operator = named(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    settings = Settings.from_env(env_of(operator))
    svc = named(docs, "Service")
    assert (
        settings.console_url
        == f"https://{svc['metadata']['name']}.{NS}.svc:{svc['spec']['ports'][0]['port']}"
    )
    plain = named(render({"console": {"enabled": True}}), "Deployment", "-operator")
    assert Settings.from_env(env_of(plain["spec"]["template"]["spec"]["containers"][0])).console_url == (
        f"http://maestro-console.{NS}.svc:8090"
    )


def test_bad_console_values_fail_at_install() -> None:
    with pytest.raises(Exception, match=r"database\.url"):
        render({"console": {"enabled": True, "replicas": 2}})  # SQLite is one RWO claim
    for bad, needle in (
        ({"database": {"url": "postgresql://u:secret@pg/db"}}, "url"),
        ({"database": {"url": "mysql://u@db/x"}}, "url"),
        ({"port": 0}, "port"),
        ({"identityHeader": "X Forwarded"}, "identityHeader"),
        ({"storage": {"size": "lots"}}, "size"),
        ({"sessionSecret": "x"}, "sessionSecret"),
    ):
        with pytest.raises(Exception, match=needle):
            render({"console": {"enabled": True, **bad}})


def test_network_policy_admits_the_port_and_only_the_egress_it_needs() -> None:
    docs = render({"console": {"enabled": True, "ingressNamespaceSelector": {"matchLabels": {"x": "y"}}}})
    policy = named(docs, "NetworkPolicy")
    pod_labels = named(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"x": "y"}}}],
            "ports": [{"port": "http", "protocol": "TCP"}],
        }
    ]
    ports = [{p["port"] for p in rule["ports"]} for rule in policy["spec"]["egress"]]
    assert ports == [{6443, 443}, {53}]
    default = named(render({"console": {"enabled": True}}), "NetworkPolicy")
    assert default["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {}}]  # every namespace
    pg = named(render({"console": {"enabled": True, "database": PG}}), "NetworkPolicy")
    assert [{p["port"] for p in r["ports"]} for r in pg["spec"]["egress"]][-1] == {6543}
    off = render({"console": {"enabled": True}, "networkPolicy": {"enabled": False}})
    assert not [d for d in off if d["kind"] == "NetworkPolicy"]


# --- the session key across upgrades: Helm `lookup` against a stand-in API server ------------------
class _FakeAPI(BaseHTTPRequestHandler):
    """Discovery for v1 and GET of Secrets in `secrets` (everything else 404), as the API server answers."""

    secrets: ClassVar[dict[str, dict[str, Any]]] = {}
    reviews: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        """TokenReview: token `projected` is bound to the console's audience, any other to none."""
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.reviews.append(body["spec"])
        asked = body["spec"].get("audiences") or ["https://kubernetes.default.svc"]
        ok = body["spec"]["token"] == "projected" and "maestro-console" in asked
        status: dict[str, Any] = {"authenticated": ok}
        if ok:
            status |= {
                "user": {"username": "system:serviceaccount:team-a:default"},
                "audiences": ["maestro-console"],
            }
        self._json(201, {**body, "status": status})

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        prefix = f"/api/v1/namespaces/{NS}/secrets/"
        if path == "/api/v1":
            resource = {"name": "secrets", "namespaced": True, "kind": "Secret", "verbs": ["get", "list"]}
            return self._json(200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": [resource]})
        if path.startswith(prefix) and path[len(prefix) :] in self.secrets:
            return self._json(200, self.secrets[path[len(prefix) :]])
        self._json(
            404,
            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404},
        )


@pytest.fixture
def api_server() -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    secrets: dict[str, dict[str, Any]] = {}
    handler = type("Handler", (_FakeAPI,), {"secrets": secrets, "reviews": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", secrets
    server.shutdown()
    server.server_close()


def _session_key(url: str, values: dict[str, Any]) -> str | None:
    import yaml

    config = helm.Config(kube_apiserver=url, kube_token="test", namespace=NS)
    try:
        out = config.render(
            helm.Chart.load(str(ROOT / "charts/maestro")), values, name="maestro", namespace=NS
        )
    finally:
        config.close()
    docs = [
        d
        for path, text in out.items()
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d
    ]
    found = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "maestro-console-session"]
    return str(found[0]["data"]["key"]) if found else None


def test_the_session_key_survives_upgrades(api_server: tuple[str, dict[str, dict[str, Any]]]) -> None:
    url, secrets = api_server
    values = {"console": {"enabled": True}}
    first = _session_key(url, values)  # install: nothing to look up, a fresh random key
    assert first and len(base64.b64decode(first)) >= 32
    assert _session_key(url, values) != first  # still none in the cluster: another random key
    secrets["maestro-console-session"] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "maestro-console-session", "namespace": NS},
        "type": "Opaque",
        "data": {"key": first},
    }
    assert _session_key(url, values) == first  # upgrade: the key the cluster holds, kept
    assert _session_key(url, values) == first
    # Argo CD / helm template cannot look it up: an existing Secret of your own, never regenerated
    docs = render({"console": {"enabled": True, "session": {"existingSecret": "my-session"}}})
    assert not [d for d in docs if d["kind"] == "Secret"]
    vol = next(v for v in console_pod(docs)["volumes"] if v["name"] == "session")
    assert vol["secret"]["secretName"] == "my-session"


def test_the_console_runs_from_the_rendered_pod(
    api_server: tuple[str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    """`maestro console` with the env, Secret and mounts the chart renders (their paths moved under
    tmp_path): it opens the SQLite store on the data volume, reads the session key, serves /healthz,
    and takes samples only with a token bound to the console's audience."""
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from ports import free_port
    from procs import stop_group
    from waiting import wait_for

    url, _ = api_server
    docs = render({"console": {"enabled": True}})
    pod = console_pod(docs)
    container = pod["containers"][0]
    env = env_of(container)
    port = free_port()

    def rebase(path: str) -> str:
        return str(tmp_path / path.lstrip("/"))

    for m in container["volumeMounts"]:
        Path(rebase(m["mountPath"])).mkdir(parents=True, exist_ok=True)
    secret = named(docs, "Secret", "-console-session")
    Path(rebase(env["MAESTRO_CONSOLE_SESSION_SECRET_FILE"])).write_bytes(
        base64.b64decode(secret["data"]["key"])
    )
    own_token = tmp_path / "sa-token"
    own_token.write_text("console-token")
    env |= {
        "MAESTRO_CONSOLE_PORT": str(port),
        "MAESTRO_CONSOLE_HOST": "127.0.0.1",
        "MAESTRO_CONSOLE_DATABASE_URL": "sqlite:///" + rebase(env["MAESTRO_CONSOLE_DATABASE_URL"][10:]),
        "MAESTRO_CONSOLE_SESSION_SECRET_FILE": rebase(env["MAESTRO_CONSOLE_SESSION_SECRET_FILE"]),
        "MAESTRO_CONSOLE_API_SERVER": url,
        "MAESTRO_CONSOLE_API_TOKEN_FILE": str(own_token),
        "MAESTRO_CONSOLE_API_CA_FILE": "",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "maestro.workers.console"],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def push(token: str) -> int:
        body = json.dumps({"samples": [{"deployment": "chat", "kind": "policy-flag", "requestId": "r1"}]})
        req = urllib.request.Request(
            base + "/api/v1/samples",
            data=body.encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    try:
        wait_for(healthy, timeout=30, what="the console's /healthz")
        assert push("api-server-token") == 401
        assert push("projected") == 202
        assert Path(env["MAESTRO_CONSOLE_DATABASE_URL"].removeprefix("sqlite:///")).is_file()
    finally:
        stop_group(proc, 10)
