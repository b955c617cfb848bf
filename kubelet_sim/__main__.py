"""``python -m kubelet_sim`` runs the command line."""

from kubelet_sim.cli.main import run

run()
