"""Container probes as the kubelet runs them: httpGet and tcpSocket from the host to `podIP:port`,
exec inside the container's namespaces (`nsenter`), with the kubelet's defaults for period,
timeout and thresholds."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

Obj = dict[str, Any]


@dataclass(frozen=True)
class ProbeSpec:
    raw: Obj

    @property
    def initial_delay(self) -> float:
        return float(self.raw.get("initialDelaySeconds", 0))

    @property
    def period(self) -> float:
        return float(self.raw.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.raw.get("timeoutSeconds", 1))

    @property
    def success_threshold(self) -> int:
        return int(self.raw.get("successThreshold", 1))

    @property
    def failure_threshold(self) -> int:
        return int(self.raw.get("failureThreshold", 3))


def _port(container: Obj, port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"container {container['name']!r} has no port named {port!r}")


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


async def run_probe(
    spec: ProbeSpec, container: Obj, pod_ip: str, exec_argv: list[str] | None
) -> tuple[bool, str]:
    """One probe attempt: (success, message for events)."""
    raw = spec.raw
    try:
        if "httpGet" in raw:
            h = raw["httpGet"]
            scheme = h.get("scheme", "HTTP").lower()
            host = h.get("host") or pod_ip
            path = h.get("path", "/")
            path = path if path.startswith("/") else "/" + path
            url = f"{scheme}://{host}:{_port(container, h['port'])}{path}"
            headers = {x["name"]: x["value"] for x in h.get("httpHeaders", [])}
            headers.setdefault("User-Agent", "kube-probe/maestro-executor")
            async with (
                aiohttp.ClientSession() as s,
                s.get(
                    url,
                    headers=headers,
                    ssl=_INSECURE if scheme == "https" else True,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=spec.timeout),
                ) as resp,
            ):
                ok = 200 <= resp.status < 400
                return ok, f"HTTP probe {url}: status {resp.status}"
        if "tcpSocket" in raw:
            t = raw["tcpSocket"]
            port = _port(container, t["port"])
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(t.get("host") or pod_ip, port), spec.timeout
            )
            writer.close()
            return True, f"TCP probe {pod_ip}:{port}: connected"
        if "exec" in raw and exec_argv is not None:
            proc = await asyncio.create_subprocess_exec(
                *exec_argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), spec.timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return False, f"exec probe timed out after {spec.timeout}s"
            return (
                proc.returncode == 0,
                f"exec probe exit {proc.returncode}: {out.decode(errors='replace')[-200:]}",
            )
        if "grpc" in raw:
            return False, "grpc probes are not supported by the local executor"
        return False, f"probe has no handler: {sorted(raw)}"
    except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as e:
        return False, f"probe failed: {type(e).__name__}: {e}"


class ProbeState:
    """Consecutive results against the probe's thresholds, like the kubelet's prober worker."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self.successes = 0
        self.failures = 0

    def record(self, ok: bool) -> None:
        if ok:
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.failures, self.successes = self.failures + 1, 0

    @property
    def passed(self) -> bool:
        return self.successes >= self.spec.success_threshold

    @property
    def failed(self) -> bool:
        return self.failures >= self.spec.failure_threshold
