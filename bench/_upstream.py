"""A fast fake OpenAI upstream for proxy benchmarks: raw asyncio HTTP/1.1, canned answers.

A benchmark of a proxy must not be limited by its upstream: this one costs a few microseconds per
request (no framework, pre-encoded responses), so the proxy under test is the bottleneck. It answers
POST /v1/chat/completions|completions|embeddings with OpenAI-shaped JSON (with `usage`), or SSE when
the body has `"stream": true` (with the usage chunk when `include_usage` is set), GET /v1/models and
/health. `--delay` adds a fixed service time; `--chunk-delay` spaces the SSE events.

    python bench/_upstream.py --port 18000 [--delay 0.0] [--chunk-delay 0.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time

_CL = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)

MODEL = "tiny"
REPLY = "Hello! I am a tiny model. Ask me anything about the weather, numbers or foxes."


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _response(body: bytes, ctype: bytes = b"application/json", status: bytes = b"200 OK") -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: "
        + ctype
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


USAGE = {"prompt_tokens": 42, "completion_tokens": 17, "total_tokens": 59}
CHAT = _response(
    _json(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": USAGE,
        }
    )
)
COMPLETION = _response(
    _json(
        {
            "id": "cmpl-bench",
            "object": "text_completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [{"index": 0, "text": REPLY, "finish_reason": "stop", "logprobs": None}],
            "usage": USAGE,
        }
    )
)
EMBEDDING = _response(
    _json(
        {
            "object": "list",
            "model": MODEL,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0] * 16}],
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )
)
MODELS = _response(_json({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}))
HEALTH = _response(b"")
NOT_FOUND = _response(
    b'{"error":{"message":"not found","type":"invalid_request_error"}}', status=b"404 Not Found"
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _chunk(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


def _sse_events(usage: bool, pieces: int = 8) -> list[bytes]:
    words = REPLY.split(" ")
    step = max(1, len(words) // pieces)
    texts = [" ".join(words[i : i + step]) + " " for i in range(0, len(words), step)]
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL}
    events = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
    ]
    for i, t in enumerate(texts):
        events.append(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": t},
                        "finish_reason": "stop" if i == len(texts) - 1 else None,
                    }
                ],
            }
        )
    if usage:
        events.append({**base, "choices": [], "usage": USAGE})
    return [_chunk(b"data: " + _json(e) + b"\n\n") for e in events] + [
        _chunk(b"data: [DONE]\n\n"),
        b"0\r\n\r\n",
    ]


SSE = {False: _sse_events(False), True: _sse_events(True)}


class Upstream(asyncio.Protocol):
    delay = 0.0
    chunk_delay = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            m = _CL.search(buf, 0, end + 2)
            length = int(m.group(1)) if m else 0
            total = end + 4 + length
            if len(buf) < total:
                break
            head, body, buf = buf[:end], buf[end + 4 : total], buf[total:]
            self._answer(head, body)
        self.buf = buf

    def _answer(self, head: bytes, body: bytes) -> None:
        path = head.split(b" ", 2)[1]
        if path.startswith(b"/v1/chat/completions") or path.startswith(b"/v1/completions"):
            if b'"stream":true' in body or b'"stream": true' in body:
                usage = b'"include_usage":true' in body or b'"include_usage": true' in body
                self._later(self._stream, SSE[usage])
                return
            out = CHAT if b"chat" in path else COMPLETION
        elif path.startswith(b"/v1/embeddings"):
            out = EMBEDDING
        elif path.startswith(b"/v1/models"):
            out = MODELS
        elif path.startswith(b"/health"):
            out = HEALTH
        else:
            out = NOT_FOUND
        self._later(self.transport.write, out)

    def _later(self, fn: object, arg: object) -> None:
        if self.delay:
            asyncio.get_running_loop().call_later(self.delay, fn, arg)  # type: ignore[arg-type]
        else:
            fn(arg)  # type: ignore[operator]

    def _stream(self, events: list[bytes]) -> None:
        if not self.chunk_delay:
            self.transport.write(SSE_HEAD + events[0])
            for e in events[1:]:
                self.transport.write(e)
            return
        loop = asyncio.get_running_loop()
        self.transport.write(SSE_HEAD + events[0])
        for i, e in enumerate(events[1:], 1):
            loop.call_later(self.chunk_delay * i, self._write_if_open, e)

    def _write_if_open(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)


async def serve(host: str, port: int, delay: float = 0.0, chunk_delay: float = 0.0) -> asyncio.AbstractServer:
    Upstream.delay = delay
    Upstream.chunk_delay = chunk_delay
    loop = asyncio.get_running_loop()
    return await loop.create_server(Upstream, host, port, backlog=4096, reuse_address=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18000)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--chunk-delay", type=float, default=0.0)
    args = p.parse_args()

    async def run() -> None:
        server = await serve(args.host, args.port, args.delay, args.chunk_delay)
        print(f"fake upstream on {args.host}:{args.port} pid {os.getpid()} at {time.time():.0f}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


if __name__ == "__main__":
    main()
