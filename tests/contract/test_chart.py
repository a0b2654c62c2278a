"""The Helm chart, rendered by Helm's own engine (helm-python-sdk): lint, render several value sets,
validate every object against the Kubernetes schemas, keep RBAC equal to what the operator declares,
and reject bad values through values.schema.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "maestro"
helm = pytest.importorskip("helm_python")

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "ha-observability": {
        "operator": {"replicas": 2, "logLevel": "debug"},
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "prometheusRule": {"enabled": True},
        },
    },
    "minimal": {
        "webhook": {"enabled": False},
        "dashboards": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "metrics": {"scrapeConfig": {"enabled": False}},
        "operator": {"watchNamespaces": ["team-a", "team-b"]},
        "serviceAccount": {"create": False, "name": "existing-sa"},
    },
    "mirrored-images": {
        "images": {
            "worker": "registry.local/maestro-worker:0.1.0-cuda",
            "sidecar": "registry.local/maestro-sidecar:0.1.0",
            "vllm": "registry.local/vllm-openai:v0.33.0",
        },
        "operator": {
            "image": {"repository": "registry.local/maestro-operator"},
            "tolerations": [{"key": "infra", "operator": "Exists"}],
        },
        "storageClassName": "fast-ssd",
    },
    "cert-manager": {
        "webhook": {
            "certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}}
        }
    },
    # the review console: SQLite on a claim; PostgreSQL + TLS + an auth proxy (test_chart_console.py)
    "console-sqlite": {"console": {"enabled": True}},
    "console-postgres": {
        "console": {
            "enabled": True,
            "replicas": 2,
            "database": {"url": "postgresql://maestro@pg.db.svc/console", "passwordSecret": {"name": "pg"}},
            "tls": {"secretName": "console-tls"},
            "identityHeader": "X-Forwarded-User",
        }
    },
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    out = chart.render(values, name="maestro", namespace="maestro-system", is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_lint_is_clean() -> None:
    for values in VALUE_SETS.values():
        report = helm.lint(str(CHART), values, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_validates_against_kubernetes_schemas(name: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = render(VALUE_SETS[name])
    assert by_kind(docs, "Deployment") and by_kind(docs, "ClusterRole")
    for doc in docs:
        if doc["apiVersion"].startswith(("monitoring.coreos.com/", "kopf.dev/", "cert-manager.io/")):
            continue  # CRD kinds: checked by the server-side dry run in tests/cluster/test_chart_install.py
        kv.validate(doc, "1.35.0", strict=True)


def test_operator_pod_is_restricted() -> None:
    dep = by_kind(render({}), "Deployment")[0]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = pod["containers"][0]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"startupProbe", "livenessProbe", "readinessProbe", "resources"} <= set(c)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MAESTRO_VLLM_IMAGE"] == "vllm/vllm-openai:v0.33.0"
    assert ":" in c["image"] and not c["image"].endswith(":latest")


def test_images_are_configurable() -> None:
    docs = render(VALUE_SETS["mirrored-images"])
    c = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert c["image"] == "registry.local/maestro-operator:0.1.0"
    assert env["MAESTRO_WORKER_IMAGE"] == "registry.local/maestro-worker:0.1.0-cuda"
    assert env["MAESTRO_STORAGE_CLASS"] == "fast-ssd"


def test_workload_placement_values_reach_the_operators_settings() -> None:
    from maestro.builders.settings import Settings

    gpu_pool = {"pool": "h100"}
    tolerations = [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    docs = render(
        {
            "workloads": {
                "jobs": {"nodeSelector": gpu_pool, "tolerations": tolerations},
                "serving": {"nodeSelector": {"pool": "cpu"}},
            }
        }
    )
    c = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    settings = Settings.from_env({e["name"]: e["value"] for e in c["env"] if "value" in e})
    assert settings.jobs.node_selector == gpu_pool and list(settings.jobs.tolerations) == tolerations
    assert settings.serving.node_selector == {"pool": "cpu"} and settings.serving.tolerations == ()
    defaults = by_kind(render({}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert not [e for e in defaults["env"] if "NODE_SELECTOR" in e["name"] or "TOLERATIONS" in e["name"]]


def test_guard_redis_values_reach_the_operators_settings() -> None:
    from maestro.builders.settings import Settings

    redis = {"url": "redis://redis.infra.svc:6379/0", "passwordSecretRef": {"name": "redis-auth"}}
    docs = render({"guard": {"rateLimits": {"redis": redis}}})
    c = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    settings = Settings.from_env({e["name"]: e["value"] for e in c["env"] if "value" in e})
    assert settings.guard_limits_redis_url == redis["url"]
    assert (settings.guard_limits_redis_password_secret, settings.guard_limits_redis_password_key) == (
        "redis-auth",
        "password",
    )
    defaults = by_kind(render({}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert not [e for e in defaults["env"] if "REDIS" in e["name"]]  # no Redis: limits per pod


def test_analysis_values_reach_the_operators_settings() -> None:
    from maestro.builders.settings import Settings

    analysis = {
        "prometheus": {"url": "http://prometheus.monitoring.svc:9090"},
        "window": "30m",
        "intervalSeconds": 120,
        "minEffect": 0.05,
    }
    c = by_kind(render({"analysis": analysis}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    settings = Settings.from_env({e["name"]: e["value"] for e in c["env"] if "value" in e})
    assert settings.prometheus_url == "http://prometheus.monitoring.svc:9090"
    assert (settings.analysis_window, settings.analysis_interval_seconds, settings.analysis_min_effect) == (
        "30m",
        120,
        0.05,
    )
    defaults = by_kind(render({}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    default_settings = Settings.from_env({e["name"]: e["value"] for e in defaults["env"] if "value" in e})
    assert default_settings.prometheus_url is None and default_settings.analysis_window == "1h"
    for bad in ({"prometheus": {"url": "http://u:pw@prom:9090"}}, {"window": "1 hour"}, {"minEffect": 0}):
        with pytest.raises(Exception, match="analysis"):
            render({"analysis": bad})


def test_cluster_role_is_exactly_what_the_operator_declares() -> None:
    from maestro.k8s.rbac import RULES

    on_disk = yaml.safe_load((CHART / "files/rbac/rules.yaml").read_text())
    assert on_disk == RULES, (
        "charts/maestro/files/rbac/rules.yaml drifted from maestro.k8s.rbac.RULES; regenerate: "
        ".venv/bin/python -c 'import yaml; from maestro.k8s.rbac import RULES; "
        "print(yaml.safe_dump(RULES, sort_keys=False))' > charts/maestro/files/rbac/rules.yaml"
    )
    role = by_kind(render({}), "ClusterRole")[0]
    assert role["rules"] == RULES
    assert not any("secrets" in r["resources"] for r in role["rules"])
    ha = by_kind(render(VALUE_SETS["ha-observability"]), "ClusterRole")[0]
    assert ha["rules"][: len(RULES)] == RULES and ha["rules"][-1]["apiGroups"] == ["kopf.dev"]


def test_optional_objects_follow_values() -> None:
    default_kinds = {d["kind"] for d in render({})}
    assert {"ServiceMonitor", "PrometheusRule", "ClusterKopfPeering"}.isdisjoint(default_kinds)
    assert {"NetworkPolicy", "ConfigMap", "ServiceAccount"} <= default_kinds
    ha = render(VALUE_SETS["ha-observability"])
    assert {"ServiceMonitor", "PrometheusRule", "ClusterKopfPeering"} <= {d["kind"] for d in ha}
    assert "--peering" in by_kind(ha, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    minimal = render(VALUE_SETS["minimal"])
    kinds = {d["kind"] for d in minimal}
    assert "NetworkPolicy" not in kinds and "ServiceAccount" not in kinds and "ConfigMap" not in kinds
    args = by_kind(minimal, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["run", "--namespace=team-a", "--namespace=team-b"]


def test_dashboards_ship_with_the_grafana_sidecar_label() -> None:
    import json

    cms = [d for d in by_kind(render({}), "ConfigMap") if "dashboard" in d["metadata"]["name"]]
    assert len(cms) >= 2
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        for body in cm["data"].values():
            assert json.loads(body)["panels"]


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"operator": {"replicaz": 2}}, "replicaz"),
        ({"operator": {"replicas": "two"}}, "replicas"),
        ({"webhook": {"enabled": "yes"}}, "enabled"),
        ({"images": {"worker": ""}}, "worker"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"unknownTopLevel": True}, "unknownTopLevel"),
        ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "interval"),
        ({"guard": {"rateLimits": {"redis": {"url": "http://redis:6379"}}}}, "url"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], needle: str) -> None:
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(Exception) as err:
        chart.validate_schema(values)
    assert needle in str(err.value)


def test_cert_manager_certificate_is_mounted_where_the_operator_reads_it() -> None:
    assert not by_kind(render({}), "Certificate")
    docs = render({"webhook": {"certManager": {"enabled": True}}})
    cert = by_kind(docs, "Certificate")[0]
    issuer = by_kind(docs, "Issuer")[0]
    assert cert["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer"}
    assert "maestro-operator.maestro-system.svc" in cert["spec"]["dnsNames"]
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "webhook-certs")
    assert vol["secret"]["secretName"] == cert["spec"]["secretName"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "webhook-certs")
    assert env["MAESTRO_WEBHOOK_CERT_DIR"] == mount["mountPath"]
    corp = render(VALUE_SETS["cert-manager"])
    assert not by_kind(corp, "Issuer")
    assert by_kind(corp, "Certificate")[0]["spec"]["issuerRef"] == {
        "kind": "ClusterIssuer",
        "name": "corp-ca",
    }


def test_peering_objects_follow_the_watch_scope() -> None:
    cluster_wide = render({"operator": {"replicas": 2}})
    assert [d["kind"] for d in cluster_wide if d["apiVersion"] == "kopf.dev/v1"] == ["ClusterKopfPeering"]
    scoped = render({"operator": {"replicas": 3, "watchNamespaces": ["team-a", "team-b"]}})
    peerings = [d for d in scoped if d["apiVersion"] == "kopf.dev/v1"]
    assert {(d["kind"], d["metadata"]["namespace"]) for d in peerings} == {
        ("KopfPeering", "team-a"),
        ("KopfPeering", "team-b"),
    }
    args = by_kind(scoped, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering" in args


def _scrape_config(values: dict[str, Any]) -> dict[str, Any]:
    cm = next(
        d for d in by_kind(render(values), "ConfigMap") if d["metadata"]["name"].endswith("-prometheus")
    )
    return {k: yaml.safe_load(v) for k, v in cm["data"].items()}


def test_plain_prometheus_scrape_config_selects_what_the_operator_creates(tmp_path: Path) -> None:
    """The jobs keep exactly the metrics Service's label and port names the builders write, and a
    real promtool accepts them (the e2e tier then scrapes a running deployment with them)."""
    import re
    import subprocess

    from maestro.builders import serving

    data = _scrape_config({})
    jobs = {j["job_name"]: j for j in data["maestro-scrape-configs.yaml"]["scrape_configs"]}
    relabel = jobs["maestro-serving"]["relabel_configs"]
    label = "__meta_kubernetes_service_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", serving.METRICS_LABEL)
    assert relabel[0] == {"source_labels": [label], "action": "keep", "regex": "true"}
    ports = re.fullmatch(relabel[1]["regex"], serving.METRICS_PORT_NAME) and re.fullmatch(
        relabel[1]["regex"], serving.GUARD_METRICS_PORT_NAME
    )
    assert ports, relabel[1]
    svc = serving.build_metrics_service(
        {"kind": "LLMDeployment", "metadata": {"name": "d", "namespace": "n", "uid": "u"}}
    )
    assert svc["metadata"]["labels"][serving.METRICS_LABEL] == "true"
    assert {p["name"] for p in svc["spec"]["ports"]} == {
        serving.METRICS_PORT_NAME,
        serving.GUARD_METRICS_PORT_NAME,
    }
    targets = {r.get("target_label") for r in relabel}
    assert {"namespace", "service", "pod"} <= targets  # what dashboards, alerts and KEDA filter on
    assert jobs["maestro-operator"]["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["maestro-system"]
    scoped = _scrape_config({"operator": {"watchNamespaces": ["team-a"]}})["maestro-scrape-configs.yaml"]
    assert scoped["scrape_configs"][0]["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["team-a"]

    adapter = data["maestro-adapter-rules.yaml"]["rules"]
    assert {r["name"]["as"] for r in adapter} == set(serving.HPA_METRICS.values())

    from prom import tool  # tests/prom.py: hack/prometheus/build.sh's promtool (make test builds it)

    promtool = tool("promtool")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(data["maestro-scrape-configs.yaml"]))
    out = subprocess.run([promtool, "check", "config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
