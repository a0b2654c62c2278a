"""The kubelet's log endpoint, so `kubectl logs` works for local pods: the API server proxies
`pods/log` to `https://<node InternalIP>:<kubeletEndpoint port>/containerLogs/{ns}/{pod}/{container}`.

The dev control plane gives the API server no kubelet CA or client certificate, so it connects
without verifying and without a client certificate; the endpoint listens only on the pods'
bridge address, which only this machine reaches. Supported: `tailLines`, `limitBytes`, `follow`
(ends when the container stops), `previous`. Exec, attach and port-forward are not implemented.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from maestro.devcluster.executor.status import tail_text

Running = Callable[[str, str, str], bool]  # (namespace, pod, container) -> still running?


def self_signed(cert_dir: Path, ip: str) -> ssl.SSLContext:
    """A serving certificate for `ip`, made once and kept in the state dir."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    crt, key, for_ip = cert_dir / "kubelet.crt", cert_dir / "kubelet.key", cert_dir / "kubelet.ip"
    if not (crt.exists() and key.exists() and for_ip.exists() and for_ip.read_text() == ip):
        cert_dir.mkdir(parents=True, exist_ok=True)
        pkey = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maestro-local-executor")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(pkey.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
            )
            .sign(pkey, hashes.SHA256())
        )
        key.write_bytes(
            pkey.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key.chmod(0o600)
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        for_ip.write_text(ip)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(crt), str(key))
    return ctx


class LogServer:
    def __init__(self, log_dir: Path, running: Running) -> None:
        self.log_dir = log_dir
        self.running = running
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        ns, pod, ctr = (request.match_info[k] for k in ("namespace", "pod", "container"))
        previous = request.query.get("previous") in ("true", "1")
        path = self.log_dir / f"{ns}_{pod}_{ctr}{'.previous' if previous else ''}.log"
        if not path.exists():
            raise web.HTTPNotFound(text=f"no logs for container {ctr!r} of pod {ns}/{pod} on this node\n")
        q = request.query
        data = path.read_bytes()
        if "tailLines" in q:
            data = tail_text(data, int(q["tailLines"]), len(data) + 1).encode()
        if "limitBytes" in q:
            data = data[: int(q["limitBytes"])]
        if q.get("follow") not in ("true", "1"):
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(data)
        offset = path.stat().st_size
        while True:
            size = path.stat().st_size if path.exists() else offset
            if size > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(size - offset)
                offset = size
                await resp.write(chunk)
            elif not self.running(ns, pod, ctr):
                break
            await asyncio.sleep(0.25)
        await resp.write_eof()
        return resp
