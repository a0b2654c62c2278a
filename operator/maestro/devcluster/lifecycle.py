"""`make dev`: the whole Maestro lifecycle on one CPU machine, for real.

Starts the local control plane, the local executor (runs Maestro's own pods as processes), the
operator, applies `examples/quickstart/` and waits until the dataset is Ready, the LoRA job has
Succeeded and the guarded deployment serves; then prints a short summary, including one chat
completion through the guard, a redaction and a blocked request. Every step is idempotent: a second
`make dev` reuses what is running. Logs of every component land in `<state>/logs/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.devcluster.cluster import (
    REPO_ROOT,
    ClusterError,
    DevCluster,
    _alive,
    _reap,
    _signal_group,
    _wait_dead,
    tail,
)

QUICKSTART = REPO_ROOT / "examples" / "quickstart"
INPUTS = Path("/var/tmp/maestro-quickstart")
NAMESPACE = "maestro-quickstart"
API_KEY = "mk-quickstart-dev-key-change-me"
GUARD_PORT = 8080
MONITOR_PORT = 9090


def say(msg: str) -> None:
    print(f"[maestro dev] {msg}", file=sys.stderr, flush=True)


@dataclass
class DevEnv:
    state_dir: Path

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.cluster = DevCluster(self.state_dir / "cluster")
        self.logs = self.state_dir / "logs"
        self.pid_file = self.state_dir / "dev-processes.json"

    # -- processes -------------------------------------------------------------------------------
    def _pids(self) -> dict[str, int]:
        if self.pid_file.exists():
            out: dict[str, int] = json.loads(self.pid_file.read_text())
            return out
        return {}

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        pids = self._pids()
        if name in pids and _alive(pids[name]):
            say(f"{name} already running (pid {pids[name]})")
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        pids[name] = proc.pid
        self.pid_file.write_text(json.dumps(pids))
        time.sleep(1.0)
        if not _alive(proc.pid):
            raise ClusterError(
                f"{name} exited at start; last lines of {self.logs / (name + '.log')}:\n"
                f"{tail(self.logs / (name + '.log'))}"
            )
        say(f"started {name} (pid {proc.pid}, log {self.logs / (name + '.log')})")

    def _stop(self, name: str, grace: float = 30.0) -> None:
        pids = self._pids()
        pid = pids.pop(name, None)
        if pid and _alive(pid):
            _signal_group(pid, signal.SIGTERM)
            _wait_dead([pid], grace)
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
                _wait_dead([pid], 10)
            _reap(pid)
            say(f"stopped {name}")
        if self.state_dir.exists():
            self.pid_file.write_text(json.dumps(pids))

    # -- kubectl ---------------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise ClusterError("kubectl not found on PATH")
        proc = subprocess.run(
            [kubectl, f"--kubeconfig={self.cluster.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def get(self, kind: str, name: str) -> dict[str, Any]:
        proc = self.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json", check=False)
        if proc.returncode != 0:
            return {}
        out: dict[str, Any] = json.loads(proc.stdout)
        return out

    # -- steps -----------------------------------------------------------------------------------
    def prepare_inputs(self) -> None:
        """The quickstart's file:// inputs: the dataset file and a tiny Llama built locally."""
        INPUTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(QUICKSTART / "data" / "support.jsonl", INPUTS / "support.jsonl")
        model = INPUTS / "tiny-llama"
        if not (model / "config.json").exists():
            say("building the tiny base model (no downloads)")
            subprocess.run(
                [sys.executable, "-m", "maestro", "train", "tiny-model", "--out", str(model)],
                check=True,
                stdout=subprocess.DEVNULL,
            )

    def up(self, timeout: float = 900) -> dict[str, Any]:
        t0 = time.monotonic()
        say("starting the local control plane")
        self.cluster.up(timeout=120)
        say(f"control plane ready: {self.cluster.server} (KUBECONFIG={self.cluster.kubeconfig})")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        self.prepare_inputs()
        env = {"KUBECONFIG": str(self.cluster.kubeconfig)}
        self._start(
            "executor",
            [
                sys.executable,
                "-m",
                "maestro",
                "dev",
                "executor",
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--state-dir",
                str(self.state_dir / "executor"),
                # overcommit: requests are sized for real nodes, processes share this machine
                "--cpu",
                "16",
                "--memory",
                "64Gi",
            ],
            env,
        )
        # Pods have no cluster DNS: training progress goes to the operator at the pods' gateway.
        gateway = self._executor_gateway(deadline=time.monotonic() + 60)
        self._start(
            "operator",
            [sys.executable, "-m", "maestro", "run"],
            {
                **env,
                "MAESTRO_LOCAL_EXECUTOR": "true",
                "MAESTRO_PROGRESS_URL": f"http://{gateway}:8090",
                "MAESTRO_WEBHOOK_HOST": "127.0.0.1",
                "MAESTRO_WEBHOOK_ADDR": "127.0.0.1",
            },
        )
        self.kubectl("create", "namespace", NAMESPACE, check=False)
        self.kubectl("apply", "-n", NAMESPACE, "-f", str(QUICKSTART))
        say(
            f"applied examples/quickstart/ to namespace {NAMESPACE}; waiting (this trains and serves a model)"
        )
        self.wait_ready(deadline=t0 + timeout)
        summary = self.summary()
        summary["seconds"] = round(time.monotonic() - t0, 1)
        return summary

    def _executor_gateway(self, deadline: float) -> str:
        """The host side of the executor's pod network (written to executor.json once it is set up)."""
        cfg = self.state_dir / "executor" / "executor.json"
        while time.monotonic() < deadline:
            if cfg.exists():
                try:
                    return str(json.loads(cfg.read_text())["hostIP"])
                except (ValueError, KeyError):
                    pass
            time.sleep(0.2)
        raise ClusterError(f"the executor wrote no {cfg}; see {self.logs / 'executor.log'}")

    def wait_ready(self, deadline: float) -> None:
        targets = [
            ("llmds", "support-chats", {"Ready"}),
            ("llmtj", "support-lora", {"Succeeded"}),
            ("llmdep", "support-bot", {"Ready"}),
        ]
        last: dict[str, str] = {}
        while time.monotonic() < deadline:
            done = True
            for kind, name, ok in targets:
                st = self.get(kind, name).get("status", {})
                phase = st.get("phase", "Pending")
                ready: dict[str, Any] = next(
                    (c for c in st.get("conditions", []) if c.get("type") == "Ready"), {}
                )
                line = f"{kind}/{name}: {phase}" + (
                    f" ({ready.get('reason')}: {ready.get('message', '')})"
                    if ready.get("reason") and phase not in ok
                    else ""
                )
                if kind == "llmtj" and st.get("progress"):
                    p = st["progress"]
                    line += f" step {p.get('step')}/{p.get('totalSteps')} loss {p.get('loss')}"
                if last.get(name) != line:
                    say(line)
                    last[name] = line
                if phase == "Failed":
                    raise ClusterError(
                        f"{kind}/{name} failed: {line}; logs in {self.logs} and "
                        f"{self.state_dir / 'executor' / 'logs'}"
                    )
                done = done and phase in ok
            if done:
                return
            time.sleep(2)
        raise ClusterError(f"timed out waiting for the quickstart; last states: {list(last.values())}")

    def pod_ip(self) -> str:
        selector = self.get("llmdep", "support-bot").get("status", {}).get("selector")
        if not selector:
            raise ClusterError("LLMDeployment support-bot has no status.selector yet")
        pods = json.loads(self.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)[
            "items"
        ]
        ips = [p["status"].get("podIP") for p in pods if p["status"].get("podIP")]
        if not ips:
            raise ClusterError("no serving pod has an IP yet")
        return str(ips[0])

    def worker_summary(self, job_name: str) -> dict[str, Any]:
        """The JSON summary a worker left in its termination message, as the kubelet reported it."""
        pods = json.loads(
            self.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"job-name={job_name}", "-o", "json").stdout
        )["items"]
        for pod in pods:
            for cs in pod["status"].get("containerStatuses", []):
                msg = cs.get("state", {}).get("terminated", {}).get("message")
                if msg:
                    try:
                        out: dict[str, Any] = json.loads(msg)
                        return out
                    except ValueError:
                        continue
        return {}

    def monitor_metrics(self) -> dict[str, float]:
        """The serving pod's monitor sidecar metrics (`name{labels}` → value)."""
        with urllib.request.urlopen(f"http://{self.pod_ip()}:{MONITOR_PORT}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("maestro_monitor_") and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def endpoint(self) -> str:
        return f"http://{self.pod_ip()}:{GUARD_PORT}"

    def summary(self) -> dict[str, Any]:
        ds = self.get("llmds", "support-chats").get("status", {})
        tj = self.get("llmtj", "support-lora").get("status", {})
        dep = self.get("llmdep", "support-bot").get("status", {})
        base = self.endpoint()
        chat = _post(
            base + "/v1/chat/completions",
            {
                "model": "support-bot",
                "max_tokens": 24,
                "messages": [{"role": "user", "content": "My router shows a red light, what should I do?"}],
            },
        )
        redacted = _post(
            base + "/v1/chat/completions",
            {
                "model": "support-bot",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "Email me at jane.doe@example.com about my order"}],
            },
        )
        blocked = _post(
            base + "/v1/chat/completions",
            {
                "model": "support-bot",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "show me the internal-only runbook"}],
            },
        )
        metrics = self.monitor_metrics()
        return {
            "dataset": ds,
            "training": tj,
            "deployment": dep,
            "endpoint": base,
            "trainer": self.worker_summary(tj.get("jobName", "")),
            "chat": chat,
            "redacted": redacted,
            "blocked": blocked,
            "piiDetections": {
                k: v for k, v in metrics.items() if k.startswith("maestro_monitor_pii_detections_total")
            },
            "decisions": {
                k: v for k, v in metrics.items() if k.startswith("maestro_monitor_policy_decisions_total")
            },
        }

    def down(self) -> None:
        self._stop("operator")
        self._stop("executor", grace=60)
        self.cluster.down(quiet=True)
        say("stopped everything")


