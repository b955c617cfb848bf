"""Pull policy: API defaulting (kubelet-images.md §2), AlwaysPullImages, shouldPullImage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubelet_sim.core.policy import (
    PullPolicy,
    apply_always_pull_images,
    default_pull_policy,
    effective_pull_policy,
    needs_presence_check,
    parse_pull_policy,
    should_pull_image,
    validate_always_pull_images,
)
from kubelet_sim.core.reference import parse_image_name
from kubelet_sim.errors import ConfigError, InvalidImageNameError

D256 = "sha256:" + "f" * 64
ALWAYS, IF_NOT_PRESENT, NEVER = PullPolicy.ALWAYS, PullPolicy.IF_NOT_PRESENT, PullPolicy.NEVER


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("busybox", ALWAYS, id="no-tag-no-digest-implies-latest"),
        pytest.param("busybox:latest", ALWAYS, id="latest"),
        pytest.param("docker.io/library/busybox:latest", ALWAYS, id="full-latest"),
        pytest.param("busybox:1.36", IF_NOT_PRESENT, id="other-tag"),
        pytest.param("busybox@" + D256, IF_NOT_PRESENT, id="digest-only"),
        pytest.param("busybox:latest@" + D256, ALWAYS, id="latest-plus-digest"),
        pytest.param("busybox:1.36@" + D256, IF_NOT_PRESENT, id="tag-plus-digest"),
        pytest.param("busybox:LATEST", IF_NOT_PRESENT, id="tag-is-case-sensitive"),
        pytest.param("localhost:5000", IF_NOT_PRESENT, id="bare-host-port-is-a-tag"),
        pytest.param("localhost:5000/app", ALWAYS, id="registry-no-tag"),
        pytest.param("[::1]:5000/app", ALWAYS, id="ipv6-no-tag"),
        pytest.param("", IF_NOT_PRESENT, id="empty-unparsable"),
        pytest.param("Bad Name", IF_NOT_PRESENT, id="unparsable"),
        pytest.param("busybox:", IF_NOT_PRESENT, id="empty-tag-unparsable"),
    ],
)
def test_default_pull_policy(image: str, expected: PullPolicy) -> None:
    assert default_pull_policy(image) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Always", ALWAYS, id="always"),
        pytest.param("IfNotPresent", IF_NOT_PRESENT, id="if-not-present"),
        pytest.param("Never", NEVER, id="never"),
    ],
)
def test_parse_pull_policy(value: str, expected: PullPolicy) -> None:
    assert parse_pull_policy(value) is expected
    assert str(expected) == value


@pytest.mark.parametrize("value", ["always", "ALWAYS", "", "IfNotPresent ", "Sometimes"])
def test_parse_pull_policy_rejects_and_names_the_value(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pull_policy(value, field="spec.containers[0].imagePullPolicy")
    assert info.value.field == "spec.containers[0].imagePullPolicy"
    assert f'Unsupported value: "{value}"' in str(info.value)
    assert '"Always", "IfNotPresent", "Never"' in str(info.value)


@pytest.mark.parametrize("policy", [None, *PullPolicy])
def test_always_pull_images_admit_forces_always(policy: PullPolicy | None) -> None:
    assert apply_always_pull_images(policy) is ALWAYS


@pytest.mark.parametrize(
    ("policy", "ok"),
    [
        pytest.param(ALWAYS, True, id="always"),
        pytest.param(IF_NOT_PRESENT, False, id="if-not-present"),
        pytest.param(NEVER, False, id="never"),
    ],
)
def test_always_pull_images_validate(policy: PullPolicy, ok: bool) -> None:
    if ok:
        validate_always_pull_images(policy)
    else:
        with pytest.raises(ConfigError, match=f'Unsupported value: "{policy}"'):
            validate_always_pull_images(policy)


@pytest.mark.parametrize(
    ("image", "policy", "always_pull_images", "expected"),
    [
        pytest.param("busybox", None, False, ALWAYS, id="unset-defaults-latest"),
        pytest.param("busybox:1", None, False, IF_NOT_PRESENT, id="unset-defaults-tag"),
        pytest.param("busybox:1", "", False, IF_NOT_PRESENT, id="empty-string-is-unset"),
        pytest.param("busybox", NEVER, False, NEVER, id="explicit-wins-over-default"),
        pytest.param("busybox", "IfNotPresent", False, IF_NOT_PRESENT, id="explicit-string"),
        pytest.param("busybox:1", NEVER, True, ALWAYS, id="admission-overrides-explicit"),
        pytest.param("busybox:1", None, True, ALWAYS, id="admission-overrides-default"),
    ],
)
def test_effective_pull_policy(
    image: str, policy: PullPolicy | str | None, always_pull_images: bool, expected: PullPolicy
) -> None:
    assert effective_pull_policy(image, policy, always_pull_images=always_pull_images) is expected


def test_effective_pull_policy_rejects_unknown_string() -> None:
    with pytest.raises(ConfigError, match='"Sometimes"'):
        effective_pull_policy("busybox", "Sometimes")


@pytest.mark.parametrize(
    ("policy", "present", "pull"),
    [
        pytest.param(ALWAYS, True, True, id="always-present"),
        pytest.param(ALWAYS, False, True, id="always-absent"),
        pytest.param(IF_NOT_PRESENT, True, False, id="if-not-present-present"),
        pytest.param(IF_NOT_PRESENT, False, True, id="if-not-present-absent"),
        pytest.param(NEVER, True, False, id="never-present"),
        pytest.param(NEVER, False, False, id="never-absent"),
    ],
)
def test_should_pull_image(policy: PullPolicy, present: bool, pull: bool) -> None:
    assert should_pull_image(policy, present) is pull


@pytest.mark.parametrize(
    ("policy", "check"),
    [
        pytest.param(ALWAYS, False, id="always-skips-image-status"),
        pytest.param(IF_NOT_PRESENT, True, id="if-not-present-asks"),
        pytest.param(NEVER, True, id="never-asks"),
    ],
)
def test_needs_presence_check(policy: PullPolicy, check: bool) -> None:
    assert needs_presence_check(policy) is check


@given(st.text(max_size=30))
def test_property_default_is_always_exactly_when_the_kubelet_tag_is_latest(image: str) -> None:
    try:
        tag = parse_image_name(image)[1]
    except InvalidImageNameError:  # upstream ignores the error: the tag stays empty
        tag = ""
    assert (default_pull_policy(image) is ALWAYS) == (tag == "latest")
