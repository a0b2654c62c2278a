"""A throwaway `redis-server` for the shared-limit tests: loopback, a free port, no persistence.

Debian's `redis-server` package (`make host-deps` installs it). Without it the tests skip, except
in CI (CI set), where they fail: the suite must not pass by skipping what it promises.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ports import free_port


def redis_binary() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        msg = "redis-server not found: run `make host-deps` (Debian package redis-server)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


class RedisServer:
    """One redis-server on 127.0.0.1; `stop()` and `start()` again on the same port (an outage)."""

    def __init__(self, password: str | None = None) -> None:
        self.exe = redis_binary()
        self.port = free_port()
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="mg-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        #: the same server on a unix socket (AF_UNIX paths are short: the temp dir is)
        self.unix_path = str(self.dir / "redis.sock")

    def start(self) -> RedisServer:
        cmd = [
            self.exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
            "--unixsocket",
            self.unix_path,
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = self.dir / "redis.log"
                pytest.fail(f"redis-server did not start: {log.read_text()[-2000:] if log.exists() else ''}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
