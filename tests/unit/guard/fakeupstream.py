"""A small, controllable OpenAI-compatible server for guard tests (aiohttp, in-process).

It answers like vLLM: JSON with `usage`, SSE `data:` chunks ending in `[DONE]`, a trailing usage
chunk with `choices: []` when `stream_options.include_usage` is set, `/health` and `/v1/models`.
Tests steer it through attributes (reply text or explicit chunks, delays, failures) and read back
what reached it (`requests`), which is how they see what the guard rewrote.
Run standalone: `python tests/unit/guard/fakeupstream.py --port 8000`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeUpstream:
    model: str = "tiny"
    reply: str = "Hello! How can I help you today?"
    #: Explicit SSE content pieces; default splits `reply` into `chunk_chars` pieces.
    chunks: list[str] | None = None
    chunk_chars: int = 8
    delay: float = 0.0  # before the response headers
    chunk_delay: float = 0.0  # between SSE events
    status: int = 200  # non-200: answer an OpenAI-shaped error
    #: "drop": close the connection after 2 SSE events; "hang": stop sending after 2 events.
    stream_fault: str | None = None
    healthy: bool = True
    #: Non-streamed: this choice (message, logprobs...) instead of the reply text; streamed: these
    #: choice objects, one per SSE event, instead of the content pieces (tool calls, reasoning).
    choice: dict[str, Any] | None = None
    stream_choices: list[dict[str, Any]] | None = None
    #: Count for POST /tokenize (vLLM has it); None: 404, as from `transformers serve`.
    tokenize_count: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of the same requests
    keep_requests: int = 100
    #: More model names it serves besides `model` (adapters, as vLLM serves LoRA adapters by name).
    extra_models: tuple[str, ...] = ()

    # -- app ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_post("/tokenize", self._tokenize)
        return app

    def _pieces(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        n = max(1, self.chunk_chars)
        return [self.reply[i : i + n] for i in range(0, len(self.reply), n)] or [""]

    async def _common(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        del self.requests[: -self.keep_requests]
        del self.headers[: -self.keep_requests]
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            err = {
                "error": {
                    "message": "fake upstream failure",
                    "type": "server_error",
                    "code": None,
                    "param": None,
                }
            }
            return body, web.json_response(err, status=self.status)
        if body.get("model") != self.model and body.get("model") not in self.extra_models:
            err = {
                "error": {
                    "message": f"The model `{body.get('model')}` does not exist.",
                    "type": "NotFoundError",
                    "param": "model",
                    "code": 404,
                }
            }
            return body, web.json_response(err, status=404)
        return body, None

    @staticmethod
    def _prompt_tokens(body: dict[str, Any]) -> int:
        text = json.dumps(body.get("messages") or body.get("prompt") or body.get("input") or "")
        return max(1, len(text) // 4)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        body, error = await self._common(request)
        if error is not None:
            return error
        pieces = self._pieces()
        created = int(time.time())
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{len(self.requests)}"
        obj = "chat.completion" if chat else "text_completion"
        pt, ct = self._prompt_tokens(body), len(pieces)
        usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
        text = "".join(pieces)
        if not body.get("stream"):
            choice: dict[str, Any] = self.choice or (
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                if chat
                else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            )
            return web.json_response(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": self.model,
                    "choices": [choice],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = {
                "id": rid,
                "object": chunk_obj,
                "created": created,
                "model": self.model,
                "choices": choices,
            }
            payload.update(extra)
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        events: list[bytes] = []
        if chat:
            events.append(
                event(
                    [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            )
        for c in self.stream_choices or []:
            events.append(event([c]))
        for i, piece in enumerate(pieces if self.stream_choices is None else []):
            last = i == len(pieces) - 1
            if chat:
                c = {
                    "index": 0,
                    "delta": {"content": piece},
                    "logprobs": None,
                    "finish_reason": "stop" if last else None,
                }
            else:
                c = {"index": 0, "text": piece, "logprobs": None, "finish_reason": "stop" if last else None}
            events.append(event([c]))
        opts = body.get("stream_options") or {}
        if opts.get("include_usage"):
            events.append(event([], usage=usage))
        events.append(b"data: [DONE]\n\n")
        for i, data in enumerate(events):
            if self.stream_fault and i == 2:
                if self.stream_fault == "drop":
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                await asyncio.sleep(3600)  # "hang"
            await resp.write(data)
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await resp.write_eof()
        return resp

    async def _embeddings(self, request: web.Request) -> web.Response:
        body, error = await self._common(request)
        if error is not None:
            return error
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        pt = self._prompt_tokens(body)
        return web.json_response(
            {
                "object": "list",
                "model": self.model,
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i in range(len(inputs))
                ],
                "usage": {"prompt_tokens": pt, "total_tokens": pt},
            }
        )

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )

    async def _tokenize(self, request: web.Request) -> web.Response:
        self.requests.append({"tokenize": await request.json()})
        self.headers.append(dict(request.headers))
        if self.tokenize_count is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        return web.json_response({"count": self.tokenize_count, "max_model_len": 2048, "tokens": []})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="tiny")
    p.add_argument("--delay", type=float, default=0.0)
    args = p.parse_args()
    web.run_app(
        FakeUpstream(model=args.model, delay=args.delay).app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
    )


if __name__ == "__main__":
    main()
