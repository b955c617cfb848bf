"""Pod admission and the engine's view of a pod.

The admission plugins a pod passes when it is applied, in kube-apiserver's order:

- ServiceAccount (``plugin/pkg/admission/serviceaccount/admission.go``): on create, a pod without
  ``imagePullSecrets`` gets its ServiceAccount's (``default`` unless named); a named account that
  does not exist refuses the pod. Updates keep the secrets the pod was created with, so a later
  ``kubectl patch serviceaccount`` changes only pods created after it.
- RuntimeClass (``plugin/pkg/admission/runtimeclass/admission.go``), on by default: on create, a
  pod naming a RuntimeClass that does not exist is refused (``pod rejected: RuntimeClass "x" not
  found``); the class's ``overhead.podFixed`` becomes ``spec.overhead`` (a pod that sets another
  overhead is refused) and its ``scheduling.nodeSelector`` is merged into ``spec.nodeSelector``
  (a conflicting key is refused).
- AlwaysPullImages (``plugin/pkg/admission/alwayspullimages/admission.go``), optional
  (``--enable-admission-plugins AlwaysPullImages``): every init, app and ephemeral container gets
  ``imagePullPolicy: Always``, then ``Validate`` refuses any other policy; on every update too
  (upstream skips updates without a new image, whose policy cannot change there; here it could).

:func:`pod_spec` turns an admitted pod into the :class:`~kubelet_sim.core.pods.PodSpec` the
engine runs: one :class:`~kubelet_sim.core.pods.PullRequest` per container, init first, with the
runtime handler the pod's RuntimeClass names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Protocol

from kubelet_sim.core.pods import PodRef, PodSpec, PullRequest, RestartPolicy
from kubelet_sim.core.policy import apply_always_pull_images, validate_always_pull_images
from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.cluster import RuntimeClass
from kubelet_sim.k8s.objects import (
    DEFAULT_SERVICE_ACCOUNT,
    Container,
    Pod,
    ServiceAccount,
    stable_uid,
)

__all__ = [
    "ADMISSION_PLUGINS",
    "ALWAYS_PULL_IMAGES",
    "Admission",
    "AdmissionObjects",
    "ServiceAccountGetter",
    "parse_admission_plugins",
    "pod_spec",
]

ALWAYS_PULL_IMAGES = "AlwaysPullImages"
ADMISSION_PLUGINS = ("ServiceAccount", "RuntimeClass", ALWAYS_PULL_IMAGES)
"""The plugins kubelet-sim models; ServiceAccount and RuntimeClass are on by default, as in
kube-apiserver."""


class ServiceAccountGetter(Protocol):
    """Where admission finds ServiceAccounts (:class:`~kubelet_sim.k8s.store.ObjectStore`)."""

    def get_service_account(self, namespace: str, name: str) -> ServiceAccount | None: ...


class AdmissionObjects(ServiceAccountGetter, Protocol):
    """Where admission finds ServiceAccounts and RuntimeClasses (the object store)."""

    def get_runtime_class(self, name: str) -> RuntimeClass | None: ...


def parse_admission_plugins(values: Iterable[str], *, field: str) -> frozenset[str]:
    """``--enable-admission-plugins`` values (comma-separated, repeatable), checked by name.

    Raises:
        ConfigError: naming the field and the unknown plugin.
    """
    names: set[str] = set()
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in ADMISSION_PLUGINS:
                raise ConfigError(
                    None,
                    field,
                    f'unknown admission plugin "{name}"; kubelet-sim models '
                    + ", ".join(ADMISSION_PLUGINS),
                )
            names.add(name)
    return frozenset(names)


def _forbidden(pod: Pod, path: str, message: str) -> ConfigError:
    return ConfigError(
        f"Pod {pod.namespace}/{pod.name}", path, f'pods "{pod.name}" is forbidden: {message}'
    )


@dataclass(frozen=True, slots=True)
class Admission:
    """The admission chain a pod passes when it is applied."""

    always_pull_images: bool = False
    runtime_class: bool = True

    @classmethod
    def from_plugins(cls, plugins: Iterable[str]) -> Admission:
        """The chain with ``--enable-admission-plugins`` turned on (the defaults stay on)."""
        enabled = set(plugins)
        return cls(always_pull_images=ALWAYS_PULL_IMAGES in enabled)

    def admit(self, pod: Pod, objects: ServiceAccountGetter, old: Pod | None = None) -> Pod:
        """The pod as stored after admission; ``old`` is the stored pod on an update.

        Raises:
            ConfigError: the pod names a ServiceAccount or RuntimeClass that does not exist (on
                create), its overhead or node selector conflicts with its RuntimeClass, or
                AlwaysPullImages finds a policy other than ``Always``.
        """
        if old is None:
            account = objects.get_service_account(pod.namespace, pod.service_account_name)
            if account is None:
                raise ConfigError(
                    f"Pod {pod.namespace}/{pod.name}",
                    "spec.serviceAccountName",
                    f'pods "{pod.name}" is forbidden: service account '
                    f"{pod.namespace}/{pod.service_account_name} was not found, "
                    "retry after the service account is created",
                )
            if not pod.image_pull_secrets:
                pod = replace(pod, image_pull_secrets=account.image_pull_secrets)
            if self.runtime_class and pod.runtime_class_name:
                pod = _runtime_class(pod, objects)
        else:
            if not pod.image_pull_secrets:
                pod = replace(pod, image_pull_secrets=old.image_pull_secrets)
            # RuntimeClass admits creates only; an update keeps what the create set.
            pod = replace(pod, overhead=old.overhead, node_selector=old.node_selector)
        return self.always_pull(pod)

    def always_pull(self, pod: Pod) -> Pod:
        """AlwaysPullImages alone (``Admit`` then ``Validate``), when it is enabled; the node
        applies it to static pods, which pass no other admission."""
        # Upstream skips updates that bring no new image (isUpdateWithNoNewImages) because a pod's
        # policy cannot change on update there; here a changed spec replaces the pod, so every
        # version is admitted, or an update could bring a Never back.
        if not self.always_pull_images:
            return pod
        pod = replace(
            pod,
            init_containers=tuple(_always(c) for c in pod.init_containers),
            containers=tuple(_always(c) for c in pod.containers),
            ephemeral_containers=tuple(_always(c) for c in pod.ephemeral_containers),
        )
        for path, container in _with_paths(pod):
            try:
                validate_always_pull_images(container.image_pull_policy)
            except ConfigError as exc:
                raise _forbidden(pod, f"{path}.imagePullPolicy", exc.message) from None
        return pod


def _runtime_class(pod: Pod, objects: ServiceAccountGetter) -> Pod:
    name = pod.runtime_class_name or ""
    getter = getattr(objects, "get_runtime_class", None)
    cls = getter(name) if getter is not None else None
    if not isinstance(cls, RuntimeClass):
        raise _forbidden(
            pod, "spec.runtimeClassName", f'pod rejected: RuntimeClass "{name}" not found'
        )
    overhead = dict(cls.overhead_pod_fixed)
    if pod.overhead and dict(pod.overhead) != overhead:
        raise _forbidden(
            pod,
            "spec.overhead",
            "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead",
        )
    selector = dict(pod.node_selector)
    for key, value in cls.node_selector.items():
        if key in selector and selector[key] != value:
            raise _forbidden(
                pod,
                "spec.nodeSelector",
                f"conflict: runtimeClass.scheduling.nodeSelector[{key}] = {value}; "
                f"pod.spec.nodeSelector[{key}] = {selector[key]}",
            )
        selector[key] = value
    return replace(
        pod, overhead=MappingProxyType(overhead), node_selector=MappingProxyType(selector)
    )


def _with_paths(pod: Pod) -> Iterable[tuple[str, Container]]:
    """``VisitContainersWithPath``: init, app, then ephemeral containers with their field paths."""
    for section, containers in (
        ("initContainers", pod.init_containers),
        ("containers", pod.containers),
        ("ephemeralContainers", pod.ephemeral_containers),
    ):
        for index, container in enumerate(containers):
            yield f"spec.{section}[{index}]", container


def _always(container: Container) -> Container:
    return replace(
        container, image_pull_policy=apply_always_pull_images(container.image_pull_policy)
    )


def implicit_service_account(namespace: str, name: str) -> ServiceAccount | None:
    """The ``default`` ServiceAccount every namespace has (the ServiceAccount controller's)."""
    if name != DEFAULT_SERVICE_ACCOUNT:
        return None
    return ServiceAccount(namespace, name, stable_uid("ServiceAccount", namespace, name))


def pod_spec(pod: Pod, *, static: bool = False, runtime_handler: str | None = None) -> PodSpec:
    """The engine's view of an (admitted) pod: its reference, one pull request per container,
    how its containers restart and stop, and the pod itself for the container runtime.

    Empty pull-secret names are dropped, as ``getPullSecretsForPod`` skips them silently.
    ``static`` marks a pod from the node's ``staticPodPath`` (see :attr:`PodRef.static`).
    ``runtime_handler`` is the handler the pod's RuntimeClass names (the kubelet's
    ``LookupRuntimeHandler``); None takes the class name itself (no class objects at hand).
    """
    ref = PodRef(pod.namespace, pod.name, pod.uid, static=static)
    secrets = tuple(name for name in pod.image_pull_secrets if name)
    handler = runtime_handler if runtime_handler is not None else pod.runtime_class_name or ""

    def request(container: Container) -> PullRequest:
        return PullRequest(
            pod=ref,
            container=container.name,
            image=container.image,
            policy=container.image_pull_policy,
            kind=container.kind,
            pull_secrets=secrets,
            runtime_handler=handler,
            service_account=pod.service_account_name,
        )

    return PodSpec(
        ref,
        init_containers=tuple(request(c) for c in pod.init_containers),
        containers=tuple(request(c) for c in pod.containers),
        restart_policy=RestartPolicy(pod.restart_policy),
        grace_period=float(pod.termination_grace_period_seconds),
        source=pod,
    )
