"""One pod's lifecycle on the local node: sandbox (netns + volumes), init containers (native
sidecars included), app containers, probes, restarts with back-off, status, termination.

A `PodRunner` is a small state machine ticked a few times a second, so that a runner adopted after
an executor restart (processes still running, exit statuses on disk) continues where the last one
stopped. Its state is saved in `<state>/pods/<uid>/pod.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maestro.devcluster.executor.api import STRATEGIC, Api, ApiError
from maestro.devcluster.executor.events import Recorder
from maestro.devcluster.executor.fields import ConfigError, container_env, env_references, expand
from maestro.devcluster.executor.images import ImageError, ImageTable
from maestro.devcluster.executor.netns import NETNS_DIR, NetworkError, PodNetwork, pids_in
from maestro.devcluster.executor.probes import ProbeSpec, ProbeState, run_probe
from maestro.devcluster.executor.process import Process
from maestro.devcluster.executor.status import (
    MAX_MESSAGE_BYTES,
    Conditions,
    rfc3339,
    tail_text,
    terminated_state,
    waiting,
)
from maestro.devcluster.executor.volumes import FILE_VOLUMES, Fetch, Volumes

log = logging.getLogger("maestro.executor")
Obj = dict[str, Any]
TICK = 0.2
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BACKOFF_CAP = 300.0
BACKOFF_RESET_AFTER = 600.0
#: Host environment variables handed to every container (caches, offline switches, locale).
PASSTHROUGH_ENV = (
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TORCH_HOME",
    "XDG_CACHE_HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "OMP_NUM_THREADS",
)


@dataclass
class Context:
    """What every runner shares: the API, the node, the network and the program table."""

    api: Api
    node: str
    host_ip: str
    network: PodNetwork
    images: ImageTable
    volumes: Volumes
    fetch: Fetch
    state_dir: Path
    events: Recorder
    backoff_base: float = 10.0
    host_aliases: tuple[str, ...] = ()

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def pod_dir(self, uid: str) -> Path:
        return self.state_dir / "pods" / uid


@dataclass
class Ctr:
    spec: Obj
    kind: str  # "init" | "sidecar" (init container with restartPolicy Always) | "app"
    restart_count: int = 0
    crash_streak: int = 0
    state: Obj = field(default_factory=lambda: waiting("ContainerCreating"))
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    done: bool = False
    proc: Process | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    log_offset: int = 0
    probes: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None


class PodRunner:
    def __init__(self, ctx: Context, pod: Obj, record: Obj | None = None) -> None:
        self.ctx = ctx
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        self.dir = ctx.pod_dir(self.uid)
        spec = pod["spec"]
        self.ctrs: list[Ctr] = [
            Ctr(c, "sidecar" if c.get("restartPolicy") == "Always" else "init")
            for c in spec.get("initContainers", [])
        ] + [Ctr(c, "app") for c in spec["containers"]]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.conditions = Conditions()
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.pod_ip = ""
        self.netns: str | None = None
        self.volume_paths: dict[str, Path] = {}
        self.start_time = time.time()
        self.finished = False
        self.terminating = False
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._init_failed = False
        self._termination: asyncio.Future[None] | None = None
        self._attaching: asyncio.Future[str] | None = None
        self._background: set[asyncio.Task[None]] = set()
        if record:
            self._restore(record)

    # -- public --------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod {self.key}")
        self._publisher = asyncio.create_task(self._publish_loop(), name=f"status {self.key}")

    def update(self, pod: Obj) -> None:
        self.pod = pod

    def references(self) -> set[tuple[str, str]]:
        return Volumes.references(self.pod) | env_references(self.pod)

    async def refresh_volumes(self) -> None:
        if self.netns is None and not self.volume_paths:
            return
        changed = await self.ctx.volumes.refresh(self.pod, self.dir, self.pod_ip, self.ctx.host_ip)
        if changed:
            log.info("%s: volumes %s updated", self.key, ", ".join(changed))

    async def terminate(self, grace: float, reason: str | None = None, message: str | None = None) -> None:
        """Stop every container (SIGTERM, `grace`, SIGKILL), tear the sandbox down, publish. Callers
        racing each other (deletion, disappearance, shutdown) share one termination."""
        if self._termination is None:
            self._termination = asyncio.ensure_future(self._terminate(grace, reason, message))
        await asyncio.shield(self._termination)

    async def _terminate(self, grace: float, reason: str | None, message: str | None) -> None:
        self.terminating = True
        if self._task and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._stop_all([c for c in self.ctrs if c.proc], grace)
        if self._attaching is not None:  # let a half-made sandbox finish, then remove it
            with contextlib.suppress(Exception):
                await self._attaching
        await asyncio.to_thread(self._teardown_network)
        if reason and not self.finished:
            self.phase, self.reason, self.message = "Failed", reason, message
            self.conditions.set("DisruptionTarget", True, "TerminationByKubelet", message)
        self._mark_not_ready("PodCompleted" if self.finished else "PodTerminating")
        self._save()
        await self._flush()

    async def close(self) -> None:
        """Stop publishing and remove the pod's directory (after the API object is gone)."""
        if self._publisher:
            self._publisher.cancel()
        self.ctx.volumes.forget(self.uid)
        self.ctx.events.forget(self.uid)
        await asyncio.to_thread(shutil.rmtree, self.dir, True)

    # -- main loop -----------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._sandbox()
            self._adopt()
            while not self.finished:
                await self._tick()
                await asyncio.sleep(TICK)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must not leave a pod silently stuck
            log.exception("%s: executor error", self.key)
            self.phase, self.reason, self.message = "Failed", "ExecutorError", f"local executor error: {e}"
            await self._stop_all([c for c in self.ctrs if c.proc], 2)
            await asyncio.to_thread(self._teardown_network)
            self.finished = True
            self._changed()

    async def _sandbox(self) -> None:
        """Network namespace and volumes; waits (like a kubelet) while a referenced object is missing."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.pod["spec"].get("hostNetwork"):
            self.pod_ip = self.ctx.host_ip
        else:
            self.pod_ip = self.pod_ip or self.ctx.network.allocate(self._taken_ips())
            self._save()
            if self.netns is None:  # not adopted: a fresh sandbox
                # named before it exists, so a termination racing the creation still removes it
                self.netns = self.ctx.network.netns_name(self.uid)
                self._save()
                self._attaching = asyncio.ensure_future(
                    asyncio.to_thread(self.ctx.network.attach, self.uid, self.pod_ip)
                )
                await asyncio.shield(self._attaching)
        self._save()
        self._write_etc()
        self.conditions.set("PodReadyToStartContainers", True)
        self.conditions.set("Initialized", False, "ContainersNotInitialized")
        self._mark_not_ready("ContainersNotReady")
        while True:
            try:
                self.volume_paths = await self.ctx.volumes.prepare(
                    self.pod, self.dir, self.pod_ip, self.ctx.host_ip
                )
                return
            except ConfigError as e:
                self._all_waiting("CreateContainerConfigError", str(e))
                await asyncio.sleep(2)

    def _restore(self, record: Obj) -> None:
        """Take over what an earlier executor left (`pod.json`): addresses, counts, live processes."""
        self.start_time = record.get("startTime", self.start_time)
        self.pod_ip = record.get("podIP") or ""
        netns = record.get("netns")
        for c in self.ctrs:
            rec = record.get("containers", {}).get(c.name)
            if not rec:
                continue
            c.restart_count, c.done = rec.get("restartCount", 0), rec.get("done", False)
            c.state = rec.get("state") or c.state
            c.last_state = rec.get("lastState") or {}
            c.started_at, c.log_offset = rec.get("startedAt", 0.0), rec.get("logOffset", 0)
            if rec.get("proc") and netns and (NETNS_DIR / netns).exists():
                c.proc = Process.adopt(rec["proc"], self._run_dir(c))
        if any(c.proc for c in self.ctrs):
            self.netns = netns

    def _adopt(self) -> None:
        """Start probes for the containers taken over from an earlier executor."""
        for c in self.ctrs:
            if c.proc is not None:
                c.state = {"running": {"startedAt": rfc3339(c.started_at)}}
                self._start_probes(c)
                log.info("%s: adopted container %s (pid %d)", self.key, c.name, c.proc.pid)
        if (
            any(c.kind != "app" for c in self.ctrs)
            and all(c.done or c.proc for c in self.ctrs if c.kind != "app")
            and any(c.proc for c in self.ctrs if c.kind == "app")
        ):
            self.conditions.set("Initialized", True)
        self._changed()

    async def _tick(self) -> None:
        for c in self.ctrs:
            if c.proc is not None and not c.proc.alive():
                self._on_exit(c)
        if self.finished:
            return
        if self._deadline_exceeded():
            await self._finish(
                "Failed",
                "DeadlineExceeded",
                f"Pod was active on the node longer than the specified deadline "
                f"({self.pod['spec']['activeDeadlineSeconds']}s)",
            )
            return
        if self._init_failed:
            await self._finish("Failed")
            return
        now = time.monotonic()
        initialized = self.conditions.items["Initialized"]["status"] == "True"
        for c in self.ctrs:
            if c.kind == "app":
                break
            if c.kind == "sidecar":
                if not c.running and not c.done and now >= c.next_start:
                    await self._start(c)
                if not initialized and not c.started:
                    return  # the next init container waits for the sidecar to have started
            elif not initialized and not c.done:
                if not c.running and now >= c.next_start:
                    await self._start(c)
                return
        if not initialized:
            self.conditions.set("Initialized", True)
            self._changed()
        apps = [c for c in self.ctrs if c.kind == "app"]
        for c in apps:
            if not c.running and not c.done and now >= c.next_start:
                await self._start(c)
        if all(c.done for c in apps):
            failed = any(c.state.get("terminated", {}).get("exitCode", 0) != 0 for c in apps)
            await self._finish("Failed" if failed else "Succeeded")
            return
        self._update_readiness()

    def _deadline_exceeded(self) -> bool:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        return deadline is not None and time.time() - self.start_time > float(deadline)

    # -- containers ----------------------------------------------------------------------------
    def _run_dir(self, c: Ctr) -> Path:
        return self.dir / "containers" / c.name

    def log_file(self, c: Ctr) -> Path:
        meta = self.pod["metadata"]
        return self.ctx.log_dir / f"{meta['namespace']}_{meta['name']}_{c.name}.log"

    def _container_id(self, c: Ctr) -> str:
        return f"maestro://{self.uid[:8]}-{c.name}-{c.restart_count}"

    async def _start(self, c: Ctr) -> None:
        try:
            spec = await self._launch_spec(c)
        except (ImageError, ConfigError) as e:
            reason = e.reason if isinstance(e, ImageError) else "CreateContainerConfigError"
            if c.state.get("waiting", {}).get("message") != str(e):
                log.warning("%s: container %s: %s", self.key, c.name, e)
                self._event("Warning", "Failed", f"Error: {reason}: {e}", c)
            c.state = waiting(reason, str(e))
            c.next_start = time.monotonic() + 5
            self._changed()
            return
        run_dir = self._run_dir(c)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "termination-log").write_bytes(b"")
        log_path = self.log_file(c)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # one file per run, like the kubelet: the previous run's log stays for `kubectl logs --previous`
        if log_path.exists() and log_path.stat().st_size:
            os.replace(log_path, log_path.with_suffix(".previous.log"))
        c.log_offset = 0
        # synchronous (a fork+exec, milliseconds): a cancellation must not lose a started process
        c.proc = Process.start(spec, run_dir, log_path)
        c.started_at = time.time()
        c.state = {"running": {"startedAt": rfc3339(c.started_at)}}
        c.started = "startupProbe" not in c.spec
        c.ready = False
        log.info(
            "%s: started container %s (pid %d): %s",
            self.key,
            c.name,
            c.proc.pid,
            " ".join(spec["argv"])[:300],
        )
        self._event("Normal", "Started", f"Started container {c.name}", c)
        self._start_probes(c)
        self._save()
        self._changed()

    async def _launch_spec(self, c: Ctr) -> Obj:
        spec = c.spec
        refs = env_references({"spec": {"containers": [spec]}})
        ns = self.pod["metadata"]["namespace"]
        objects = {ref: await self.ctx.fetch(ref[0], ns, ref[1]) for ref in refs}
        pod_env = container_env(
            self.pod, spec, self.pod_ip, self.ctx.host_ip, self.ctx.volumes.node_alloc, objects
        )
        command = [expand(a, pod_env) for a in spec.get("command", [])]
        args = [expand(a, pod_env) for a in spec.get("args", [])]
        program = self.ctx.images.program(spec.get("image", ""), command, args)
        if program.note:
            log.info("%s: container %s: %s", self.key, c.name, program.note)
        hostname = self.pod["spec"].get("hostname") or self.pod["metadata"]["name"]
        env = {
            "PATH": f"{self.ctx.images.venv}/bin:{SYSTEM_PATH}",
            "HOSTNAME": hostname,
            "HOME": "/root",
        }
        env |= {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        env |= program.env | pod_env
        mounts: list[Obj] = []
        for vm in spec.get("volumeMounts", []):
            if vm["name"] not in self.volume_paths:
                raise ConfigError(f"volumeMount {vm['name']!r} names no volume of the pod")
            src = self.volume_paths[vm["name"]]
            sub = vm.get("subPath") or (expand(vm["subPathExpr"], pod_env) if vm.get("subPathExpr") else "")
            if sub:
                src = src / sub
                if not src.exists():
                    src.mkdir(parents=True)
            volume = next(v for v in self.pod["spec"].get("volumes", []) if v["name"] == vm["name"])
            read_only = (
                bool(vm.get("readOnly"))
                or any(k in volume for k in FILE_VOLUMES)  # the kubelet mounts these read-only too
                or bool(volume.get("persistentVolumeClaim", {}).get("readOnly"))
            )
            mounts.append({"source": str(src), "path": vm["mountPath"], "readOnly": read_only})
        mounts.append(
            {
                "source": str(self._run_dir(c) / "termination-log"),
                "path": spec.get("terminationMessagePath") or "/dev/termination-log",
            }
        )
        etc = (
            ("hosts", "hostname")
            if self.pod["spec"].get("hostNetwork")
            else ("hosts", "hostname", "resolv.conf")
        )
        for name in etc:
            if not any(m["path"] == f"/etc/{name}" for m in mounts):
                mounts.append({"source": str(self.dir / f"etc-{name}"), "path": f"/etc/{name}"})
        root = self._run_dir(c) / "root"
        scratch = self._run_dir(c) / "scratch"
        root.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        return {
            "argv": program.argv,
            "env": env,
            "mounts": mounts,
            "workingDir": spec.get("workingDir") or "/",
            "netns": f"/run/netns/{self.netns}" if self.netns else None,
            "hostname": hostname,
            "keep": self.ctx.images.runtime_paths(),
            "root": str(root),
            "scratch": str(scratch),
        }

    def _on_exit(self, c: Ctr) -> None:
        assert c.proc is not None
        status = c.proc.exit_status()
        c.proc.reap_group()
        c.proc = None
        for t in c.probes:
            t.cancel()
        c.probes = []
        code = int(status.get("exitCode", 137))
        message = self._termination_message(c, code, status)
        term = terminated_state(status, c.started_at, self._container_id(c), message)
        c.ready = False
        log.info("%s: container %s exited with %d", self.key, c.name, code)
        if time.time() - c.started_at >= BACKOFF_RESET_AFTER:
            c.crash_streak = 0
        if self._should_restart(c, code):
            c.last_state = term
            delay = (
                0.0
                if c.crash_streak == 0
                else min(self.ctx.backoff_base * 2 ** (c.crash_streak - 1), BACKOFF_CAP)
            )
            c.crash_streak += 1
            c.restart_count += 1
            c.next_start = time.monotonic() + delay
            c.state = (
                waiting(
                    "CrashLoopBackOff",
                    f"back-off {delay:g}s restarting failed container={c.name} pod={self.key}",
                )
                if delay
                else waiting("ContainerCreating")
            )
            c.started = False
            if delay:
                self._event(
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {c.name} in pod {self.key}",
                    c,
                )
        else:
            c.state, c.done = term, True
            c.started = False
            if c.kind == "init" and code != 0:
                self._init_failed = True
        self._save()
        self._changed()

    def _should_restart(self, c: Ctr, code: int) -> bool:
        if self.terminating or self.finished:
            return False
        if c.kind == "sidecar":
            return True
        if c.kind == "init":
            return code != 0 and self.restart_policy != "Never"
        return self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0)

    def _termination_message(self, c: Ctr, code: int, status: Obj) -> str:
        if status.get("message"):
            return str(status["message"])
        try:
            with open(self._run_dir(c) / "termination-log", "rb") as f:
                data = f.read(MAX_MESSAGE_BYTES)
        except OSError:
            data = b""
        if not data and code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            try:
                with open(self.log_file(c), "rb") as f:
                    f.seek(c.log_offset)
                    return tail_text(f.read())
            except OSError:
                return ""
        return data.decode(errors="replace")

    async def _stop_all(self, ctrs: list[Ctr], grace: float) -> None:
        procs = [c.proc for c in ctrs if c.proc is not None]
        for c in ctrs:
            if c.proc is not None and c.proc.alive():
                self._event("Normal", "Killing", f"Stopping container {c.name}", c)
        await asyncio.gather(*(asyncio.to_thread(p.stop, grace) for p in procs))
        for c in ctrs:
            if c.proc is not None:
                self._on_exit(c)

    async def _finish(self, phase: str, reason: str | None = None, message: str | None = None) -> None:
        """All app containers are done (or the pod failed): stop sidecars, free the sandbox."""
        self.finished = True
        await self._stop_all([c for c in self.ctrs if c.proc], self._grace())
        await asyncio.to_thread(self._teardown_network)
        self.phase, self.reason, self.message = phase, reason, message
        self._mark_not_ready("PodCompleted" if phase == "Succeeded" else "PodFailed")
        log.info("%s: %s%s", self.key, phase, f" ({reason})" if reason else "")
        self._save()
        self._changed()

    def _grace(self) -> float:
        meta_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        spec_grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(meta_grace if meta_grace is not None else spec_grace)

    def _teardown_network(self) -> None:
        if self.netns:
            for pid in pids_in(self.netns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self.ctx.network.detach(self.uid)
            except NetworkError as e:
                log.warning("%s: %s", self.key, e)

    # -- probes --------------------------------------------------------------------------------
    def _start_probes(self, c: Ctr) -> None:
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in c.spec:
                c.probes.append(asyncio.create_task(self._probe_loop(c, kind, ProbeSpec(c.spec[kind]))))
        if "startupProbe" not in c.spec:
            c.started = True
        self._update_readiness()

    async def _probe_loop(self, c: Ctr, kind: str, spec: ProbeSpec) -> None:
        state = ProbeState(spec)
        proc = c.proc
        await asyncio.sleep(spec.initial_delay)
        while c.proc is proc and proc is not None:
            if kind != "startupProbe" and not c.started:
                await asyncio.sleep(0.2)
                continue
            exec_argv = None
            if "exec" in spec.raw and proc.container_pid():
                try:
                    cmd = self.ctx.images.exec_argv(
                        c.spec.get("image", ""), spec.raw["exec"].get("command", [])
                    )
                except ImageError:
                    cmd = spec.raw["exec"].get("command", [])
                exec_argv = [
                    "nsenter",
                    "-t",
                    str(proc.container_pid()),
                    "-n",
                    "-m",
                    "-u",
                    "-r",
                    "-w",
                    "--",
                    *cmd,
                ]
            ok, detail = await run_probe(spec, c.spec, self.pod_ip, exec_argv)
            if c.proc is not proc:
                return
            state.record(ok)
            if kind == "startupProbe":
                if state.passed:
                    c.started = True
                    self._changed()
                    return
                if not ok:
                    self._event("Warning", "Unhealthy", f"Startup probe failed: {detail}", c)
                if state.failed:
                    log.info("%s: %s startup probe failed: %s; restarting", self.key, c.name, detail)
                    self._event(
                        "Normal", "Killing", f"Container {c.name} failed startup probe, will be restarted", c
                    )
                    await asyncio.to_thread(proc.stop, self._grace())
                    return
            elif kind == "readinessProbe":
                if not ok:
                    self._event("Warning", "Unhealthy", f"Readiness probe failed: {detail}", c)
                ready = state.passed if not c.ready else not state.failed
                if ready != c.ready:
                    log.info("%s: %s %s (%s)", self.key, c.name, "ready" if ready else "not ready", detail)
                    c.ready = ready
                    self._update_readiness(force=True)
            elif not ok:
                self._event("Warning", "Unhealthy", f"Liveness probe failed: {detail}", c)
            if kind == "livenessProbe" and state.failed:
                log.info("%s: %s liveness probe failed: %s; restarting", self.key, c.name, detail)
                self._event(
                    "Normal", "Killing", f"Container {c.name} failed liveness probe, will be restarted", c
                )
                await asyncio.to_thread(proc.stop, self._grace())
                return
            await asyncio.sleep(spec.period)

    def _event(self, type_: str, reason: str, message: str, c: Ctr | None = None) -> None:
        task = asyncio.get_running_loop().create_task(
            self.ctx.events.emit(self.pod, type_, reason, message, c.name if c else None)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _update_readiness(self, force: bool = False) -> None:
        for c in self.ctrs:
            if c.kind != "init" and c.running and "readinessProbe" not in c.spec:
                c.ready = c.started
            if not c.running and c.kind != "init":
                c.ready = False
        serving = [c for c in self.ctrs if c.kind != "init"]
        all_ready = (
            all(c.ready for c in serving)
            and self.conditions.items.get("Initialized", {}).get("status") == "True"
        )
        before = {k: v["status"] for k, v in self.conditions.items.items()}
        if all_ready:
            self.conditions.set("ContainersReady", True)
            self.conditions.set("Ready", True)
        else:
            self._mark_not_ready("ContainersNotReady")
        if force or before != {k: v["status"] for k, v in self.conditions.items.items()}:
            self._changed()

    def _mark_not_ready(self, reason: str) -> None:
        notready = [c.name for c in self.ctrs if c.kind != "init" and not c.ready]
        msg = f"containers with unready status: [{' '.join(notready)}]" if notready else None
        for t in ("ContainersReady", "Ready"):
            self.conditions.set(t, False, reason, msg)

    def _all_waiting(self, reason: str, message: str) -> None:
        for c in self.ctrs:
            c.state = waiting(reason, message)
        self._changed()

    # -- status --------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._dirty.set()

    def status(self) -> Obj:
        phase = self.phase
        if not self.finished and phase == "Pending":
            init_done = self.conditions.items.get("Initialized", {}).get("status") == "True"
            if init_done and any(c.running or c.last_state for c in self.ctrs if c.kind == "app"):
                phase = "Running"
        self.phase = phase
        image = {c.name: c.spec.get("image", "") for c in self.ctrs}

        def cs(c: Ctr) -> Obj:
            out: Obj = {
                "name": c.name,
                "image": image[c.name],
                "imageID": f"maestro-local://{image[c.name]}",
                "ready": c.ready,
                "started": c.started and c.running,
                "restartCount": c.restart_count,
                "state": c.state,
                "lastState": c.last_state,
            }
            if c.running or "terminated" in c.state:
                out["containerID"] = self._container_id(c)
            return out

        status: Obj = {
            "phase": phase,
            "hostIP": self.ctx.host_ip,
            "hostIPs": [{"ip": self.ctx.host_ip}],
            "startTime": rfc3339(self.start_time),
            "conditions": self.conditions.as_list(),
            "containerStatuses": [cs(c) for c in self.ctrs if c.kind == "app"],
            "reason": self.reason,
            "message": self.message,
        }
        if self.pod_ip:
            status |= {"podIP": self.pod_ip, "podIPs": [{"ip": self.pod_ip}]}
        inits = [cs(c) for c in self.ctrs if c.kind != "app"]
        if inits:
            status["initContainerStatuses"] = inits
        return status

    async def _flush(self) -> None:
        meta = self.pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        body = {"metadata": {"uid": self.uid}, "status": self.status()}
        try:
            await self.ctx.api.patch(path, body, STRATEGIC)
        except ApiError as e:
            if e.status not in (404, 409):
                raise

    async def _publish_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._flush()
            except (TimeoutError, ApiError, OSError) as e:
                log.warning("%s: status update failed: %s; retrying", self.key, e)
                await asyncio.sleep(1)
                self._dirty.set()
            await asyncio.sleep(0.05)  # coalesce bursts of changes

    # -- on disk -------------------------------------------------------------------------------
    def _taken_ips(self) -> set[str]:
        taken: set[str] = set()
        for f in (self.ctx.state_dir / "pods").glob("*/pod.json"):
            with contextlib.suppress(OSError, ValueError):
                ip = json.loads(f.read_text()).get("podIP")
                if ip and f.parent.name != self.uid:
                    taken.add(ip)
        return taken

    def _write_etc(self) -> None:
        spec, meta = self.pod["spec"], self.pod["metadata"]
        hostname = spec.get("hostname") or meta["name"]
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        fqdn = (
            f"{hostname}.{spec['subdomain']}.{meta['namespace']}.svc.cluster.local"
            if spec.get("subdomain")
            else ""
        )
        lines.append(f"{self.pod_ip}\t{fqdn + ' ' if fqdn else ''}{hostname}")
        for alias in spec.get("hostAliases", []):
            lines.append(f"{alias['ip']}\t{' '.join(alias.get('hostnames', []))}")
        if self.ctx.host_aliases:  # names of services that run on the host itself (`--host-alias`)
            lines.append(f"{self.ctx.host_ip}\t{' '.join(self.ctx.host_aliases)}")
        (self.dir / "etc-hosts").write_text(
            "# Kubernetes-managed hosts file (maestro local executor).\n" + "\n".join(lines) + "\n"
        )
        (self.dir / "etc-hostname").write_text(hostname + "\n")
        # No cluster DNS here: names fail fast (nothing answers on the pod's own loopback) instead of
        # timing out against the host's resolver, which a pod's network cannot reach.
        dns = spec.get("dnsConfig") or {}
        servers = dns.get("nameservers") or ["127.0.0.1"]
        opts = " ".join(
            o["name"] + (f":{o['value']}" if o.get("value") else "") for o in dns.get("options", [])
        )
        (self.dir / "etc-resolv.conf").write_text(
            "".join(f"nameserver {n}\n" for n in servers)
            + (f"search {' '.join(dns['searches'])}\n" if dns.get("searches") else "")
            + f"options timeout:1 attempts:1 {opts}\n"
        )

    def _save(self) -> None:
        meta = self.pod["metadata"]
        rec = {
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": self.uid,
            "podIP": self.pod_ip,
            "netns": self.netns,
            "startTime": self.start_time,
            "finished": self.finished,
            "containers": {
                c.name: {
                    "restartCount": c.restart_count,
                    "done": c.done,
                    "state": c.state,
                    "lastState": c.last_state,
                    "startedAt": c.started_at,
                    "logOffset": c.log_offset,
                    "proc": c.proc.record() if c.proc else None,
                }
                for c in self.ctrs
            },
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "pod.json.tmp"
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, self.dir / "pod.json")
