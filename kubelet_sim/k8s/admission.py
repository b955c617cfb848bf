"""Pod admission and the engine's view of a pod.

Two admission plugins touch image pulls:

- ServiceAccount (``plugin/pkg/admission/serviceaccount/admission.go``): on create, a pod without
  ``imagePullSecrets`` gets its ServiceAccount's (``default`` unless named); a named account that
  does not exist refuses the pod. Updates keep the secrets the pod was created with, so a later
  ``kubectl patch serviceaccount`` changes only pods created after it.
- AlwaysPullImages (``plugin/pkg/admission/alwayspullimages/admission.go``), optional: every init
  and app container gets ``imagePullPolicy: Always``.

:func:`pod_spec` turns an admitted pod into the :class:`~kubelet_sim.engine.workers.PodSpec` the
pull engine runs: one :class:`~kubelet_sim.core.pods.PullRequest` per container, init first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from kubelet_sim.core.pods import PodRef, PodSpec, PullRequest
from kubelet_sim.core.policy import apply_always_pull_images
from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.objects import (
    DEFAULT_SERVICE_ACCOUNT,
    Container,
    Pod,
    ServiceAccount,
    stable_uid,
)

__all__ = ["Admission", "ServiceAccountGetter", "pod_spec"]


class ServiceAccountGetter(Protocol):
    """Where admission finds ServiceAccounts (:class:`~kubelet_sim.k8s.store.ObjectStore`)."""

    def get_service_account(self, namespace: str, name: str) -> ServiceAccount | None: ...


@dataclass(frozen=True, slots=True)
class Admission:
    """The admission chain a pod passes when it is applied."""

    always_pull_images: bool = False

    def admit(self, pod: Pod, accounts: ServiceAccountGetter, old: Pod | None = None) -> Pod:
        """The pod as stored after admission; ``old`` is the stored pod on an update.

        Raises:
            ConfigError: the pod names a ServiceAccount that does not exist (on create).
        """
        if old is None:
            account = accounts.get_service_account(pod.namespace, pod.service_account_name)
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
        elif not pod.image_pull_secrets:
            pod = replace(pod, image_pull_secrets=old.image_pull_secrets)
        if self.always_pull_images:
            pod = replace(
                pod,
                init_containers=tuple(_always(c) for c in pod.init_containers),
                containers=tuple(_always(c) for c in pod.containers),
            )
        return pod


def _always(container: Container) -> Container:
    return replace(
        container, image_pull_policy=apply_always_pull_images(container.image_pull_policy)
    )


def implicit_service_account(namespace: str, name: str) -> ServiceAccount | None:
    """The ``default`` ServiceAccount every namespace has (the ServiceAccount controller's)."""
    if name != DEFAULT_SERVICE_ACCOUNT:
        return None
    return ServiceAccount(namespace, name, stable_uid("ServiceAccount", namespace, name))


def pod_spec(pod: Pod, *, static: bool = False) -> PodSpec:
    """The engine's view of an (admitted) pod: its reference and one pull request per container.

    Empty pull-secret names are dropped, as ``getPullSecretsForPod`` skips them silently.
    ``static`` marks a pod from the node's ``staticPodPath`` (see :attr:`PodRef.static`).
    """
    ref = PodRef(pod.namespace, pod.name, pod.uid, static=static)
    secrets = tuple(name for name in pod.image_pull_secrets if name)

    def request(container: Container) -> PullRequest:
        return PullRequest(
            pod=ref,
            container=container.name,
            image=container.image,
            policy=container.image_pull_policy,
            kind=container.kind,
            pull_secrets=secrets,
            runtime_handler=pod.runtime_class_name or "",
            service_account=pod.service_account_name,
        )

    return PodSpec(
        ref,
        init_containers=tuple(request(c) for c in pod.init_containers),
        containers=tuple(request(c) for c in pod.containers),
    )
