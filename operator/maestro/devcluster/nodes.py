"""The simulated (kwok) nodes of the dev cluster: GPU nodes shaped like real NVIDIA nodes, and a CPU node.

GPU nodes carry the `nvidia.com/gpu` extended resource, the GPU-feature-discovery labels and the
`nvidia.com/gpu:NoSchedule` taint that GPU clusters use, so scheduling tests exercise the same
tolerations and requests a production cluster needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KWOK_ANNOTATION = {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
#: Next to a real node, the simulated CPU node takes only pods that ask for it (toleration +
#: `type: kwok` selector): CPU work runs for real, GPU work is simulated.
SIMULATED_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: str = "32"
    memory: str = "256Gi"
    gpus: int = 0
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    labels: dict[str, str] = field(default_factory=dict)

    def manifest(self, simulated_only: bool = False) -> dict[str, Any]:
        """The Node object; `simulated_only` taints a CPU node so that only pods tolerating
        SIMULATED_TAINT land there (a real node is next to it)."""
        labels = {
            "type": "kwok",
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "kwok-gpu" if self.gpus else "kwok-cpu",
            **self.labels,
        }
        resources: dict[str, str] = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": "110",
            "ephemeral-storage": "1Ti",
        }
        spec: dict[str, Any] = {}
        if self.gpus:
            labels |= {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": self.gpu_product,
                "nvidia.com/gpu.count": str(self.gpus),
                "nvidia.com/gpu.memory": "81559",
            }
            resources["nvidia.com/gpu"] = str(self.gpus)
            spec["taints"] = [GPU_TAINT]
        elif simulated_only:
            spec["taints"] = [SIMULATED_TAINT]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": dict(KWOK_ANNOTATION)},
            "spec": spec,
            "status": {"allocatable": dict(resources), "capacity": dict(resources)},
        }


DEFAULT_NODES: tuple[NodeSpec, ...] = (
    NodeSpec("kwok-gpu-0", cpu="96", memory="1Ti", gpus=8),
    NodeSpec("kwok-gpu-1", cpu="96", memory="1Ti", gpus=8),
    NodeSpec("kwok-cpu-0", cpu="32", memory="128Gi"),
)
