"""The local Kubernetes control plane for tests and `make dev` (real components, kwok nodes)."""

from maestro.devcluster.cluster import ClusterError, DevCluster

__all__ = ["ClusterError", "DevCluster"]
