"""Dashboards and alerts: valid, up to date, and naming only series that are really exported.

The live scrape runs the monitor against the fake vLLM (vLLM 0.33 names) with traffic that
touches every labelled series, plus a probe round and feedback, then reads its /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import yaml
from monitor_helpers import FakeChat, Served, event, parse_scrape

from maestro.workers.events import EventEmitter
from maestro.workers.monitor import contract as c
from maestro.workers.monitor import dashboards

pytestmark = pytest.mark.unit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FILES = os.path.join(ROOT, "charts", "maestro", "files")
NAME = re.compile(r"(?<![\w:$])((?:maestro_|vllm:)[A-Za-z0-9_:]*)")
#: Gone in vLLM 0.33: a panel using them would be silently empty.
DEPRECATED_VLLM = ("vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds", "vllm:gpu_prefix_cache")


#: Serving-side series (a live scrape of the monitor and the guard must have them).
SERVING = ("maestro_monitor_", "maestro_guard_", "vllm:")


def _exprs(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def _rule_exprs() -> list[str]:
    return [r["expr"] for g in dashboards.alert_rules()["groups"] for r in g["rules"]]


def _names(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in NAME.findall(e)}


def test_committed_files_are_generated_and_valid_json() -> None:
    assert dashboards.write_all(FILES, check=True) == [], "run `maestro monitor dashboards` and commit"
    for name in ("maestro-serving.json", "maestro-operator.json"):
        with open(os.path.join(FILES, "dashboards", name)) as fh:
            board = json.load(fh)
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        assert board["uid"] and board["title"].startswith("Maestro")
        assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "namespace"}
        for p in board["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, p["title"]
            for t in p.get("targets", []):
                assert t["expr"] and t["datasource"]["uid"] == "${datasource}"


def test_serving_dashboard_covers_the_issue() -> None:
    names = _names(_exprs(dashboards.serving_dashboard()))
    for needed in (
        c.TTFT,
        c.VLLM_GENERATION_TOKENS,
        c.VLLM_KV_CACHE_USAGE_PERC,
        c.VLLM_NUM_WAITING,
        c.REQUESTS,
        c.POLICY_DECISIONS,
        c.DRIFT_PSI,
        c.FEEDBACK,
        c.PII_DETECTIONS,
        c.INTER_TOKEN_LATENCY,
        c.GUARD_VARIANT_REQUESTS,
        c.GUARD_VARIANT_DURATION,
        c.GUARD_VARIANT_TOKENS,
        c.GUARD_VARIANT_REFUSALS,
        c.GUARD_VARIANT_POLICY_HITS,
        c.VARIANT_FEEDBACK_SCORE,
    ):
        assert any(n.startswith(needed.removesuffix("_total")) for n in names), needed


def test_no_deprecated_vllm_names() -> None:
    every = " ".join(_exprs(dashboards.serving_dashboard()) + _rule_exprs())
    for old in DEPRECATED_VLLM:
        assert old not in every


def test_operator_dashboard_uses_the_operator_contract() -> None:
    names = _names(_exprs(dashboards.operator_dashboard())) | {
        n for n in _names(_rule_exprs()) if not n.startswith(SERVING)
    }
    assert names
    for n in names:
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        assert base in c.OPERATOR_METRICS or n in c.OPERATOR_METRICS, n


async def _live_scrape(start_monitor, fake_vllm, tmp_path) -> set[str]:
    """Scrape the monitor and the real guard after traffic that touches every labelled series."""
    from maestro.workers.guard.proxy import Guard

    fake, served = fake_vllm
    fake.serve(3, prompt_tokens=5, generation_tokens=9)
    upstream = await Served(FakeChat(lambda p: "A kind and lovely answer.").app).start()
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "name": "p",
                "digest": "d",
                "servedModelName": "tiny",
                "request": {"pii": {"input": "allow", "output": "allow"}},
                "audit": {"enabled": False, "logPrompts": True},
                # a traffic split, so the guard's per-variant series are exported too
                "variants": [
                    {"name": "base", "model": "tiny", "weight": 50},
                    {"name": "tuned", "model": "tiny", "weight": 50},
                ],
                "routingSalt": "test/tiny",
            }
        )
    )
    (tmp_path / "keys").mkdir()
    events_socket = os.path.join(tempfile.mkdtemp(prefix="mon-", dir="/tmp"), "ev.sock")
    guard = Guard(
        upstream.url,
        config_path=str(policy),
        keys_dir=str(tmp_path / "keys"),
        events_path=events_socket,
        reload_interval=0,
    )
    guard_served = await Served(guard.app).start()
    mon = await start_monitor(
        vllm_metrics_url=served.url + "/metrics",
        events_socket=events_socket,
        guard_url=guard_served.url,  # probes go through the real guard
        probes=True,
        served_model="tiny",
        probe_interval=3600,
        drift_reference_size=2,
        drift_window=2,
    )
    emitter = EventEmitter(events_socket)
    full = event(
        stream=True,
        promptText="Hello there, how are you today?",
        responseText="Damn, I am fine.",
        decisions=[{"rule": "pii.output", "action": "redact"}],
        pii={"EMAIL": 1},
        refusal=True,
        variant="base",  # feedback on it feeds the per-variant feedback score
    )
    for i in range(6):
        emitter.emit({**full, "requestId": f"r{i}", "status": 500 if i == 5 else 200})
    emitter.close()
    await mon.settle(6)
    assert (await mon.post_feedback({"requestId": "r0", "rating": 2, "correction": "Better."}))[0] == 202
    deadline = asyncio.get_running_loop().time() + 10
    while (
        mon.monitor.scraper.scrapes < 2
        or mon.monitor.prober.rounds < 1
        or not mon.monitor.metrics.registry.get_sample_value(c.PROBE_REQUESTS, {"result": "ok"})
    ):
        assert asyncio.get_running_loop().time() < deadline, "monitor did not scrape and probe in time"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the first probe round finishes and publishes
    assert mon.monitor.collector.processed == 6  # probe traffic through the guard is not user traffic
    _, samples = await mon.scrape()
    async with mon.session.get(guard_served.url + "/metrics") as resp:
        guard_samples = parse_scrape(await resp.text())
    await mon.monitor.stop()
    await guard_served.stop()
    await upstream.stop()
    shutil.rmtree(os.path.dirname(events_socket), ignore_errors=True)
    return set(samples) | set(guard_samples)


async def test_every_dashboard_and_alert_series_is_in_a_live_scrape(
    start_monitor, fake_vllm, tmp_path
) -> None:
    scraped = await _live_scrape(start_monitor, fake_vllm, tmp_path)
    wanted = _names(_exprs(dashboards.serving_dashboard())) | {
        n for n in _names(_rule_exprs()) if n.startswith(SERVING)
    }
    missing = sorted(wanted - scraped)
    assert not missing, f"dashboard/alert series that nothing exports: {missing}"


def _promtool() -> str:
    from prom import tool  # tests/prom.py: hack/prometheus/build.sh's promtool (make test builds it)

    return tool("promtool")


def test_alert_rules_pass_promtool(tmp_path) -> None:
    promtool = _promtool()
    rules = os.path.join(FILES, "alerts", "maestro-rules.yaml")
    out = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_queries_are_valid_promql(tmp_path) -> None:
    """promtool parses each panel query as a recording rule (Grafana variables substituted)."""
    promtool = _promtool()
    rules = []
    for board in (dashboards.serving_dashboard(), dashboards.operator_dashboard()):
        for i, expr in enumerate(_exprs(board)):
            concrete = (
                expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$service", ".*")
            )
            rules.append({"record": f"maestro:check:{board['uid'].replace('-', '_')}_{i}", "expr": concrete})
    path = tmp_path / "dash-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_monitors_copy_of_the_guards_variant_names_is_the_guards() -> None:
    """The dashboards (monitor) and the operator's analysis (guard contract) read the same series."""
    from maestro.workers.guard import contract as g

    assert (
        c.GUARD_VARIANT_REQUESTS,
        c.GUARD_VARIANT_DURATION,
        c.GUARD_VARIANT_TOKENS,
        c.GUARD_VARIANT_REFUSALS,
        c.GUARD_VARIANT_POLICY_HITS,
    ) == (
        g.VARIANT_REQUESTS_METRIC,
        g.VARIANT_DURATION_METRIC,
        g.VARIANT_TOKENS_METRIC,
        g.VARIANT_REFUSALS_METRIC,
        g.VARIANT_POLICY_HITS_METRIC,
    )


