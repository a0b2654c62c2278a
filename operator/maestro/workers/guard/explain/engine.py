"""The model server as a scorer: log p(response | perturbed prompt), batched, cached and costed.

Everything goes through vLLM's OpenAI API: `/tokenize` + `/detokenize` render a chat request with the
model's own chat template (so perturbations edit the exact text the model sees), `/v1/completions`
generates the response greedily when the caller gives none, and scores perturbations with
`prompt_logprobs=0` and `max_tokens=1` — up to `BATCH` prompts per request. The response's tokens are
the last prompt tokens whose decoded text covers the response; their log-probabilities, summed (in
total, and per response sentence), are what the methods explain.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from maestro.workers.guard.errors import GuardError
from maestro.workers.guard.explain.segments import Segment, masked

#: Prompts per scoring request: one engine batch, small enough for a CPU server's scheduler.
BATCH = 32

#: path, JSON body -> (HTTP status, parsed JSON or None)
Post = Callable[[str, dict[str, Any]], Awaitable[tuple[int, Any]]]

NO_PROMPT_LOGPROBS = (
    "/v1/explain needs a model server that returns prompt log-probabilities (vLLM's /v1/completions "
    "with prompt_logprobs); this one {why}."
)


def _upstream_message(doc: Any) -> str:
    if isinstance(doc, dict):
        err = doc.get("error")
        msg = err.get("message") if isinstance(err, dict) else doc.get("detail") or doc.get("message")
        if isinstance(msg, str):
            return msg[:300]
    return "no message"


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, inverted (token strings like "Ġthe" back to bytes)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _token_texts(strs: Sequence[str], text: str) -> list[str] | None:
    """Token strings as text pieces that concatenate to `text` (byte-level BPE or SentencePiece)."""
    dec = _byte_decoder()
    if all(ch in dec for s in strs for ch in s):
        raw = [bytes(dec[ch] for ch in s) for s in strs]
        if b"".join(raw) == text.encode():
            # a multi-byte character split over tokens is given to the token that completes it
            out, buf = [], b""
            for r in raw:
                buf += r
                try:
                    out.append(buf.decode())
                    buf = b""
                except UnicodeDecodeError:
                    out.append("")
            return out
    pieces = [s.replace("\u2581", " ") for s in strs]
    joined = "".join(pieces)
    if joined == text:
        return pieces
    if joined.startswith(" ") and joined[1:] == text and pieces:
        pieces[0] = pieces[0][1:]
        return pieces
    return None


@dataclass
class Cost:
    """What an explanation cost the model server."""

    requests: int = 0
    forward_passes: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "engine_requests": self.requests,
            "forward_passes": self.forward_passes,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(time.perf_counter() - self.started, 4),
        }


class Engine:
    """One explanation's view of the model server (`post` sends a request; see `Post`)."""

    def __init__(self, post: Post, model: str, batch: int = BATCH) -> None:
        self.post = post
        self.model = model
        self.batch = batch
        self.cost = Cost()

    async def _call(self, path: str, body: dict[str, Any], *, generates: bool = False) -> Any:
        self.cost.requests += 1
        status, doc = await self.post(path, body)
        if status in (404, 405) and path != "/v1/completions":
            raise GuardError(
                501,
                f"The model server has no {path}: explaining a chat request needs vLLM's /tokenize and "
                "/detokenize to render the chat template. Send a completion `prompt` instead.",
                "explain_unsupported",
            )
        if status != 200 or not isinstance(doc, dict):
            code = 400 if status == 400 else 502
            raise GuardError(
                code,
                f"The model server refused the explanation's {path} request ({status}: "
                f"{_upstream_message(doc)}).",
                "explain_upstream_error",
            )
        usage = doc.get("usage")
        if isinstance(usage, dict):
            pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
            self.cost.prompt_tokens += pt if isinstance(pt, int) else 0
            if generates:
                self.cost.completion_tokens += ct if isinstance(ct, int) else 0
        return doc

    async def render_chat(self, body: dict[str, Any]) -> str:
        """The prompt text the model sees for a chat request (its chat template, generation prompt on)."""
        query: dict[str, Any] = {
            "model": self.model,
            "messages": body["messages"],
            "add_generation_prompt": True,
        }
        for k in ("chat_template_kwargs", "tools"):
            if k in body:
                query[k] = body[k]
        doc = await self._call("/tokenize", query)
        tokens = doc.get("tokens")
        if not isinstance(tokens, list):
            raise GuardError(
                502, "The model server's /tokenize returned no tokens.", "explain_upstream_error"
            )
        doc = await self._call("/detokenize", {"model": self.model, "tokens": tokens})
        prompt = doc.get("prompt")
        if not isinstance(prompt, str):
            raise GuardError(
                502, "The model server's /detokenize returned no text.", "explain_upstream_error"
            )
        return prompt

    async def token_spans(self, text: str) -> list[tuple[int, int]]:
        """The model's tokens of `text` as [start, end) character spans."""
        doc = await self._call(
            "/tokenize",
            {"model": self.model, "prompt": text, "add_special_tokens": False, "return_token_strs": True},
        )
        strs = doc.get("token_strs")
        pieces = _token_texts(strs, text) if isinstance(strs, list) else None
        if pieces is None:
            raise GuardError(
                501,
                "Token granularity needs the model server's token strings (vLLM /tokenize with "
                "return_token_strs) from a byte-level BPE or SentencePiece tokenizer; use word.",
                "explain_unsupported",
                param="granularity",
            )
        out, pos = [], 0
        for p in pieces:
            if p:
                out.append((pos, pos + len(p)))
            pos += len(p)
        return [(s, e) for s, e in out if text[s:e].strip()]

    async def generate(self, prompt: str, max_tokens: int) -> str:
        """The greedy (temperature 0) continuation of `prompt`: the response to explain."""
        doc = await self._call(
            "/v1/completions",
            {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
            generates=True,
        )
        self.cost.forward_passes += 1
        try:
            text = doc["choices"][0]["text"]
        except (KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise GuardError(502, "The model server returned no completion text.", "explain_upstream_error")
        return text

    async def score(self, prompts: Sequence[str], response: str) -> list[list[tuple[int, int, float]]]:
        """Per prompt: the response's tokens as (start, end, logprob), response character offsets."""
        out: list[list[tuple[int, int, float]]] = []
        for i in range(0, len(prompts), self.batch):
            chunk = [p + response for p in prompts[i : i + self.batch]]
            doc = await self._call(
                "/v1/completions",
                {
                    "model": self.model,
                    "prompt": chunk,
                    "max_tokens": 1,
                    "temperature": 0,
                    "prompt_logprobs": 0,
                },
            )
            self.cost.forward_passes += len(chunk)
            choices = doc.get("choices")
            if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)) or not isinstance(
                choices[0].get("prompt_logprobs"), list
            ):
                raise GuardError(501, NO_PROMPT_LOGPROBS.format(why="returned none"), "explain_unsupported")
            if len(choices) != len(chunk):
                raise GuardError(
                    502, "The model server answered a different number of prompts.", "explain_upstream_error"
                )
            ordered = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
            for c in ordered:
                plp = c.get("prompt_logprobs") if isinstance(c, dict) else None
                if not isinstance(plp, list):
                    raise GuardError(
                        501,
                        NO_PROMPT_LOGPROBS.format(why="returned none"),
                        "explain_unsupported",
                    )
                out.append(_response_tokens(plp, response))
        return out


