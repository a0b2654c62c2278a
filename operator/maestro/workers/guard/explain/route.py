"""The steps of `POST /v1/explain`, in the order and with the refusals of chat and completions.

authorize → admit (rate and token budget) → read the JSON body → check the model → options (method
allowed by the policy, granularity, sample cap; 400s name the field or limit) → input rules on the
prompt and on a caller-given response (the same 400 as chat for blocked content; PII redacted first,
so only redacted text is explained or echoed) → maxInputTokens → segments (400 above
`request.explain.maxSegments`, before the model server is asked anything) → render and, without a
given response, generate it greedily (output rules apply to it) → score the perturbations → the
answer (JSON, or HTML with `?format=html`). The model server's token usage is charged to the key's
budget; the guard writes one audit line and one monitor event as for any request (`Guard._finish`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from maestro.workers.guard import codec, contract
from maestro.workers.guard.errors import GuardError, bad_request
from maestro.workers.guard.explain import render
from maestro.workers.guard.explain.engine import Engine, Scorer
from maestro.workers.guard.explain.methods import METHODS
from maestro.workers.guard.explain.segments import (
    GRANULARITIES,
    Part,
    Segment,
    segment,
    sentence_spans,
    spans,
)
from maestro.workers.guard.rules import (
    ROUTE_CHAT,
    ROUTE_COMPLETIONS,
    _blocking,
    check_input,
    input_too_long,
    output_blocked,
    redact,
)

if TYPE_CHECKING:
    from maestro.workers.guard.config import Policy
    from maestro.workers.guard.proxy import Active, Guard, _Req

ROUTE = "explain"
PATH = "/v1/explain"
#: Response length generated when the request gives neither a response nor max_tokens.
DEFAULT_MAX_TOKENS = 64


class Options:
    """The explanation's own request fields, validated against the policy."""

    def __init__(self, body: dict[str, Any], policy: Policy, query: Any) -> None:
        allowed = policy.explain_methods
        method = body.get("method", allowed[0])
        if method not in METHODS:
            raise bad_request(f"'method' must be one of {', '.join(METHODS)}.", param="method")
        if method not in allowed:
            raise GuardError(
                400,
                f"Method {method!r} is not allowed on this endpoint (request.explain.methods: "
                f"{', '.join(allowed)}).",
                "explain_method_not_allowed",
                param="method",
                rule="explain.methods",
            )
        self.method: str = method
        gran = body.get("granularity", "word")
        if gran not in GRANULARITIES:
            raise bad_request(
                f"'granularity' must be one of {', '.join(GRANULARITIES)}.", param="granularity"
            )
        self.granularity: str = gran
        resp = body.get("response")
        if resp is not None and (not isinstance(resp, str) or not resp):
            raise bad_request("'response' must be a non-empty string when given.", param="response")
        self.response: str | None = resp
        self.per_sentence = _bool(body, "per_sentence")
        if _bool(body, "stream"):
            raise bad_request("/v1/explain does not stream; drop 'stream'.", param="stream")
        self.samples: int | None = _int(body, "samples", 1)
        cap = policy.explain_max_samples
        if self.samples is not None and self.samples > cap:
            raise GuardError(
                400,
                f"'samples' is {self.samples}; this endpoint scores at most {cap} perturbations per "
                "explanation (request.explain.maxSamples).",
                "explain_too_many_samples",
                param="samples",
                rule="explain.maxSamples",
            )
        self.seed = _int(body, "seed", 0) or 0
        max_tokens = _int(body, "max_tokens", 1) or DEFAULT_MAX_TOKENS
        if policy.max_output_tokens is not None:
            max_tokens = min(max_tokens, policy.max_output_tokens)
        self.max_tokens = max_tokens
        fmt = query.get("format") or body.get("format") or "json"
        if fmt not in ("json", "html"):
            raise bad_request("'format' must be json or html.", param="format")
        self.html = fmt == "html"

    def sample_budget(self, n: int, policy: Policy) -> int:
        """SHAP/LIME perturbations: the caller's, else 4 per segment + 32, within the policy's cap."""
        return self.samples or min(policy.explain_max_samples, 4 * n + 32)


