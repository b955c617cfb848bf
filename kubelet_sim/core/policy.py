"""Pull-policy defaulting and the pure "must pull?" decision.

Models three upstream places:

- API defaulting, ``pkg/apis/core/v1/defaults.go`` (``SetDefaults_Container``): an empty
  ``imagePullPolicy`` becomes ``Always`` when the image's tag is ``latest`` (including the
  implied ``latest`` of an untagged, undigested image, and ``:latest@digest``), otherwise
  ``IfNotPresent`` (digest only, any other tag, or an image that does not parse);
- the AlwaysPullImages admission plugin, ``plugin/pkg/admission/alwayspullimages/admission.go``,
  which forces ``Always`` on every container;
- the kubelet's ``shouldPullImage`` and ``imagePullPrecheck``
  (``pkg/kubelet/images/image_manager.go``).
"""

from __future__ import annotations

from enum import StrEnum

from kubelet_sim.core.reference import DEFAULT_TAG, parse_image_name
from kubelet_sim.errors import ConfigError, InvalidImageNameError

__all__ = [
    "PullPolicy",
    "apply_always_pull_images",
    "default_pull_policy",
    "effective_pull_policy",
    "needs_presence_check",
    "parse_pull_policy",
    "should_pull_image",
    "validate_always_pull_images",
]


class PullPolicy(StrEnum):
    """``v1.PullPolicy``: the container's ``imagePullPolicy``."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


_SUPPORTED = ", ".join(f'"{p.value}"' for p in PullPolicy)


def parse_pull_policy(value: str, *, field: str = "imagePullPolicy") -> PullPolicy:
    """Parse a policy name exactly as the API validates it (case-sensitive).

    Raises:
        ConfigError: names the field and the unsupported value, and lists the supported ones,
            in the wording of the API's ``NotSupported`` validation error.
    """
    try:
        return PullPolicy(value)
    except ValueError:
        raise ConfigError(
            None, field, f'Unsupported value: "{value}": supported values: {_SUPPORTED}'
        ) from None


def default_pull_policy(image: str) -> PullPolicy:
    """The policy the API server gives a container created without one.

    ``Always`` when the tag is ``latest`` (also implied when there is neither tag nor digest),
    else ``IfNotPresent``. A parse error is ignored upstream ("assume it has been validated
    elsewhere") and leaves the tag empty, so it yields ``IfNotPresent``.
    """
    try:
        _, tag, _ = parse_image_name(image)
    except InvalidImageNameError:
        tag = ""
    return PullPolicy.ALWAYS if tag == DEFAULT_TAG else PullPolicy.IF_NOT_PRESENT


def apply_always_pull_images(policy: PullPolicy | None = None) -> PullPolicy:
    """AlwaysPullImages ``Admit``: every container's policy becomes ``Always``."""
    del policy  # overridden whatever it was, defaulted or not
    return PullPolicy.ALWAYS


def validate_always_pull_images(policy: PullPolicy, *, field: str = "imagePullPolicy") -> None:
    """AlwaysPullImages ``Validate``: reject a policy other than ``Always``.

    Raises:
        ConfigError: ``Unsupported value`` naming the field, as the plugin's Forbidden error.
    """
    if policy is not PullPolicy.ALWAYS:
        raise ConfigError(
            None, field, f'Unsupported value: "{policy.value}": supported values: "Always"'
        )


def effective_pull_policy(
    image: str,
    policy: PullPolicy | str | None = None,
    *,
    always_pull_images: bool = False,
) -> PullPolicy:
    """The policy a container ends up with: the given one (or the API default), then admission.

    Args:
        image: the container's image string, as written in the pod spec.
        policy: the pod spec's ``imagePullPolicy``; ``None`` or ``""`` means unset.
        always_pull_images: whether the AlwaysPullImages admission plugin is enabled.

    Raises:
        ConfigError: ``policy`` is a string that is not a supported policy.
    """
    if policy is None or policy == "":
        resolved = default_pull_policy(image)
    elif isinstance(policy, PullPolicy):
        resolved = policy
    else:
        resolved = parse_pull_policy(policy)
    return apply_always_pull_images(resolved) if always_pull_images else resolved


def needs_presence_check(policy: PullPolicy) -> bool:
    """Whether ``imagePullPrecheck`` asks the runtime if the image is present.

    ``Always`` skips the check; ``IfNotPresent`` and ``Never`` ask (``ImageStatus``).
    """
    return policy is not PullPolicy.ALWAYS


def should_pull_image(policy: PullPolicy, present: bool) -> bool:
    """The kubelet's ``shouldPullImage``: pull on ``Always``, or on ``IfNotPresent`` if absent.

    ``Never`` never pulls; with the image absent the caller reports ``ErrImageNeverPull``.
    """
    if policy is _NEVER:
        return False
    return policy is _ALWAYS or (policy is _IF_NOT_PRESENT and not present)


# Asked on every decision: an enum member read through its class costs ~90 ns on Python 3.11,
# a module global ~10.
_ALWAYS, _IF_NOT_PRESENT, _NEVER = PullPolicy.ALWAYS, PullPolicy.IF_NOT_PRESENT, PullPolicy.NEVER