def test_variant_error_rate_alert_fires_for_the_failing_variant_only(tmp_path) -> None:
    """promtool's rule unit test: variant `tuned` fails 20% of its requests for 30 minutes, `base` none
    (and a second deployment's `tuned` 1%): the alert fires for that one series, after its `for`."""
    promtool = _promtool()
    rule = next(
        r
        for g in dashboards.alert_rules()["groups"]
        for r in g["rules"]
        if r["alert"] == "MaestroVariantErrorRateHigh"
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "variants", "rules": [rule]}]}))
    req = c.GUARD_VARIANT_REQUESTS

    def series(svc: str, variant: str, status: str, per_min: int) -> dict[str, str]:
        return {
            "series": f'{req}{{namespace="t", service="{svc}", variant="{variant}", status="{status}"}}',
            "values": f"0+{per_min}x40",
        }

    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("chat-metrics", "base", "200", 100),
                    series("chat-metrics", "tuned", "200", 80),
                    series("chat-metrics", "tuned", "500", 20),
                    series("other-metrics", "tuned", "200", 99),
                    series("other-metrics", "tuned", "503", 1),
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "MaestroVariantErrorRateHigh", "exp_alerts": []},
                    {
                        "eval_time": "30m",
                        "alertname": "MaestroVariantErrorRateHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "t",
                                    "service": "chat-metrics",
                                    "variant": "tuned",
                                },
                                "exp_annotations": {
                                    k: v.replace("{{ $labels.variant }}", "tuned")
                                    .replace("{{ $labels.namespace }}", "t")
                                    .replace("{{ $labels.service }}", "chat-metrics")
                                    .replace("{{ $value | humanizePercentage }}", "20%")
                                    for k, v in rule["annotations"].items()
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    out = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
