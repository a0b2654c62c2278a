"""A real Prometheus for the tests (tests/ is on sys.path): the server and promtool built by
hack/prometheus/build.sh (`make test` passes MAESTRO_PROMETHEUS_BIN), with Kubernetes service
discovery — Debian's package lacks it, and it is what the chart's scrape configuration uses.

Outside CI a missing binary skips the test; in CI (CI=1) it fails: the suite must not pass by
skipping what it promises.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from ports import free_port

BUILD = Path(__file__).resolve().parents[1] / "hack" / "prometheus" / "build.sh"


def tool(name: str) -> str:
    """Path of `prometheus` or `promtool` from hack/prometheus/build.sh (never Debian's: its promtool
    rejects the chart's kubernetes_sd_configs, its server cannot discover anything in a cluster)."""
    root = os.environ.get("MAESTRO_PROMETHEUS_BIN")
    if not root:
        out = subprocess.run(
            [str(BUILD)],
            capture_output=True,
            text=True,
            env={**os.environ, "MAESTRO_PROMETHEUS_NO_BUILD": "1"},
        )
        root = out.stdout.strip() if out.returncode == 0 else ""
    if root and (Path(root) / name).exists():
        return str(Path(root) / name)
    msg = f"{name} not found: run `make prometheus-build` (or set MAESTRO_PROMETHEUS_BIN)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


class Prometheus:
    """One Prometheus process on a free port of `host` (loopback unless pods must reach it: the real
    node's host address), with `config` as its prometheus.yml."""

    def __init__(self, workdir: Path, config: dict[str, Any], host: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        cfg = workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        check = subprocess.run(
            [tool("promtool"), "check", "config", str(cfg)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={host}:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert self.proc.poll() is None, (workdir / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus did not become ready in 60 s"
            time.sleep(0.5)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (a PromQL error fails the test, naming the expression)."""
        try:
            data = self.api("query", query=expr)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{expr}: {e.read().decode()[:500]}") from e
        result = data["result"]
        return result if isinstance(result, list) else [result]

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def api_server_credentials(kubeconfig: Path, out: Path) -> dict[str, Any]:
    """The API server address and client TLS files from a cluster's kubeconfig, as the keys of a
    `kubernetes_sd_configs` entry (what a Prometheus outside the cluster needs)."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    files = {}
    for key, name in (
        ("certificate-authority-data", "ca.crt"),
        ("client-certificate-data", "client.crt"),
        ("client-key-data", "client.key"),
    ):
        path = out / name
        path.write_bytes(base64.b64decode(cluster.get(key) or user[key]))
        files[name] = str(path)
    return {
        "api_server": cluster["server"],
        "tls_config": {
            "ca_file": files["ca.crt"],
            "cert_file": files["client.crt"],
            "key_file": files["client.key"],
        },
    }


def chart_scrape_jobs(env: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scrape jobs and prometheus-adapter rules from the ConfigMap the chart installed."""
    cms = json.loads(env.kubectl("get", "configmaps", "-n", "maestro-system", "-o", "json").stdout)["items"]
    cm = next(c for c in cms if "maestro-scrape-configs.yaml" in (c.get("data") or {}))
    jobs = yaml.safe_load(cm["data"]["maestro-scrape-configs.yaml"])["scrape_configs"]
    return jobs, yaml.safe_load(cm["data"]["maestro-adapter-rules.yaml"])


def scraping_the_cluster(
    env: Any, work: Path, host: str = "127.0.0.1", config: dict[str, Any] | None = None
) -> Prometheus:
    """A Prometheus outside the cluster with the chart's scrape jobs (interval 2 s), the way a
    user's Prometheus finds the operator, the guards and the monitors."""
    jobs, _ = chart_scrape_jobs(env)
    creds = api_server_credentials(env.kube.kubeconfig, work)
    for job in jobs:
        job["scrape_interval"] = "2s"
        for sd in job["kubernetes_sd_configs"]:
            sd.update(creds)
    return Prometheus(work, {**(config or {}), "scrape_configs": jobs}, host=host)
