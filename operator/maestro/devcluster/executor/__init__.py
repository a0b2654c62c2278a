"""The local executor: runs the pods bound to the local node as real processes on this machine.

`maestro dev executor --kubeconfig K --state-dir D` registers node `maestro-local` (label and
NoSchedule taint `executor.llmops.dev/local=true`) and plays kubelet for it: each pod gets a
network namespace on a private /24 reachable from the host, each container runs as a process in
its own mount namespace with the pod's volumes at their `mountPath`s, and pod status (phase,
probes, restarts, termination messages) is written back. kwok keeps simulating every other node.
See `images.py` for how images map to local programs, `launch.py` for the container sandbox.
"""

from __future__ import annotations

from maestro.devcluster.executor.agent import LOCAL_LABEL, TAINT, Agent, Options

__all__ = ["LOCAL_LABEL", "TAINT", "Agent", "Options"]
