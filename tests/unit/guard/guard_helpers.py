"""Guard test harness: a fake upstream and a real guard on loopback, in a background loop.

Both servers run in one thread with their own event loop, so sync clients (openai.OpenAI) and
async ones (openai.AsyncOpenAI, raw aiohttp) talk to them over real TCP sockets. (A uniquely named
module rather than conftest.py: `from conftest import …` is ambiguous across test directories.)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import openai
from aiohttp import web
from fakeupstream import FakeUpstream

from maestro.workers.guard.audit import PromptDigest
from maestro.workers.guard.proxy import Guard
from maestro.workers.guard.telemetry import Telemetry

T = TypeVar("T")
KEYS = {"alice": "sk-alice-0123456789", "bob": "sk-bob-9876543210"}


def policy_doc(
    request: dict[str, Any] | None = None, audit: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    request = dict(request or {})
    if "auth" in request:  # the CRD requires the Secret reference whenever keys are required
        request["auth"] = {"apiKeysSecretRef": {"name": "keys"}, **request["auth"]}
    doc: dict[str, Any] = {
        "name": "test",
        "digest": "d1",
        "request": request,
        "audit": audit or {},
        "servedModelName": "tiny",
    }
    doc.update(extra)
    return doc


def open_request(**rules: Any) -> dict[str, Any]:
    """A request policy with everything off unless given (the CRD defaults redact PII both ways)."""
    base: dict[str, Any] = {"pii": {"input": "allow", "output": "allow"}}
    base.update(rules)
    return base


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.policy_path = root / "policy" / "policy.json"
        self.keys_dir = root / "keys"
        self.audit_path = root / "audit.jsonl"
        # AF_UNIX paths are limited to ~107 bytes; pytest's tmp paths can be longer
        self._sockdir = tempfile.mkdtemp(prefix="mg-")
        self.events_path = os.path.join(self._sockdir, "ev.sock")
        self.upstream = FakeUpstream()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.guard: Guard | None = None
        self._runners: list[web.AppRunner] = []
        self.url = ""
        self.upstream_url = ""
        self._events = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._events.bind(self.events_path)
        self._events.setblocking(False)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], T]) -> T:
        async def wrap() -> T:
            return fn()

        return self.call(wrap())

    def write_policy(self, doc: dict[str, Any] | None) -> None:
        """Replace the file the way a ConfigMap update does: a new inode swapped in atomically."""
        self.policy_path.parent.mkdir(parents=True, exist_ok=True)
        if doc is None:
            self.policy_path.unlink(missing_ok=True)
            return
        tmp = self.policy_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.policy_path)

    def write_keys(self, keys: dict[str, str]) -> None:
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        for f in self.keys_dir.iterdir():
            f.unlink()
        for kid, key in keys.items():
            (self.keys_dir / kid).write_text(key + "\n")

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def start(
        self,
        doc: dict[str, Any] | None,
        keys: dict[str, str] | None = None,
        *,
        reload_interval: float = 0,
        upstream: str | None = None,
        body_timeout: float = 30.0,
        telemetry: Telemetry | None = None,
        prompt_digest: PromptDigest | None = None,
    ) -> Stack:
        self.write_policy(doc)
        self.write_keys(KEYS if keys is None else keys)
        self.upstream_url = self.call(self._serve(self.upstream.app()))

        async def make() -> str:
            self.guard = Guard(
                upstream or self.upstream_url,
                config_path=str(self.policy_path),
                keys_dir=str(self.keys_dir),
                audit_path=str(self.audit_path),
                events_path=self.events_path,
                reload_interval=reload_interval,
                body_timeout=body_timeout,
                telemetry=telemetry,
                prompt_digest=prompt_digest,
            )
            return await self._serve(self.guard.app())

        self.url = self.call(make())
        return self

    def reload(self) -> bool:
        assert self.guard is not None
        return self.run(self.guard.reload)

    def client(self, key: str | None = KEYS["alice"], **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or "none", max_retries=0, **kw)

    def aclient(self, key: str | None = KEYS["alice"], **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=key or "none", max_retries=0, **kw)

    def events(self) -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                out.append(json.loads(self._events.recv(65536)))
            except BlockingIOError:
                return out

    def audit(self) -> list[dict[str, Any]]:
        assert self.guard is not None
        self.run(self.guard.audit.flush)
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]

    def close(self) -> None:
        async def stop() -> None:
            for runner in reversed(self._runners):
                await runner.cleanup()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:  # handlers a test left hanging (a stalled upstream, a vanished client)
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            self._events.close()
            shutil.rmtree(self._sockdir, ignore_errors=True)
