"""Experiment tracking for `maestro train`: the run in MLflow, off the training path.

A `Tracker` is the seam the trainer talks to (params at the start, metrics per step, final metrics,
artifacts and the registered model at the end); `MlflowTracker` is the backend. Every network call
runs on one daemon thread: the training loop only appends to a bounded buffer (latest metrics kept,
the oldest dropped and counted when it is full), so a slow or dead tracker costs a step a lock and
an append, never a request. Failed calls are retried with exponential backoff; while the server stays
down the thread backs off longer and keeps the buffer; at the end the trainer waits a bounded time
for what is left and reports what became of the run (`contract.TrackingOutcome`) in its summary:
the run id and URL, the registered version, or the first error. Tracking never fails a job.

One Job, one run: the run's id is written next to the checkpoints (`contract.TRACKING_RUN_FILE` on the
output claim), and a restarted pod of the same Job reopens that run instead of starting another: its
metrics continue at the step the checkpoint resumed from, params already logged are not sent again.
A trainer that fails ends its run FAILED (`runStatus` in the outcome) before it exits.

Credentials are MLflow's own variables (MLFLOW_TRACKING_USERNAME/PASSWORD, MLFLOW_TRACKING_TOKEN),
set by the builder from a Secret; this module never reads or logs them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from maestro.workers.train import contract
from maestro.workers.train.config import ConfigError, TrackingSettings

log = logging.getLogger("maestro.train.tracking")

#: MLflow's log_batch limits (per request).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000
#: Longest error text carried into the summary and status.
MAX_ERROR_CHARS = 300


class Tracker(Protocol):
    """What the trainer needs from an experiment tracker. Every method returns at once."""

    def start(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None: ...

    def log_metrics(self, step: int, metrics: Mapping[str, float | None]) -> None: ...

    def resumed(self, step: int, losses: Sequence[float]) -> None:
        """Training continues from a checkpoint at `step`; `losses` are steps 1..step's (the checkpoint's)."""
        ...

    def finish(
        self,
        *,
        metrics: Mapping[str, float | None],
        step: int,
        artifacts: Iterable[Path],
        model: Mapping[str, Any] | None,
        failed: bool = False,
        timeout_s: float | None = None,
    ) -> contract.TrackingOutcome: ...


class TrackingError(Exception):
    """A tracker call failed; `reason` is TrackerUnreachable (retriable) or TrackingFailed (refused)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def classify(exc: BaseException) -> TrackingError:
    """An MLflow client error → unreachable (network, timeout, 5xx, 429) or refused (other 4xx)."""
    if isinstance(exc, TrackingError):
        return exc
    status = None
    get_status = getattr(exc, "get_http_status_code", None)  # MlflowException: from its error code
    if callable(get_status):
        try:
            status = int(get_status())
        except (TypeError, ValueError):
            status = None
    text = " ".join(str(exc).split())[:MAX_ERROR_CHARS] or type(exc).__name__
    if status is not None and 400 <= status < 500 and status != 429:
        return TrackingError(contract.REASON_TRACKING_FAILED, text)
    return TrackingError(contract.REASON_TRACKER_UNREACHABLE, text)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"lora": {"r": 16}} → {"lora.r": 16}; lists and tuples become comma-separated text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flatten(value, f"{name}.")
        elif isinstance(value, list | tuple):
            out[name] = ",".join(map(str, value))
        else:
            out[name] = value
    return out


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a (flattened) mapping; booleans as 1/0, everything else left out."""
    out: dict[str, float] = {}
    for key, value in flatten(metrics).items():
        if isinstance(value, bool):
            out[key] = 1.0 if value else 0.0
        elif isinstance(value, int | float) and value == value and abs(value) != float("inf"):
            out[key] = float(value)
    return out


@dataclass
class _Op:
    name: str
    run: Callable[[], None]
    #: runs only once the run exists (everything but creating it)
    needs_run: bool = True


@dataclass
class _State:
    experiment_id: str | None = None
    run_id: str | None = None
    artifact_uri: str | None = None
    version: dict[str, str] | None = None
    error: TrackingError | None = None
    dropped: int = 0
    failures: int = 0
    completed: list[str] = field(default_factory=list)
    #: 1 for a new run; n when a restarted pod reopened it for the n-th time
    attempt: int = 1
    #: params the run already holds (a reopened run): identical ones are not sent again
    logged_params: dict[str, str] = field(default_factory=dict)
    #: FINISHED or FAILED once the tracker took the run's end
    run_status: str | None = None
    #: the highest step of the loss curve the run held when it was reopened (0: none, or a new run)
    last_loss_step: int = 0


def read_run_file(state_dir: Path | None, backend: str, match: Mapping[str, str]) -> dict[str, Any] | None:
    """The run an earlier attempt of this Job created (`contract.TRACKING_RUN_FILE`), when it was made by
    the same backend for the same tracker and Job (`match`: uri, experiment, runName...); else None.

    A new Job on the same claim (a retry, another spec) has another runName and so starts its own run."""
    if state_dir is None:
        return None
    path = state_dir / contract.TRACKING_RUN_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s): starting a new run", path, e)
        return None
    if not isinstance(data, dict) or data.get("backend") != backend or not data.get("runId"):
        return None
    if any(data.get(k) != v for k, v in match.items()):
        return None
    return data


def write_run_file(state_dir: Path | None, data: Mapping[str, Any]) -> None:
    """Record the run for the next attempt (atomically: a pod killed mid-write leaves the old file)."""
    if state_dir is None:
        return
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / f".{contract.TRACKING_RUN_FILE}.tmp"
        tmp.write_text(json.dumps(dict(data), sort_keys=True))
        tmp.replace(state_dir / contract.TRACKING_RUN_FILE)
    except OSError as e:  # the run is fine; only a restart would start a second one
        log.warning(
            "the run id could not be saved in %s (%s): a restarted pod starts a new run", state_dir, e
        )


class MlflowTracker:
    """MLflow backend: MlflowClient calls on a background thread (see the module docstring)."""

    backend = "mlflow"

    def __init__(
        self,
        settings: TrackingSettings,
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        request_timeout_s: float = 10.0,
        buffer: int = 20_000,
        flush_every_s: float = 1.0,
        finish_timeout_s: float = 60.0,
        state_dir: Path | None = None,
    ) -> None:
        # Our retries and timeouts, not the client's (7 retries with backoff: minutes per call).
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(1, request_timeout_s)))
        # stdout's last line is the trainer's summary: no "View run at" lines from the client
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.settings = settings
        self.state_dir = state_dir
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.flush_every_s = flush_every_s
        self.finish_timeout_s = finish_timeout_s
        self._client: Any = None
        self._state = _State()
        self._metrics: deque[Any] = deque(maxlen=buffer)
        self._ops: deque[_Op] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._done = threading.Event()
        self._down_until = 0.0
        self._cooldown = backoff_s
        # The client's import (~1.5 s of pure-Python CPU) happens here, before training starts: on the
        # thread it would hold the GIL against the first training steps. No network is involved.
        try:
            import mlflow.entities
            import mlflow.tracking  # noqa: F401
        except Exception as e:  # the thread reports it as the tracking error
            log.warning("the MLflow client cannot be imported: %s", e)
        self._thread = threading.Thread(target=self._loop, name="maestro-tracking", daemon=True)
        self._thread.start()

    # --- the trainer's side: never blocks on the network -------------------------------------------
    def start(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        flat = {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(params).items() if v is not None}
        self._submit(_Op("create run", lambda: self._create_run(dict(tags)), needs_run=False))
        self._submit(_Op("log params", lambda: self._log_params(flat)))

    def log_metrics(self, step: int, metrics: Mapping[str, float | None]) -> None:
        ts = int(time.time() * 1000)  # plain tuples: mlflow is imported (and used) on the thread only
        rows = [(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
        with self._cv:
            free = (self._metrics.maxlen or 0) - len(self._metrics)
            if len(rows) > free:  # the deque evicts the oldest points to make room
                self._state.dropped += len(rows) - free
            self._metrics.extend(rows)
            if len(self._metrics) >= MAX_METRICS_PER_BATCH:
                self._cv.notify()

    def resumed(self, step: int, losses: Sequence[float]) -> None:
        """Backfill the loss of checkpointed steps the run lacks: an attempt killed outright loses the
        points still in its buffer, and a run that is new (no run file) has none of steps 1..step. The
        checkpoint holds every step's loss, so the run's curve has no gap."""
        known = [float(x) for x in losses[:step]]

        def backfill() -> None:
            ts = int(time.time() * 1000)
            rows = [("loss", v, ts, i) for i, v in enumerate(known, 1) if i > self._state.last_loss_step]
            for i in range(0, len(rows), MAX_METRICS_PER_BATCH):
                self._send_metrics(self._state.run_id, rows[i : i + MAX_METRICS_PER_BATCH])

        self._submit(_Op("backfill checkpointed losses", backfill))

    def finish(
        self,
        *,
        metrics: Mapping[str, float | None],
        step: int,
        artifacts: Iterable[Path],
        model: Mapping[str, Any] | None,
        failed: bool = False,
        timeout_s: float | None = None,
    ) -> contract.TrackingOutcome:
        """Queue the final calls, wait at most `timeout_s` for the thread, report what became of the run."""
        self.log_metrics(step, metrics)
        files = [p for p in artifacts if p.is_file()]
        self._submit(_Op("log artifacts", lambda: self._log_artifacts(files)))
        if model is not None and not failed:
            ref = dict(model)
            self._submit(_Op("register model", lambda: self._register(ref)))
        status = "FAILED" if failed else "FINISHED"
        self._submit(_Op("end run", lambda: self._end_run(status)))
        with self._cv:
            self._closing = True
            self._cv.notify()
        wait = self.finish_timeout_s if timeout_s is None else timeout_s
        if not self._done.wait(wait):
            with self._cv:
                if self._state.error is None:
                    self._state.error = TrackingError(
                        contract.REASON_TRACKER_UNREACHABLE,
                        f"the tracker did not take the run's last calls within {wait:.0f}s",
                    )
        return self.outcome()

    def outcome(self) -> contract.TrackingOutcome:
        with self._cv:
            st = self._state
            pending = bool(self._ops or self._metrics)
            out: contract.TrackingOutcome = {"backend": self.backend, "ok": st.error is None and not pending}
            if st.experiment_id:
                out["experimentId"] = st.experiment_id
            if st.run_id:
                out["runId"] = st.run_id
                out["runUrl"] = self.run_url(st.experiment_id or "0", st.run_id)
            if st.run_status:
                out["runStatus"] = st.run_status
            if st.attempt > 1:
                out["attempt"] = st.attempt
            if st.version:
                out["registeredModel"] = {"name": st.version["name"], "version": st.version["version"]}
            if st.error is not None and (pending or not out["ok"]):
                out["reason"], out["error"] = st.error.reason, str(st.error)[:MAX_ERROR_CHARS]
            if st.dropped:
                out["dropped"] = st.dropped
            return out

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.settings.uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    # --- the thread ------------------------------------------------------------------------------------
    def _submit(self, op: _Op) -> None:
        with self._cv:
            self._ops.append(op)
            self._cv.notify()

    def _loop(self) -> None:
        try:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.settings.uri, registry_uri=self.settings.uri)
        except Exception as e:  # the client itself is unusable: report it, train on
            with self._cv:
                self._state.error = classify(e)
                self._ops.clear()
                self._metrics.clear()
            self._done.set()
            return
        last_flush = time.monotonic()
        while True:
            with self._cv:
                while not (self._closing or self._ops or len(self._metrics) >= MAX_METRICS_PER_BATCH):
                    if self._metrics and time.monotonic() - last_flush >= self.flush_every_s:
                        break
                    self._cv.wait(self.flush_every_s)
                closing = self._closing
            wait = self._down_until - time.monotonic()
            if wait > 0 and not closing:
                with self._cv:
                    self._cv.wait_for(lambda: self._closing, timeout=wait)
                continue
            try:
                self._drain()
            except TrackingError as e:
                self._failed(e)
                if closing:  # the last round failed as well: give up, the job is done
                    break
                continue
            last_flush = time.monotonic()
            with self._cv:
                err = self._state.error
                if err is not None and err.reason == contract.REASON_TRACKER_UNREACHABLE:
                    self._state.error = None  # back, and nothing was lost: what was queued went through
                if closing and (not (self._ops or self._metrics) or self._state.run_id is None):
                    break
        self._done.set()

    def _drain(self) -> None:
        """Create the run, flush the buffered metrics, then the queued calls in order.

        Raises TrackingError when the tracker is unreachable (the caller backs off and comes back);
        a call the tracker refuses is recorded and skipped (it would be refused again).
        """
        while True:
            with self._cv:
                op = self._ops[0] if self._ops else None
            if op is not None and not op.needs_run:
                if self._refused(op):
                    with self._cv:  # no run: nothing else can be logged
                        self._ops.clear()
                        self._metrics.clear()
                    return
                continue
            if self._state.run_id is None:
                return  # nothing can be logged before the run exists
            self._flush_metrics()
            if op is None:
                return
            self._refused(op)

    def _refused(self, op: _Op) -> bool:
        """Run a queued call and pop it; True when the tracker refused it (recorded, not retried)."""
        try:
            self._call(op.name, op.run)
        except TrackingError as e:
            if e.reason != contract.REASON_TRACKING_FAILED:
                raise
            self._record(e)
            self._pop(op)
            return True
        self._pop(op)
        return False

    def _pop(self, op: _Op) -> None:
        with self._cv:
            if self._ops and self._ops[0] is op:
                self._ops.popleft()
            self._state.completed.append(op.name)
        self._cooldown = self.backoff_s

    def _flush_metrics(self) -> None:
        while True:
            with self._cv:
                batch = [self._metrics[i] for i in range(min(MAX_METRICS_PER_BATCH, len(self._metrics)))]
                evicted = self._state.dropped
            if not batch:
                return
            run_id = self._state.run_id

            def send(b: list[Any] = batch, r: str | None = run_id) -> None:
                self._send_metrics(r, b)

            try:
                self._call("log metrics", send)
            except TrackingError as e:
                if e.reason != contract.REASON_TRACKING_FAILED:
                    raise
                self._record(e)  # refused (e.g. a bad value): drop this batch, keep the rest
            with self._cv:  # drop what was sent (new rows were appended behind it, and an overflow
                # meanwhile already evicted that many of the sent ones)
                sent_left = max(0, len(batch) - (self._state.dropped - evicted))
                for _ in range(min(sent_left, len(self._metrics))):
                    self._metrics.popleft()

    def _send_metrics(self, run_id: str | None, rows: list[tuple[str, float, int, int]]) -> None:
        """POST runs/log-batch with the body as plain JSON, through MLflow's own REST helper (its auth,
        TLS and error mapping). The same request `MlflowClient.log_batch` makes, without building a
        protobuf per point: 2 ms instead of 16 ms of CPU per 1,000 points, time this thread would hold
        the GIL against training. Falls back to log_batch where the store is not the REST one."""
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        store = getattr(getattr(self._client, "_tracking_client", None), "store", None)
        creds = getattr(store, "get_host_creds", None)
        if not callable(creds):
            from mlflow.entities import Metric

            self._client.log_batch(run_id, metrics=[Metric(*row) for row in rows])
            return
        body = {
            "run_id": run_id,
            "metrics": [{"key": k, "value": v, "timestamp": ts, "step": st} for k, v, ts, st in rows],
        }
        endpoint = "/api/2.0/mlflow/runs/log-batch"
        response = http_request(creds(), endpoint, "POST", json=body)  # type: ignore[no-untyped-call]
        verify_rest_response(response, endpoint)

    def _call(self, what: str, fn: Callable[[], None]) -> None:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                fn()
                return
            except Exception as e:
                err = classify(e)
                if err.reason == contract.REASON_TRACKING_FAILED or attempt == self.retries:
                    raise TrackingError(err.reason, f"{what}: {err}") from None
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    def _record(self, err: TrackingError) -> None:
        with self._cv:
            st = self._state
            st.failures += 1
            if st.error is None:
                log.warning(
                    "experiment tracking at %s failed (%s): %s; training goes on (tracking is best effort)",
                    self.settings.uri,
                    err.reason,
                    err,
                )
            if st.error is None or st.error.reason != contract.REASON_TRACKING_FAILED:
                st.error = err  # a refusal stays the reported error: only a person can fix it

    def _failed(self, err: TrackingError) -> None:
        """The tracker is unreachable: keep what is queued, come back after a growing pause."""
        self._record(err)
        self._down_until = time.monotonic() + self._cooldown
        self._cooldown = min(self._cooldown * 2, self.max_backoff_s)

    # --- MLflow calls (on the thread) ----------------------------------------------------------------
    def _create_run(self, tags: dict[str, str]) -> None:
        from mlflow.exceptions import MlflowException

        c, name = self._client, self.settings.experiment
        if self._reopen():
            return
        exp = c.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = c.create_experiment(name)
            except MlflowException:  # created by another job meanwhile
                exp = c.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        run = c.create_run(
            exp_id, tags={**self.settings.tags, **tags}, run_name=self.settings.run_name or None
        )
        with self._cv:
            self._state.experiment_id = exp_id
            self._state.run_id = run.info.run_id
            self._state.artifact_uri = run.info.artifact_uri
        self._save_run_file()
        log.info("tracking in MLflow: %s", self.run_url(exp_id, run.info.run_id))

    def _run_match(self) -> dict[str, str]:
        s = self.settings
        return {"uri": s.uri, "experiment": s.experiment, "runName": s.run_name or ""}

    def _save_run_file(self) -> None:
        st = self._state
        write_run_file(
            self.state_dir,
            {
                "backend": self.backend,
                **self._run_match(),
                "experimentId": st.experiment_id,
                "runId": st.run_id,
                "attempt": st.attempt,
            },
        )

    def _reopen(self) -> bool:
        """Continue the run an earlier attempt of this Job created; False when there is none to continue
        (no run file, another Job's, or the run was deleted in the tracker meanwhile)."""
        from mlflow.exceptions import MlflowException

        prev = read_run_file(self.state_dir, self.backend, self._run_match())
        if prev is None:
            return False
        run_id = str(prev["runId"])
        try:
            run = self._client.get_run(run_id)
        except MlflowException as e:
            if getattr(e, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            log.warning(
                "the run %s of an earlier attempt is gone from the tracker: starting a new one", run_id
            )
            return False
        attempt = int(prev.get("attempt") or 1) + 1
        self._client.update_run(run_id, status="RUNNING")
        self._client.set_tag(run_id, "llmops.dev/attempt", str(attempt))
        # the run's latest loss is its highest step (MLflow keeps the max-step value as latest)
        objs = getattr(run.data, "_metric_objs", None)  # the latest value per key, with its step
        if objs is None:  # not in this client version: the curve itself (one call)
            objs = self._client.get_metric_history(run_id, "loss")
        last_loss = max((int(m.step) for m in objs if m.key == "loss"), default=0)
        with self._cv:
            st = self._state
            st.experiment_id, st.run_id = run.info.experiment_id, run_id
            st.artifact_uri, st.attempt = run.info.artifact_uri, attempt
            st.logged_params = {str(k): str(v) for k, v in (run.data.params or {}).items()}
            st.last_loss_step = last_loss
        self._save_run_file()
        log.info(
            "resuming MLflow run %s (attempt %d)", self.run_url(st.experiment_id or "0", run_id), attempt
        )
        return True

    def _end_run(self, status: str) -> None:
        self._client.set_terminated(self._state.run_id, status)
        with self._cv:
            self._state.run_status = status

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        logged = self._state.logged_params
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if changed:  # MLflow refuses to change a logged param (400): the first attempt's values stay
            log.warning("params changed since the run's first attempt, kept as first logged: %s", changed)
        items = [Param(k, v) for k, v in params.items() if k not in logged]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self._state.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    def _log_artifacts(self, files: list[Path]) -> None:
        for path in files:
            if self._state.run_id is not None and path.name not in self._state.completed:
                self._client.log_artifact(self._state.run_id, str(path))
                self._state.completed.append(path.name)  # a retry does not upload it twice

    def _register(self, model: dict[str, Any]) -> None:
        """One model version per run, pointing at the weights where they are, tagged with their digest.

        The weights are not uploaded (a full fine-tune is gigabytes and already on its claim): the
        version's source is the model URI (pvc://, s3://). A file:// URI means nothing outside this
        pod, and MLflow refuses local sources, so the version then points at the run's artifacts.
        """
        from mlflow.exceptions import MlflowException

        c, name = self._client, self.settings.registered_model_name
        try:
            c.create_registered_model(
                name, description="Fine-tuned by Maestro (LLMTrainingJob); versions are runs."
            )
        except MlflowException as e:
            if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        uri, digest = str(model.get("uri") or ""), str(model.get("digest") or "")
        source = uri if uri and not uri.startswith("file:") else f"{self._state.artifact_uri}"
        tags = {
            "llmops.dev/model-digest": digest,
            "llmops.dev/model-uri": uri,
            "llmops.dev/model-format": str(model.get("kind") or model.get("format") or ""),
        }
        mv = c.create_model_version(
            name,
            source,
            run_id=self._state.run_id,
            tags=tags,
            description=f"{uri} ({digest})",
            await_creation_for=10,  # the open-source registry is READY at once; never wait minutes
        )
        with self._cv:
            self._state.version = {"name": mv.name, "version": str(mv.version)}


class WandbTracker:
    """Weights & Biases backend, offline: the run is written under `state_dir`/wandb/ (the output claim)
    for `wandb sync` to upload later; WANDB_MODE=offline, so nothing here touches the network.

    No thread of its own: offline calls only hand records to W&B's local `wandb-core` process (its
    own buffering), so they cost the step what a queue append costs. A failing call is recorded as
    TrackingFailed and the run goes on without it; like MLflow's, it never fails a job. Params are the
    run's config, lineage tags go in config["tags"], per-step metrics its history, the final metrics its
    summary; artifacts are copied into the run's files. W&B has no model registry offline: the model's
    URI and digest go in the summary. A restarted pod reopens the same run id (the run file), in a new
    offline directory of the same id: sync them in order (`wandb sync wandb/offline-run-*-<id>`)."""

    backend = "wandb"

    def __init__(self, settings: TrackingSettings, *, state_dir: Path | None = None) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ConfigError(
                "spec.tracking.backend is wandb but this worker image lacks the wandb package "
                f"({e}); use an image built with the `wandb` extra (pip install 'maestro[wandb]') or "
                "backend mlflow"
            ) from None
        self._wandb: Any = wandb
        self.settings = settings
        self.state_dir = (state_dir or Path.cwd()).resolve()
        self._state = _State()
        self._run: Any = None
        self._run_dirs: list[str] = []

    def _match(self) -> dict[str, str]:
        return {"experiment": self.settings.experiment, "runName": self.settings.run_name or ""}

    def _guard(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # tracking is best effort
            err = TrackingError(contract.REASON_TRACKING_FAILED, f"{what}: {' '.join(str(e).split())}"[:300])
            if self._state.error is None:
                log.warning("W&B tracking failed: %s; training goes on (tracking is best effort)", err)
                self._state.error = err
            return None

    def start(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        wandb = self._wandb
        os.environ["WANDB_MODE"] = "offline"  # never the network, whatever the image's environment says
        os.environ.setdefault("WANDB_SILENT", "true")
        prev = read_run_file(self.state_dir, self.backend, self._match())
        if prev is not None:
            self._state.attempt = int(prev.get("attempt") or 1) + 1
            self._run_dirs = [str(d) for d in prev.get("runDirs") or []]
        run_id = str(prev["runId"]) if prev else secrets.token_hex(4)  # W&B ids: [a-z0-9]
        config = {k: v for k, v in flatten(params).items() if v is not None}
        config["tags"] = {**self.settings.tags, **tags}

        def init() -> Any:
            return wandb.init(
                project=self.settings.experiment,
                name=self.settings.run_name or None,
                id=run_id,
                dir=str(self.state_dir),
                mode="offline",
                config=config,
                settings=wandb.Settings(console="off", silent=True, disable_git=True, save_code=False),
            )

        self._run = self._guard("init", init)
        if self._run is None:
            return
        st = self._state
        st.run_id, st.experiment_id = run_id, self.settings.experiment
        if st.attempt > 1:
            self._guard("attempt", lambda: self._run.summary.update({"attempt": st.attempt}))
        run_dir = Path(self._run.dir).parent  # <dir>/wandb/offline-run-<time>-<id>; files/ is run.dir
        self._run_dirs.append(str(run_dir.relative_to(self.state_dir)))
        write_run_file(
            self.state_dir,
            {
                "backend": self.backend,
                **self._match(),
                "runId": run_id,
                "attempt": st.attempt,
                "runDirs": self._run_dirs,
            },
        )
        log.info("tracking in W&B offline: %s (wandb sync uploads it)", run_dir)

    def log_metrics(self, step: int, metrics: Mapping[str, float | None]) -> None:
        if self._run is None:
            return
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        self._guard("log", lambda: self._run.log(values, step=step))

    def resumed(self, step: int, losses: Sequence[float]) -> None:
        """Nothing to backfill offline: W&B's history takes steps in order only, and what the killed
        attempt wrote stays in its own offline directory (synced before this one)."""

    def finish(
        self,
        *,
        metrics: Mapping[str, float | None],
        step: int,
        artifacts: Iterable[Path],
        model: Mapping[str, Any] | None,
        failed: bool = False,
        timeout_s: float | None = None,
    ) -> contract.TrackingOutcome:
        """Final metrics into the summary, artifacts into the run's files, then end the run (exit code 1:
        failed)."""
        run, st = self._run, self._state
        if run is not None:
            final: dict[str, float | str] = {k: float(v) for k, v in metrics.items() if v is not None}
            if model is not None and not failed:
                final |= {f"model.{k}": str(v) for k, v in model.items() if isinstance(v, str)}
            self._guard("summary", lambda: run.summary.update(final))
            for path in (p for p in artifacts if p.is_file()):
                self._guard(
                    f"save {path.name}",
                    lambda p=path: run.save(str(p), base_path=str(p.parent), policy="now"),  # type: ignore[misc]
                )
            if self._guard("finish", lambda: run.finish(exit_code=1 if failed else 0) or True):
                st.run_status = "FAILED" if failed else "FINISHED"
            self._run = None
        return self.outcome()

    def outcome(self) -> contract.TrackingOutcome:
        st = self._state
        out: contract.TrackingOutcome = {
            "backend": self.backend,
            "ok": st.error is None and st.run_id is not None,
        }
        if st.run_id:
            out["runId"], out["experimentId"] = st.run_id, st.experiment_id or ""
        if self._run_dirs:
            out["runDir"] = self._run_dirs[-1]
        if st.run_status:
            out["runStatus"] = st.run_status
        if st.attempt > 1:
            out["attempt"] = st.attempt
        if st.error is not None:
            out["reason"], out["error"] = st.error.reason, str(st.error)[:MAX_ERROR_CHARS]
        return out


def from_settings(settings: TrackingSettings | None, state_dir: Path | None = None) -> Tracker | None:
    """The tracker the settings name, or None (tracking off). `state_dir` (the output directory) holds
    the run file that lets a restarted pod continue its Job's run, and W&B's offline run.

    Raises ConfigError when the backend's client is not installed (one line, before training starts)."""
    if settings is None:
        return None
    if settings.backend == "wandb":
        return WandbTracker(settings, state_dir=state_dir)
    return MlflowTracker(settings, state_dir=state_dir)