def _response_tokens(plp: list[Any], response: str) -> list[tuple[int, int, float]]:
    """The trailing prompt tokens that spell `response`, as (start, end, logprob) in its coordinates."""
    toks: list[tuple[int, int, float]] = []
    end = len(response)
    for entry in reversed(plp):
        if end <= 0 or not isinstance(entry, dict) or not entry:
            break
        info = next(iter(entry.values()))
        if not isinstance(info, dict):
            break
        piece = info.get("decoded_token") or ""
        lp = info.get("logprob")
        if not isinstance(lp, (int, float)):
            raise GuardError(
                501, NO_PROMPT_LOGPROBS.format(why="sent no logprob values"), "explain_unsupported"
            )
        start = max(0, end - len(piece))
        toks.append((start, end, max(float(lp), -1e4)))  # -inf (vLLM's float32 underflow) stays finite
        end = start
    toks.reverse()
    return toks


class Scorer:
    """f(mask): the outputs explained, for binary keep-masks over the segments, cached per mask.

    Output 0 is log p(response | prompt with the unkept segments deleted), summed over the response's
    tokens; outputs 1.. the same sum restricted to each response sentence (when asked for).
    """

    def __init__(
        self,
        engine: Engine,
        base: str,
        offsets: Sequence[int],
        segments: Sequence[Segment],
        response: str,
        sentences: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.engine = engine
        self.base = base
        self.offsets = offsets
        self.segments = segments
        self.response = response
        self.sentences = list(sentences)
        self._cache: dict[tuple[bool, ...], list[float]] = {}

    @property
    def outputs(self) -> int:
        return 1 + len(self.sentences)

    def _reduce(self, toks: list[tuple[int, int, float]]) -> list[float]:
        vals = [sum(lp for _, _, lp in toks)]
        for s, e in self.sentences:
            vals.append(sum(lp for ts, te, lp in toks if ts < e and te > s))
        return vals

    async def __call__(self, masks: Sequence[Sequence[bool]]) -> list[list[float]]:
        keys = [tuple(bool(k) for k in m) for m in masks]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            prompts = [masked(self.base, self.offsets, self.segments, k) for k in todo]
            scored = await self.engine.score(prompts, self.response)
            for k, toks in zip(todo, scored, strict=True):
                self._cache[k] = self._reduce(toks)
        return [self._cache[k] for k in keys]