def _bool(body: dict[str, Any], key: str) -> bool:
    v = body.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise bad_request(f"'{key}' must be a boolean.", param=key)
    return v


def _int(body: dict[str, Any], key: str, minimum: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise bad_request(f"'{key}' must be an integer >= {minimum}.", param=key)
    return v


def _parts(route: str, body: dict[str, Any]) -> list[Part]:
    if route == ROUTE_COMPLETIONS:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise bad_request("/v1/explain explains one string 'prompt' (or 'messages').", param="prompt")
        return [Part(None, None, prompt)]
    parts = []
    for i, msg in enumerate(body["messages"]):
        content = msg.get("content")
        if content is None:
            continue
        if not isinstance(content, str):
            raise bad_request(
                f"messages[{i}].content: /v1/explain needs string message contents.", param=f"messages[{i}]"
            )
        parts.append(Part(i, msg["role"], content))
    return parts


def _offsets(base: str, parts: list[Part]) -> list[int]:
    """Where each part's text sits in the rendered prompt (found in order)."""
    out, pos = [], 0
    for p in parts:
        at = base.find(p.text, pos)
        if at < 0:
            raise GuardError(
                422,
                f"The chat template changes the text of messages[{p.message}], so its segments cannot be "
                "located; explain it as a completion 'prompt' instead.",
                "explain_unsupported",
            )
        out.append(at)
        pos = at + len(p.text)
    return out


def _post(guard: Guard, policy: Policy, rid: str) -> Any:
    async def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        resp = await guard.post_upstream(
            path,
            codec.dumps(body),
            {"Content-Type": "application/json", contract.REQUEST_ID_HEADER: rid},
            policy,
        )
        data = await guard.read_upstream(resp)
        resp.release()
        try:
            return resp.status, codec.loads(data)
        except ValueError:
            return resp.status, None

    return post


def _check(r: _Req, active: Active, route: str, body: dict[str, Any]) -> None:
    checked = check_input(active.policy, active.input_scanner, route, body, want_text=True)
    for k, v in checked.pii.items():
        r.pii[k] = r.pii.get(k, 0) + v
    r.decisions.extend(checked.decisions)
    r.prompt_text = "\n".join(t for t in (r.prompt_text, checked.prompt_text) if t)
    r.prompt_chars = len(r.prompt_text)
    r.est_tokens += checked.est_tokens


async def serve(guard: Guard, request: web.Request, r: _Req, active: Active) -> web.StreamResponse:
    """One `/v1/explain` request; every refusal is a `GuardError` (the caller turns it into the answer)."""
    policy = active.policy
    if not policy.explain_enabled:
        raise GuardError(
            404, "Explanations are off for this endpoint (request.explain.enabled).", "explain_disabled"
        )
    access = guard._authorize(request, r, policy)
    await guard._admit(r, access, policy)
    if not policy.prompt_logprobs:
        raise GuardError(
            501,
            "/v1/explain needs prompt log-probabilities, which this endpoint's model server cannot compute "
            "safely (vLLM on CPU serving LoRA adapters: a scoring request batched with others kills the "
            "engine); explanations work on GPU, or on CPU without adapters.",
            "explain_unsupported",
        )
    raw, body = await guard._read_json(request, policy)
    guard._check_model(r, body, access)
    opts = Options(body, policy, request.query)
    route = ROUTE_CHAT if "messages" in body else ROUTE_COMPLETIONS
    _check(r, active, route, body)
    if opts.response is not None:
        given = {"prompt": opts.response}
        _check(r, active, ROUTE_COMPLETIONS, given)
        opts.response = given["prompt"]
    cap = policy.max_input_tokens
    if cap is not None and len(raw) > cap:
        exact = await guard._count_tokens(route, body, policy)
        tokens = exact if exact is not None else r.est_tokens
        if tokens > cap:
            raise input_too_long(policy, tokens, exact is not None)

    parts = _parts(route, body)
    engine = Engine(_post(guard, policy, r.rid), r.model)
    try:
        return await _explain(guard, r, active, opts, route, body, parts, engine)
    finally:
        guard._usage(
            r,
            {"prompt_tokens": engine.cost.prompt_tokens, "completion_tokens": engine.cost.completion_tokens},
        )


async def _explain(
    guard: Guard,
    r: _Req,
    active: Active,
    opts: Options,
    route: str,
    body: dict[str, Any],
    parts: list[Part],
    engine: Engine,
) -> web.StreamResponse:
    policy = active.policy
    limit = policy.explain_max_segments

    def too_many(n: int) -> GuardError:
        return GuardError(
            400,
            f"The prompt has {n} {opts.granularity} segments; this endpoint explains at most {limit} "
            "(request.explain.maxSegments). Use a coarser granularity or a shorter prompt.",
            "explain_too_many_segments",
            param="granularity",
            rule="explain.maxSegments",
        )

    if opts.granularity != "token":
        part_spans = [spans(p.text, opts.granularity) for p in parts]
        n = sum(len(s) for s in part_spans)
        if n > limit:
            raise too_many(n)
    base = await engine.render_chat(body) if route == ROUTE_CHAT else parts[0].text
    offsets = _offsets(base, parts) if route == ROUTE_CHAT else [0]
    if opts.granularity == "token":
        part_spans = []
        for p in parts:
            part_spans.append(await engine.token_spans(p.text) if p.text.strip() else [])
            if sum(len(s) for s in part_spans) > limit:
                raise too_many(sum(len(s) for s in part_spans))
    segs: list[Segment] = segment(parts, part_spans)
    if not segs:
        raise bad_request("The prompt has no text to explain.", "explain_empty_prompt")

    generated = opts.response is None
    response = opts.response if opts.response is not None else await engine.generate(base, opts.max_tokens)
    if generated and active.output_scanner is not None:
        hits = active.output_scanner.scan(response)
        hit = _blocking(active.output_scanner, hits)
        if hit is not None:
            raise output_blocked(hit)
        pii = [h for h in hits if h.kind == "pii"]
        if pii:
            for h in pii:
                r.pii[h.label] = r.pii.get(h.label, 0) + 1
            r.decisions.append({"rule": "pii.output", "action": "redact"})
            response = redact(response, pii)
    if not response.strip():
        raise GuardError(
            422,
            "The response is empty; there is nothing to explain (give one in 'response').",
            "explain_empty",
        )
    sentences = sentence_spans(response) if opts.per_sentence else []
    scorer = Scorer(engine, base, offsets, segs, response, sentences)
    n = len(segs)
    rows, full = await METHODS[opts.method](scorer, n, opts.sample_budget(n, policy), opts.seed)

    r.response_chars = len(response)
    if policy.log_prompts:
        r.response_text = response
    doc: dict[str, Any] = {
        "object": "explanation",
        "model": r.model,
        "method": opts.method,
        "granularity": opts.granularity,
        "target": "log p(response | prompt), summed over the response's tokens",
        "response": response,
        "response_generated": generated,
        "log_likelihood": full[0],
        "parts": [
            {"index": i, "message": p.message, "role": p.role, "text": p.text} for i, p in enumerate(parts)
        ],
        "segments": [
            {
                "index": i,
                "part": s.part,
                "message": parts[s.part].message,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "attribution": rows[i][0],
            }
            for i, s in enumerate(segs)
        ],
        "cost": engine.cost.as_json(),
    }
    if sentences:
        doc["response_sentences"] = [
            {
                "start": s,
                "end": e,
                "text": response[s:e],
                "log_likelihood": full[j + 1],
                "attributions": [rows[i][j + 1] for i in range(n)],
            }
            for j, (s, e) in enumerate(sentences)
        ]
    r.status = 200
    headers = {contract.REQUEST_ID_HEADER: r.rid}
    if opts.html:
        return web.Response(text=render.to_html(doc), content_type="text/html", headers=headers)
    return web.Response(body=codec.dumps(doc), content_type="application/json", headers=headers)
