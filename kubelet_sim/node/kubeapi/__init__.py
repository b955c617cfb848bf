"""The part of the Kubernetes API kubectl needs, for the objects the node knows."""

from kubelet_sim.node.kubeapi.server import KubeAPI, KubeNode

__all__ = ["KubeAPI", "KubeNode"]
