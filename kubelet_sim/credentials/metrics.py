"""Prometheus series of credential providers and KEP-2535 checks, under the kubelet's names.

- ``kubelet_credential_provider_plugin_errors_total{plugin_name}`` and
  ``kubelet_credential_provider_plugin_duration{plugin_name}`` (``DefBuckets``), and
  ``kubelet_credential_provider_config_info{hash}`` (``pkg/credentialprovider/plugin/metrics.go``);
- ``kubelet_imagemanager_image_mustpull_checks_total{result}``
  (``pkg/kubelet/images/pullmanager/metrics.go``).

Registered into an injected registry as :mod:`kubelet_sim.telemetry.series` (as
:class:`kubelet_sim.telemetry.metrics.PullMetrics` is), without ``*_created`` samples. Label
values are plugin names from the config and the four fixed check results; no image or credential
ever becomes a label.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubelet_sim.telemetry.series import Counter, Gauge, Histogram, SeriesCollector

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["CredentialMetrics"]

_DEF_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CredentialMetrics:
    """Plugin errors and durations, the config hash, and must-pull check results.

    Raises:
        ValueError: at construction, when ``registry`` already holds these series.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        alpha = "[ALPHA] "
        self._errors = Counter(
            "kubelet_credential_provider_plugin_errors_total",
            alpha + "Number of errors from credential provider plugin",
            ["plugin_name"],
        )
        self._duration = Histogram(
            "kubelet_credential_provider_plugin_duration",
            alpha + "Duration of execution in seconds for credential provider plugin",
            ["plugin_name"],
            buckets=_DEF_BUCKETS,
        )
        self._config_info = Gauge(
            "kubelet_credential_provider_config_info",
            alpha + "Information about the last applied credential provider configuration "
            "with hash as label",
            ["hash"],
        )
        self._mustpull = Counter(
            "kubelet_imagemanager_image_mustpull_checks_total",
            alpha + "Counter for how many times kubelet checked whether credentials need to be "
            "re-verified to access an image",
            ["result"],
        )
        self._registry = registry
        self._collector = SeriesCollector(
            (self._errors, self._duration, self._config_info, self._mustpull)
        )
        self._collector.register(registry)

    def unregister(self) -> None:
        self._registry.unregister(self._collector)

    def plugin_error(self, plugin: str) -> None:
        self._errors.labels(plugin).inc()

    def plugin_duration(self, plugin: str, seconds: float) -> None:
        self._duration.labels(plugin).observe(max(seconds, 0.0))

    def config_info(self, config_hash: str) -> None:
        self._config_info.labels(config_hash).set(1)

    def must_pull_check(self, result: str) -> None:
        self._mustpull.labels(result).value += 1.0  # once per cache-hit decision
