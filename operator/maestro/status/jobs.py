"""What a batch/v1 Job and its pods say: running, succeeded, failed, and the worker's summary.

Workers report through the termination message (the kubelet copies the container's
/dev/termination-log into `state.terminated.message`), so the worker pods need no API credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Obj = dict[str, Any]


class JobState(StrEnum):
    MISSING = "Missing"
    SUSPENDED = "Suspended"
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobView:
    state: JobState
    #: Reason of the Job's Failed condition (BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy).
    failure_reason: str = ""
    failure_message: str = ""
    start_time: str | None = None
    completion_time: str | None = None


def _condition(job: Obj, type_: str) -> Obj | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return dict(c)
    return None


def view(job: Obj | None) -> JobView:
    if job is None:
        return JobView(JobState.MISSING)
    status = job.get("status") or {}
    start = status.get("startTime")
    if _condition(job, "Complete"):
        return JobView(JobState.SUCCEEDED, start_time=start, completion_time=status.get("completionTime"))
    failed = _condition(job, "Failed")
    if failed:
        return JobView(
            JobState.FAILED,
            failed.get("reason", ""),
            failed.get("message", ""),
            start,
            failed.get("lastTransitionTime"),
        )
    if _condition(job, "SuccessCriteriaMet") or _condition(job, "FailureTarget"):
        # the pods are done and the Job controller is finishing it (Complete/Failed come next): still
        # running, not back to "waiting for pods"
        return JobView(JobState.RUNNING, start_time=start)
    if (job.get("spec") or {}).get("suspend") and not status.get("active"):
        return JobView(JobState.SUSPENDED, start_time=start)
    if status.get("ready") or (status.get("active") and status.get("ready") is None):
        return JobView(JobState.RUNNING, start_time=start)
    return JobView(JobState.PENDING, start_time=start)


@dataclass(frozen=True)
class Termination:
    exit_code: int
    message: str
    reason: str
    pod: str
    container: str = ""
    #: The container's memory limit from the pod spec ("" when none): what an OOM kill exceeded.
    memory_limit: str = ""

    @property
    def oom_killed(self) -> bool:
        return self.reason == "OOMKilled"

    def oom_message(self, fix: str) -> str:
        limit = f" of {self.memory_limit}" if self.memory_limit else ""
        return (
            f"container {self.container} of pod {self.pod} exceeded its memory limit{limit} and was "
            f"OOMKilled (exit {self.exit_code}); {fix}"
        )


def memory_limit(pod: Obj, container: str) -> str:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            return str(((c.get("resources") or {}).get("limits") or {}).get("memory") or "")
    return ""


def termination(pods: list[Obj], container: str, *, index: str | None = None) -> Termination | None:
    """The most relevant terminated `container`: a succeeded pod first, else the latest failure.

    `index` restricts Indexed Jobs to one completion index (rank 0 writes the summary).
    """
    candidates: list[tuple[int, str, Termination]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if index is not None:
            pod_index = (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
            if pod_index is not None and pod_index != index:
                continue
        status = pod.get("status") or {}
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") != container:
                continue
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if not term:
                continue
            t = Termination(
                int(term.get("exitCode", -1)),
                str(term.get("message") or ""),
                str(term.get("reason") or ""),
                str(meta.get("name", "")),
                container,
                memory_limit(pod, container),
            )
            rank = 1 if status.get("phase") == "Succeeded" else 0
            candidates.append((rank, str(term.get("finishedAt") or ""), t))
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c[0], c[1]))
    return candidates[-1][2]
