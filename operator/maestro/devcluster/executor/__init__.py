"""The local executor: runs the pods bound to the local node as real processes on this machine, so
`make dev` exercises the whole lifecycle for real while kwok keeps simulating the GPU nodes.

    maestro dev executor --kubeconfig <cluster state>/kubeconfig --state-dir D [--node maestro-local]

Needs root (network and mount namespaces). Interfaces the operator and tests rely on:

- Node `maestro-local` (`--node`), not kwok-annotated, labels `kubernetes.io/hostname=<node>` and
  `executor.llmops.dev/local=true`, taint `executor.llmops.dev/local=true:NoSchedule`; allocatable
  from this machine (`--cpu`/`--memory` override), `pods: 110`, no GPUs; Ready via status heartbeats
  and a Lease in `kube-node-lease`. Pods land there with a toleration for that taint and a
  nodeSelector on either label; label them `executor.llmops.dev/local` too, so kwok leaves them alone.
- Networking: each pod gets a network namespace on a private /24 (first free `10.250.X.0/24`, kept
  in `D/executor.json` with `hostIP`), behind bridge `mst<id>` holding `.1`. The host reaches any
  `podIP:port` directly; containers of one pod share `127.0.0.1`; pods reach the host at `hostIP`
  (`--host-alias NAME` resolves NAME to it in every pod). No cluster DNS, no Service proxying:
  names fail fast.
- Containers: processes in their own mount (and UTS) namespace with a root mirroring the host's,
  volumes at their `mountPath`s, `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` and the
  termination-message file mounted as in a container. Images map to local programs (`images.py`;
  `python` is the executor's own interpreter). Runs as root: `securityContext`, resource limits
  (no cgroups: this process's cgroup is not the executor's to split) and `readinessGates` are
  not enforced.
- Files in `D`: `pods/<uid>/` (state, emptyDirs, configMap/secret files), `volumes/<ns>/<claim>/`
  (PVCs, kept across pods), `logs/<ns>_<pod>_<container>.log` (+ `.previous.log`). `kubectl logs`
  works through the kubelet log endpoint (`logserver.py`); exec/attach/port-forward do not.
- Lifecycle: SIGTERM stops every pod (marked Failed, reason Terminated, as on node shutdown) and
  reports the node NotReady. After a crash, a restarted executor adopts running containers and
  cleans up what the API no longer has; `--cleanup` removes leftovers without a cluster.

Modules: `agent` (node, watches, recovery), `pods` (one pod's state machine), `launch` (container
sandbox + supervisor), `process`, `netns`, `volumes`, `fields` (env/downward API), `probes`,
`status`, `events`, `images`, `logserver`, `api` (API client).
"""

from __future__ import annotations

from maestro.devcluster.executor.agent import LOCAL_LABEL, TAINT, Agent, Options

__all__ = ["LOCAL_LABEL", "TAINT", "Agent", "Options"]
