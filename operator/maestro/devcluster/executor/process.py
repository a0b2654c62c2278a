"""Container processes: start one through the launcher, watch it, stop it — also across executor
restarts, because the launcher's supervisor writes the exit status to disk and the pid with its
kernel start time identifies the supervisor after a restart."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAUNCHER = Path(__file__).with_name("launch.py")


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@dataclass
class Process:
    """A running container: the supervisor's pid (= its process group) and where it reports."""

    pid: int
    start_time: int
    exit_file: Path
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, spec: dict[str, Any], run_dir: Path, log: Path) -> Process:
        run_dir.mkdir(parents=True, exist_ok=True)
        exit_file = run_dir / "exit.json"
        for stale in (exit_file, exit_file.with_name("exit.json.pid")):
            stale.unlink(missing_ok=True)
        spec = {**spec, "exitFile": str(exit_file)}
        spec_file = run_dir / "spec.json"
        spec_file.write_text(json.dumps(spec))
        spec_file.chmod(0o600)  # holds the container's env (secrets)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-I", "-S", str(LAUNCHER), str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                close_fds=True,
            )
        return cls(popen.pid, proc_start_time(popen.pid) or 0, exit_file, popen)

    @classmethod
    def adopt(cls, record: dict[str, Any], run_dir: Path) -> Process | None:
        """The process recorded by an earlier executor, if it is still the same process."""
        pid, started = int(record["pid"]), int(record["startTime"])
        p = cls(pid, started, run_dir / "exit.json")
        if proc_start_time(pid) == started or p.exit_file.exists():
            return p
        return None

    def record(self) -> dict[str, Any]:
        return {"pid": self.pid, "startTime": self.start_time}

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return proc_start_time(self.pid) == self.start_time

    def exit_status(self) -> dict[str, Any]:
        """How it ended: the supervisor's report, or a kill that left no report (137 like SIGKILL)."""
        try:
            out: dict[str, Any] = json.loads(self.exit_file.read_text())
            return out
        except (OSError, ValueError):
            return {"exitCode": 137, "signal": 9, "finishedAt": time.time(), "reason": "Error"}

    def container_pid(self) -> int | None:
        """The container process itself (the supervisor's child), for nsenter."""
        try:
            return int(json.loads(self.exit_file.with_name("exit.json.pid").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def signal(self, sig: int) -> None:
        if self.alive():
            signal_group(self.pid, sig)
        cpid = self.container_pid()
        if cpid and proc_start_time(cpid) is not None:  # the container may have left the group (setsid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(cpid, sig)

    def stop(self, grace: float) -> None:
        """SIGTERM, wait up to `grace` seconds, SIGKILL. Blocking: call in a thread."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            self.signal(signal.SIGKILL)
            while self.alive():
                time.sleep(0.02)
        self.reap_group()

    def reap_group(self) -> None:
        """SIGKILL what is left of the container's process group once its main process is gone (a
        kubelet kills the container's cgroup the same way)."""
        signal_group(self.pid, signal.SIGKILL)