def _post(url: str, body: dict[str, Any], key: str = API_KEY) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return {"status": resp.status, "body": json.loads(resp.read()), "headers": dict(resp.headers)}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": json.loads(e.read() or b"{}"), "headers": dict(e.headers)}


def _label(series: str, name: str) -> str:
    """`metric{a="x",entity="EMAIL"}` -> EMAIL for name='entity'."""
    for part in series.partition("{")[2].rstrip("}").split(","):
        key, _, value = part.partition("=")
        if key == name:
            return value.strip('"')
    return "?"


def render_summary(s: dict[str, Any], out: Callable[[str], None] = print) -> None:
    ds, tj, dep = s["dataset"], s["training"], s["deployment"]
    rec = ds.get("records", {})
    out("\n== Maestro quickstart ==")
    out(f"Dataset support-chats   version {ds.get('version')}")
    out(
        f"  records: {rec.get('total')} read, {rec.get('kept')} kept, {rec.get('duplicates')} duplicates, "
        f"{rec.get('piiRedacted')} PII redacted, train/validation {rec.get('train')}/{rec.get('validation')}"
    )
    for g in ds.get("gates", []):
        out(
            f"  gate {g.get('name'):<22} {'PASS' if g.get('passed') else 'FAIL'}  value {g.get('value')} "
            f"threshold {g.get('threshold')}"
        )
    prog, ev, model = tj.get("progress", {}), tj.get("evaluation", {}), tj.get("model", {})
    out(
        f"Training support-lora   {tj.get('phase')}  steps {prog.get('step')}/{prog.get('totalSteps')}  "
        f"final loss {prog.get('loss')}"
    )
    curve = s.get("trainer", {}).get("metrics", {}).get("lossCurve", [])
    if curve:
        out("  loss curve: " + "  ".join(f"{int(step)}:{loss:.3f}" for step, loss in curve))
    out(
        f"  evaluation: eval loss {ev.get('evalLoss')}  perplexity {ev.get('perplexity')}  "
        f"passed {ev.get('passed')}"
    )
    out(f"  model {model.get('uri')}  digest {model.get('digest')}")
    out(
        f"Deployment support-bot  {dep.get('phase')}  "
        f"ready {dep.get('readyReplicas')}/{dep.get('replicas')}  "
        f"endpoint {dep.get('endpoint')} (reached at {s['endpoint']})"
    )
    chat = s["chat"]
    text = (
        chat["body"].get("choices", [{}])[0].get("message", {}).get("content")
        if chat["status"] == 200
        else chat
    )
    out(f"  chat completion (HTTP {chat['status']}): {text!r}")
    red = s["redacted"]
    pii = ", ".join(f"{_label(k, 'entity')}={int(v)}" for k, v in s.get("piiDetections", {}).items())
    out(
        f"  PII prompt (HTTP {red['status']}): redacted by the guard before it reached the model "
        f"(monitor: PII detections {pii or 'none'})"
    )
    blk = s["blocked"]
    out(f"  blocked term (HTTP {blk['status']}): {blk['body'].get('error', {}).get('message')}")
    out(f"Took {s.get('seconds')} s.")
