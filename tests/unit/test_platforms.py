"""Platform parsing, normalisation, matching and manifest selection (containerd vectors)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubelet_sim.core.platforms import (
    MatchComparer,
    Platform,
    all_platforms,
    default_matcher,
    host_platform,
    node_matcher,
    normalize,
    only,
    only_strict,
    ordered,
    parse_platform,
    select_manifest,
)
from kubelet_sim.errors import NoMatchingPlatformError, PlatformError

HOST = host_platform()
HOST_OS = HOST.os
HOST_ARCH = HOST.architecture
# platforms_test.go: the single-OS specifier carries the CPU variant only for arm other than v7.
HOST_VARIANT = HOST.variant if HOST.architecture == "arm" and HOST.variant != "v7" else ""


def P(
    os: str, arch: str, variant: str = "", version: str = "", features: tuple[str, ...] = ()
) -> Platform:
    return Platform(os, arch, variant, version, features)


# --- parse (platforms_test.go: TestParseSelector) -------------------------------------------

PARSE_CASES = [
    ("linux/arm64", P("linux", "arm64")),
    ("linux/arm64/v8", P("linux", "arm64", "v8")),
    ("linux/arm", P("linux", "arm")),
    ("linux/arm/v6", P("linux", "arm", "v6")),
    ("linux/arm/v7", P("linux", "arm", "v7")),
    ("arm", P(HOST_OS, "arm")),
    ("armel", P(HOST_OS, "arm", "v6")),
    ("armhf", P(HOST_OS, "arm")),
    ("Aarch64", P(HOST_OS, "arm64")),
    ("x86_64", P(HOST_OS, "amd64")),
    ("Linux/x86_64", P("linux", "amd64")),
    ("i386", P(HOST_OS, "386")),
    ("linux", P("linux", HOST_ARCH, HOST_VARIANT)),
    ("s390x", P(HOST_OS, "s390x")),
    ("linux/s390x", P("linux", "s390x")),
    ("macOS", P("darwin", HOST_ARCH, HOST_VARIANT)),
    ("darwin/arm64", P("darwin", "arm64")),
    ("windows/amd64", P("windows", "amd64")),
    ("windows", P("windows", HOST_ARCH, HOST_VARIANT)),
    ("windows()", P("windows", HOST_ARCH, HOST_VARIANT)),
    ("windows(10.0.17763)", P("windows", HOST_ARCH, HOST_VARIANT, "10.0.17763")),
    (
        "windows(10.0.17763+win32k)",
        P("windows", HOST_ARCH, HOST_VARIANT, "10.0.17763", ("win32k",)),
    ),
    ("linux(+gpu)", P("linux", HOST_ARCH, HOST_VARIANT, "", ("gpu",))),
    ("linux(+gpu+simd)", P("linux", HOST_ARCH, HOST_VARIANT, "", ("gpu", "simd"))),
    ("linux(+unsorted+erofs)", P("linux", HOST_ARCH, HOST_VARIANT, "", ("unsorted", "erofs"))),
    (
        "windows(10.0.17763%2Bbuild.42)",
        P("windows", HOST_ARCH, HOST_VARIANT, "10.0.17763+build.42"),
    ),
    (
        "windows(10.0.17763%2Bbuild.42+win32k)",
        P("windows", HOST_ARCH, HOST_VARIANT, "10.0.17763+build.42", ("win32k",)),
    ),
    ("windows(50%25done)", P("windows", HOST_ARCH, HOST_VARIANT, "50%done")),
    ("windows(10.0.17763)/amd64", P("windows", "amd64", "", "10.0.17763")),
    ("linux/amd64/v1", P("linux", "amd64")),
    ("linux/amd64/V3", P("linux", "amd64", "v3")),
    ("linux/arm64/v8.0", P("linux", "arm64", "v8")),
    ("linux/arm64/v9.0", P("linux", "arm64", "v9")),
    ("linux/aarch64/9", P("linux", "arm64", "v9")),
    ("linux/arm/7", P("linux", "arm", "v7")),
    ("linux/arm/5", P("linux", "arm", "v5")),
]


@pytest.mark.parametrize(("spec", "expected"), [pytest.param(s, e, id=s) for s, e in PARSE_CASES])
def test_parse_platform(spec: str, expected: Platform) -> None:
    parsed = parse_platform(spec)
    assert parsed == expected
    assert only_strict(parsed).match(expected)


@pytest.mark.parametrize(
    ("spec", "candidate"),
    [
        pytest.param("linux/arm64", P("linux", "aarch64"), id="arm64~aarch64"),
        pytest.param("linux/arm64", P("linux", "aarch64", "v8"), id="arm64~aarch64/v8"),
        pytest.param("linux/arm64", P("linux", "arm64", "v8"), id="arm64~arm64/v8"),
        pytest.param("linux/arm64/v8", P("linux", "aarch64"), id="arm64/v8~aarch64"),
        pytest.param("linux/arm64/v8", P("linux", "arm64"), id="arm64/v8~arm64"),
        pytest.param("linux/arm", P("linux", "arm", "v7"), id="arm~arm/v7"),
        pytest.param("linux/arm", P("linux", "armhf"), id="arm~armhf"),
        pytest.param("linux/arm", P("linux", "arm", "7"), id="arm~arm/7"),
        pytest.param("linux/arm/v6", P("linux", "armel"), id="arm/v6~armel"),
        pytest.param("linux/arm/v7", P("linux", "arm"), id="arm/v7~arm"),
        pytest.param("linux/arm/v7", P("linux", "armhf"), id="arm/v7~armhf"),
        pytest.param("linux/amd64", P("linux", "x86_64", "v1"), id="amd64~x86_64/v1"),
        pytest.param("linux/386", P("linux", "i386"), id="386~i386"),
        pytest.param("darwin/arm64", P("macOS", "arm64"), id="darwin~macOS"),
    ],
)
def test_parsed_matcher_accepts_aliases(spec: str, candidate: Platform) -> None:
    assert only_strict(parse_platform(spec)).match(candidate)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("", id="empty"),
        pytest.param("/linux/arm", id="leading-slash"),
        pytest.param("linux/arm/", id="trailing-slash"),
        pytest.param("linux /arm", id="space"),
        pytest.param("linux/&arm", id="bad-char"),
        pytest.param("linux/arm/foo/bar", id="too-many-parts"),
        pytest.param("*", id="wildcard"),
        pytest.param("linux/*", id="wildcard-arch"),
        pytest.param("notanos", id="unknown-single"),
        pytest.param("windows(10%zz)", id="bad-escape"),
        pytest.param("lin.ux/amd64", id="dot-in-os"),
    ],
)
def test_parse_platform_rejects(spec: str) -> None:
    with pytest.raises(PlatformError) as info:
        parse_platform(spec)
    assert repr(spec) in str(info.value)


# --- normalise (database.go) ----------------------------------------------------------------

NORMALIZE_CASES = [
    (P("Linux", "x86_64"), P("linux", "amd64")),
    (P("linux", "x86-64"), P("linux", "amd64")),
    (P("linux", "AMD64", "V1"), P("linux", "amd64")),
    (P("linux", "amd64", "v2"), P("linux", "amd64", "v2")),
    (P("linux", "i386", "v9"), P("linux", "386")),
    (P("linux", "aarch64"), P("linux", "arm64")),
    (P("linux", "arm64", "8"), P("linux", "arm64")),
    (P("linux", "arm64", "v8"), P("linux", "arm64")),
    (P("linux", "arm64", "v8.0"), P("linux", "arm64")),
    (P("linux", "arm64", "v8.2"), P("linux", "arm64", "v8.2")),
    (P("linux", "arm64", "9"), P("linux", "arm64", "v9")),
    (P("linux", "arm64", "9.0"), P("linux", "arm64", "v9")),
    (P("linux", "arm64", "v9.0"), P("linux", "arm64", "v9")),
    (P("linux", "armhf"), P("linux", "arm", "v7")),
    (P("linux", "armhf", "v5"), P("linux", "arm", "v7")),
    (P("linux", "armel"), P("linux", "arm", "v6")),
    (P("linux", "arm"), P("linux", "arm", "v7")),
    (P("linux", "arm", "7"), P("linux", "arm", "v7")),
    (P("linux", "arm", "5"), P("linux", "arm", "v5")),
    (P("linux", "arm", "6"), P("linux", "arm", "v6")),
    (P("linux", "arm", "8"), P("linux", "arm", "v8")),
    (P("macos", "arm64"), P("darwin", "arm64")),
    (P("", "ppc64le"), P(HOST_OS, "ppc64le")),
    (P("linux", "amd64", "", "", ("b", "a", "b")), P("linux", "amd64", "", "", ("a", "b"))),
    (P("windows", "amd64", "", "10.0.17763.1"), P("windows", "amd64", "", "10.0.17763.1")),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [pytest.param(r, e, id=str(r) + "->" + str(e)) for r, e in NORMALIZE_CASES]
)
def test_normalize(raw: Platform, expected: Platform) -> None:
    assert normalize(raw) == expected


# --- Only / OnlyStrict (compare_test.go) ----------------------------------------------------

_COMMON_NO = ["linux/amd64", "linux/arm/v4", "windows/amd64", "windows/arm"]
ONLY_VECTORS: list[tuple[str, list[str], list[str]]] = [
    (
        "linux/amd64",
        ["linux/amd64", "linux/386"],
        ["linux/amd64/v2", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    (
        "linux/amd64/v2",
        ["linux/amd64", "linux/amd64/v1", "linux/amd64/v2", "linux/386"],
        [
            "linux/amd64/v3",
            "linux/amd64/v4",
            "linux/arm/v7",
            "linux/arm64",
            "windows/amd64",
            "windows/arm",
        ],
    ),
    (
        "linux/386",
        ["linux/386"],
        ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    (
        "windows/amd64",
        ["windows/amd64", "windows(10.0.17763)/amd64"],
        ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"],
    ),
    (
        "linux/arm/v8",
        ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"],
        ["linux/amd64", "linux/arm/v4", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    (
        "linux/arm/v7",
        ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7"],
        [
            "linux/amd64",
            "linux/arm/v4",
            "linux/arm/v8",
            "linux/arm64",
            "windows/amd64",
            "windows/arm",
        ],
    ),
    (
        "linux/arm/v6",
        ["linux/arm/v5", "linux/arm/v6"],
        [
            "linux/amd64",
            "linux/arm",
            "linux/arm/v4",
            "linux/arm/v7",
            "linux/arm/v8",
            "linux/arm64",
            "windows/amd64",
            "windows/arm",
        ],
    ),
    (
        "linux/arm/v5",
        ["linux/arm/v5"],
        [
            "linux/amd64",
            "linux/arm",
            "linux/arm/v4",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm/v8",
            "linux/arm64",
            "windows/amd64",
            "windows/arm",
        ],
    ),
    (
        "linux/arm/v4",
        ["linux/arm/v4"],
        [
            "linux/amd64",
            "linux/arm",
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm/v8",
            "linux/arm64",
            "windows/amd64",
            "windows/arm",
        ],
    ),
    (
        "linux/arm64/v9",
        [
            "linux/arm",
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm/v8",
            "linux/arm64",
            "linux/arm64/v8",
            "linux/arm64/v8.1",
            "linux/arm64/v8.2",
            "linux/arm64/v8.3",
            "linux/arm64/v8.4",
            "linux/arm64/v8.5",
            "linux/arm64/v9",
            "linux/arm64/v9.0",
        ],
        [*_COMMON_NO, "linux/arm64/v8.6"],
    ),
    (
        "linux/arm64/v8.1",
        [
            "linux/arm",
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm/v8",
            "linux/arm64",
            "linux/arm64/v8",
            "linux/arm64/v8.1",
        ],
        [*_COMMON_NO, "linux/arm/v9", "linux/arm64/v9"],
    ),
    (
        "linux/arm64",
        [
            "linux/arm",
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm/v8",
            "linux/arm64",
            "linux/arm64/v8",
        ],
        [*_COMMON_NO, "linux/arm/v9", "linux/arm64/v9", "linux/arm64/v8.1"],
    ),
    # Beyond compare_test.go: v9.x <-> v8.(x+5), capped at v8.9 (rc.4 arm64variantToVersion).
    (
        "linux/arm64/v9.2",
        ["linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.7", "linux/arm/v8"],
        ["linux/arm64/v8.8", "linux/arm64/v9.3"],
    ),
    ("linux/arm64/v9.6", ["linux/arm64/v8.9", "linux/arm64/v9.5"], ["linux/arm64/v9.7"]),
    (
        "linux/amd64/v4",
        ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"],
        ["linux/amd64/v5", "linux/arm64"],
    ),
    (
        "linux(+gpu)/amd64",
        ["linux/amd64", "linux(+gpu)/amd64", "linux(+gpu)/386"],
        ["linux(+gpu+simd)/amd64", "linux(+simd)/amd64"],
    ),
]


def _flatten(vectors: list[tuple[str, list[str], list[str]]]) -> list[object]:
    params: list[object] = []
    for wanted, yes, no in vectors:
        params += [pytest.param(wanted, c, True, id=f"{wanted}+{c}") for c in yes]
        params += [pytest.param(wanted, c, False, id=f"{wanted}-{c}") for c in no]
    return params


@pytest.mark.parametrize(("wanted", "candidate", "expected"), _flatten(ONLY_VECTORS))
def test_only_match(wanted: str, candidate: str, expected: bool) -> None:
    assert only(parse_platform(wanted)).match(parse_platform(candidate)) is expected


_ARM_ALL = ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8"]
ONLY_STRICT_VECTORS: list[tuple[str, list[str], list[str]]] = [
    (
        "linux/amd64",
        ["linux/amd64"],
        ["linux/386", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    (
        "linux/386",
        ["linux/386"],
        ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/amd64", "windows/arm"],
    ),
    (
        "windows/amd64",
        ["windows/amd64", "windows(10.0.17763)/amd64"],
        ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"],
    ),
    (
        "windows(10.0.17763)/amd64",
        ["windows/amd64", "windows(10.0.17763)/amd64"],
        ["linux/amd64", "linux/arm/v7", "linux/arm64", "windows/arm"],
    ),
    (
        "linux/arm/v8",
        ["linux/arm/v8"],
        ["linux/arm", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", *_COMMON_NO, "linux/arm64"],
    ),
    (
        "linux/arm/v7",
        ["linux/arm", "linux/arm/v7"],
        ["linux/arm/v5", "linux/arm/v6", *_COMMON_NO, "linux/arm/v8", "linux/arm64"],
    ),
    (
        "linux/arm/v6",
        ["linux/arm/v6"],
        ["linux/arm/v5", "linux/arm", "linux/arm/v7", "linux/arm/v8", *_COMMON_NO, "linux/arm64"],
    ),
    (
        "linux/arm/v5",
        ["linux/arm/v5"],
        ["linux/arm", "linux/arm/v6", "linux/arm/v7", "linux/arm/v8", *_COMMON_NO, "linux/arm64"],
    ),
    (
        "linux/arm/v4",
        ["linux/arm/v4"],
        ["linux/amd64", "linux/arm", "linux/arm/v5", "linux/arm/v8", "linux/arm64", "windows/arm"],
    ),
    (
        "linux/arm64/v9",
        ["linux/arm64/v9", "linux/arm64/v9.0"],
        [*_ARM_ALL, *_COMMON_NO, "linux/arm/v9", "linux/arm64/v8", "linux/arm64/v8.1"],
    ),
    (
        "linux/arm64/v8.1",
        ["linux/arm64/v8.1"],
        [*_ARM_ALL, *_COMMON_NO, "linux/arm/v9", "linux/arm64/v8", "linux/arm64/v9"],
    ),
    (
        "linux/arm64",
        ["linux/arm64", "linux/arm64/v8"],
        [*_ARM_ALL, *_COMMON_NO, "linux/arm/v9", "linux/arm64/v9"],
    ),
]


@pytest.mark.parametrize(("wanted", "candidate", "expected"), _flatten(ONLY_STRICT_VECTORS))
def test_only_strict_match(wanted: str, candidate: str, expected: bool) -> None:
    assert only_strict(parse_platform(wanted)).match(parse_platform(candidate)) is expected


@pytest.mark.parametrize(
    ("host_version", "image_version", "expected"),
    [
        pytest.param("10.0.17763.1", "10.0.17763.5", True, id="rs5-same-build"),
        pytest.param("10.0.17763", "10.0.20348", False, id="rs5-other-build"),
        pytest.param("10.0.26100", "10.0.20348", True, id="ws2025-runs-ltsc2022"),
        pytest.param("10.0.26100", "10.0.17763", False, id="ws2025-not-rs5"),
        pytest.param("10.0.20348", "10.0.26100", False, id="newer-image"),
        pytest.param("10.0.20348", "", True, id="image-without-version"),
        pytest.param("10.0", "10.0.99999", True, id="host-version-too-short"),
        pytest.param("10.0.17763", "6.3.17763", False, id="other-major"),
    ],
)
def test_windows_os_version_compat(host_version: str, image_version: str, expected: bool) -> None:
    wanted = P("windows", "amd64", "", host_version)
    assert only(wanted).match(P("windows", "amd64", "", image_version)) is expected


# --- Less: preference order -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "best_first"),
    [
        pytest.param(
            "linux/amd64/v3",
            ["linux/amd64/v3", "linux/amd64/v2", "linux/amd64", "linux/386"],
            id="amd64-levels",
        ),
        pytest.param(
            "linux/arm/v7", ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"], id="arm-levels"
        ),
        pytest.param(
            "linux/arm64",
            ["linux/arm64", "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
            id="arm64-then-arm",
        ),
        pytest.param(
            "linux/arm64/v9.1",
            [
                "linux/arm64/v9.1",
                "linux/arm64/v9",
                "linux/arm64/v8.6",
                "linux/arm64/v8.1",
                "linux/arm64",
                "linux/arm/v8",
            ],
            id="arm64-v9-chain",
        ),
    ],
)
def test_only_less_ranks_fallbacks(wanted: str, best_first: list[str]) -> None:
    comparer = only(parse_platform(wanted))
    ranked = [parse_platform(s) for s in best_first]
    for i, better in enumerate(ranked):
        for worse in ranked[i + 1 :]:
            assert comparer.less(better, worse), f"{better} should beat {worse}"
            assert not comparer.less(worse, better)


def test_ordered_prefers_earlier_and_matching() -> None:
    comparer = ordered(P("linux", "arm64"), P("linux", "amd64"))
    assert comparer.less(P("linux", "aarch64"), P("linux", "amd64"))
    assert not comparer.less(P("linux", "amd64"), P("linux", "arm64"))
    assert comparer.less(P("linux", "amd64"), P("linux", "s390x"))
    assert not comparer.less(P("linux", "s390x"), P("linux", "ppc64le"))
    assert str(comparer) == "linux/arm64, linux/amd64"


def test_ordered_ties_prefer_more_features_and_retry_without_features() -> None:
    comparer = ordered(P("linux", "amd64", "", "", ("gpu", "simd")))
    with_gpu = P("linux", "amd64", "", "", ("gpu",))
    assert comparer.less(with_gpu, P("linux", "amd64"))
    assert not comparer.less(P("linux", "amd64"), with_gpu)
    # Neither matches with its features; stripped, only the first one is amd64.
    strict = ordered(P("linux", "amd64"))
    assert strict.less(P("linux", "amd64", "", "", ("x",)), P("linux", "386", "", "", ("y",)))


def test_all_platforms() -> None:
    everything = all_platforms()
    assert everything.match(P("plan9", "mips"))
    assert not everything.less(P("linux", "amd64"), P("plan9", "mips"))


def test_default_matcher_is_only_host() -> None:
    assert default_matcher().match(HOST)


# --- select_manifest (core/images/image.go: Manifest) ---------------------------------------

ATTEST = P("unknown", "unknown")
SELECT_CASES = [
    ("linux/amd64", [P("linux", "arm64"), P("linux", "amd64"), ATTEST], 1, "plain"),
    ("linux/amd64", [ATTEST, None, P("linux", "amd64")], 2, "skips-attestation-and-none"),
    ("linux/amd64", [P("linux", "amd64"), P("linux", "amd64")], 0, "first-of-equals"),
    ("linux/amd64", [P("linux", "386"), P("linux", "amd64")], 1, "exact-beats-386"),
    ("linux/amd64", [P("linux", "amd64", "v2"), P("linux", "386")], 1, "v2-not-for-default-amd64"),
    (
        "linux/amd64/v3",
        [P("linux", "amd64"), P("linux", "amd64", "v3"), P("linux", "amd64", "v2")],
        1,
        "best-level",
    ),
    (
        "linux/amd64/v3",
        [P("linux", "amd64"), P("linux", "amd64", "v4"), P("linux", "amd64", "v2")],
        2,
        "no-higher-level",
    ),
    (
        "linux/arm64",
        [P("linux", "arm", "v7"), P("linux", "arm", "v6")],
        0,
        "arm64-falls-back-to-arm",
    ),
    (
        "linux/arm64",
        [P("linux", "arm", "v6"), P("linux", "arm64", "v8"), P("linux", "arm64")],
        1,
        "arm64-v8-alias-first",
    ),
    (
        "linux/arm/v7",
        [P("linux", "arm", "v5"), P("linux", "arm"), P("linux", "arm", "v6")],
        1,
        "arm-empty-is-v7",
    ),
    ("linux/arm/v6", [P("linux", "arm"), P("linux", "arm", "v5")], 1, "arm-v6-not-v7"),
    (
        "windows/amd64",
        [P("linux", "amd64"), P("windows", "amd64", "", "10.0.17763.1")],
        1,
        "windows",
    ),
    (
        "linux/amd64",
        [P("linux", "amd64", "", "", ("gpu",)), P("linux", "amd64")],
        1,
        "features-not-offered-by-host",
    ),
]


@pytest.mark.parametrize(
    ("wanted", "entries", "expected"), [pytest.param(w, e, x, id=i) for w, e, x, i in SELECT_CASES]
)
def test_select_manifest(wanted: str, entries: list[Platform | None], expected: int) -> None:
    assert select_manifest(parse_platform(wanted), entries) == expected


def test_select_manifest_with_comparer_prefers_feature_rich_entry() -> None:
    comparer = only(P("linux", "amd64", "", "", ("erofs",)))
    entries = [P("linux", "amd64"), P("linux", "amd64", "", "", ("erofs",))]
    assert select_manifest(comparer, entries) == 1


def test_select_manifest_ordered_preference() -> None:
    comparer = ordered(P("linux", "s390x"), P("linux", "amd64"))
    assert select_manifest(comparer, [P("linux", "amd64"), P("linux", "s390x")]) == 1


def test_select_manifest_all_still_skips_attestations() -> None:
    assert select_manifest(all_platforms(), [ATTEST, None, P("plan9", "mips")]) == 2


def test_no_matching_platform_names_wanted_and_offered() -> None:
    entries = [P("linux", "arm64"), ATTEST, P("linux", "arm", "v7")]
    with pytest.raises(NoMatchingPlatformError) as info:
        select_manifest(parse_platform("linux/s390x"), entries)
    assert info.value.wanted == "linux/s390x"
    assert info.value.offered == ["linux/arm64", "linux/arm/v7"]
    assert "linux/s390x" in str(info.value)


def test_no_matching_platform_with_only_attestations() -> None:
    with pytest.raises(NoMatchingPlatformError) as info:
        select_manifest(P("linux", "amd64"), [ATTEST, ATTEST])
    assert info.value.offered == []


# image.go: Manifest keeps children with Platform == nil and sorts them last.
NO_PLATFORM_CASES = [
    ("linux/amd64", [None, P("linux", "amd64")], 1, "a-match-beats-no-platform"),
    ("linux/amd64", [None, P("linux", "arm64")], 0, "no-platform-when-nothing-matches"),
    ("linux/amd64", [ATTEST, P("linux", "s390x"), None, None], 2, "first-without-platform"),
    ("linux/amd64", [P("linux", "386"), None], 0, "a-fallback-match-beats-no-platform"),
]


@pytest.mark.parametrize(
    ("wanted", "entries", "expected"),
    [pytest.param(w, e, x, id=i) for w, e, x, i in NO_PLATFORM_CASES],
)
def test_entries_without_platform_sort_last(
    wanted: str, entries: list[Platform | None], expected: int
) -> None:
    assert select_manifest(parse_platform(wanted), entries) == expected


WIN = "windows"


@pytest.mark.parametrize(
    "matcher",
    [
        pytest.param(lambda p: only(p), id="only"),
        pytest.param(lambda p: only_strict(p), id="only-strict"),
        pytest.param(node_matcher, id="windows-node"),
    ],
)
def test_win32k_feature_matches_plain_windows(matcher: Callable[[Platform], MatchComparer]) -> None:
    # platforms.go: windowsStripFeaturesMatcher (win32k was not considered by older releases).
    comparer = matcher(P(WIN, "amd64", "", "10.0.20348"))
    assert comparer.match(P(WIN, "amd64", "", "10.0.20348.1", ("win32k",)))
    assert not comparer.match(P(WIN, "amd64", "", "10.0.20348.1", ("win32k", "gpu")))
    assert not only(P("linux", "amd64")).match(P("linux", "amd64", "", "", ("win32k",)))


@pytest.mark.parametrize(
    ("host_version", "image_version", "expected"),
    [
        pytest.param("10.0.26100", "10.0.20348.2", True, id="ws2025-runs-ltsc2022"),
        pytest.param("10.0.26100.1", "10.0.26100.9", True, id="ws2025-runs-itself"),
        pytest.param("10.0.26200", "10.0.26100.1", True, id="after-ltsc2025-runs-ltsc2025"),
        pytest.param("10.0.26200", "10.0.26200.5", True, id="after-ltsc2025-runs-itself"),
        pytest.param("10.0.26200", "10.0.20348.5", False, id="after-ltsc2025-not-ltsc2022"),
        pytest.param("10.0.26200", "10.0.26300", False, id="after-ltsc2025-not-newer"),
        pytest.param("10.0.25398", "10.0.20348", True, id="23h2-runs-ltsc2022"),
    ],
)
def test_windows_hosts_after_ltsc2025(
    host_version: str, image_version: str, expected: bool
) -> None:
    # platform_windows_compat.go: the host runs the latest LTSC before it up to itself.
    wanted = P(WIN, "amd64", "", host_version)
    assert node_matcher(wanted).match(P(WIN, "amd64", "", image_version)) is expected
    assert only(wanted).match(P(WIN, "amd64", "", image_version)) is expected


def test_windows_node_prefers_the_newest_compatible_os_version() -> None:
    # defaults_windows.go: windowsMatchComparer.Less, higher OSVersion first.
    entries = [
        P(WIN, "amd64", "", "10.0.20348.2700"),
        P(WIN, "amd64", "", "10.0.26100.32"),
        P(WIN, "amd64", "", "10.0.26100.1742"),
        P(WIN, "amd64", "", "10.0.26200.1"),
        P("linux", "amd64"),
    ]
    assert select_manifest(P(WIN, "amd64", "", "10.0.26100"), entries) == 2
    assert select_manifest(P(WIN, "amd64", "", "10.0.26200"), entries) == 3
    assert select_manifest(P(WIN, "amd64", "", "10.0.20348"), entries) == 0


def test_a_windows_node_does_not_fall_back_to_386() -> None:
    # Default() on Windows is the node's own platform, not Only()'s vector.
    assert not node_matcher(P(WIN, "amd64")).match(P(WIN, "386"))
    assert only(P(WIN, "amd64")).match(P(WIN, "386"))
    assert node_matcher(P("linux", "amd64")).match(P("linux", "386"))


# --- value type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "text"),
    [
        pytest.param(P("linux", "amd64"), "linux/amd64", id="two"),
        pytest.param(P("linux", "arm64", "v8"), "linux/arm64/v8", id="three"),
        pytest.param(
            P("windows", "amd64", "", "10.0.17763.1"), "windows/amd64", id="version-hidden"
        ),
        pytest.param(P("", "amd64"), "unknown", id="no-os"),
    ],
)
def test_str(platform: Platform, text: str) -> None:
    assert str(platform) == text


def test_oci_round_trip() -> None:
    obj: dict[str, object] = {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1",
        "os.features": ["win32k"],
        "variant": "v2",
    }
    platform = Platform.from_oci(obj)
    assert platform == P("windows", "amd64", "v2", "10.0.17763.1", ("win32k",))
    assert platform is not None
    assert platform.to_oci() == obj
    assert P("linux", "arm64").to_oci() == {"architecture": "arm64", "os": "linux"}
    assert Platform.from_oci(None) is None
    assert Platform.from_oci({"os": "linux", "architecture": "arm", "variant": None}) == P(
        "linux", "arm"
    )


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        pytest.param({"os": 1, "architecture": "amd64"}, "os", id="os-int"),
        pytest.param({"os": "linux", "architecture": ["x"]}, "architecture", id="arch-list"),
        pytest.param(
            {"os": "linux", "architecture": "amd64", "os.features": "gpu"},
            "os.features",
            id="features-str",
        ),
    ],
)
def test_from_oci_rejects_bad_types(obj: dict[str, object], field: str) -> None:
    with pytest.raises(PlatformError, match=field):
        Platform.from_oci(obj)


@pytest.mark.parametrize(
    ("machine", "system", "expected"),
    [
        pytest.param("x86_64", "linux", P("linux", "amd64"), id="linux-x86_64"),
        pytest.param("AMD64", "win32", P("windows", "amd64"), id="windows-AMD64"),
        pytest.param("aarch64", "linux", P("linux", "arm64"), id="linux-aarch64"),
        pytest.param("arm64", "darwin", P("darwin", "arm64"), id="darwin-arm64"),
        pytest.param("armv7l", "linux", P("linux", "arm", "v7"), id="armv7l"),
        pytest.param("armv6l", "linux", P("linux", "arm", "v6"), id="armv6l"),
        pytest.param("armv5tel", "linux", P("linux", "arm", "v5"), id="armv5tel"),
        pytest.param("armv8l", "linux", P("linux", "arm", "v8"), id="armv8l-32bit-on-64"),
        pytest.param("i686", "linux", P("linux", "386"), id="i686"),
        pytest.param("ppc64le", "linux", P("linux", "ppc64le"), id="ppc64le"),
        pytest.param("s390x", "freebsd14", P("freebsd", "s390x"), id="freebsd"),
    ],
)
def test_host_platform(machine: str, system: str, expected: Platform) -> None:
    assert host_platform(machine=machine, sys_platform=system) == expected


# --- properties -----------------------------------------------------------------------------

_ARCHES = [
    "amd64",
    "x86_64",
    "x86-64",
    "i386",
    "386",
    "aarch64",
    "arm64",
    "arm",
    "armhf",
    "armel",
    "s390x",
    "riscv64",
]
_VARIANTS = [
    "",
    "v1",
    "v2",
    "v3",
    "5",
    "6",
    "7",
    "8",
    "v5",
    "v6",
    "v7",
    "v8",
    "v8.0",
    "v8.3",
    "v9",
    "9.0",
    "v9.0",
    "v9.4",
]
_WORD = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", max_size=8
)

platforms = st.builds(
    Platform,
    os=st.sampled_from(["linux", "Linux", "windows", "darwin", "macos", "", "freebsd"]) | _WORD,
    architecture=st.sampled_from(_ARCHES) | _WORD,
    variant=st.sampled_from(_VARIANTS) | _WORD,
    os_version=st.sampled_from(["", "10.0.17763.1", "10.0.20348", "1.2"]),
    os_features=st.lists(st.sampled_from(["gpu", "simd", "win32k", "erofs"]), max_size=3).map(
        tuple
    ),
)


@given(platforms)
def test_normalize_is_idempotent(p: Platform) -> None:
    once = normalize(p)
    assert normalize(once) == once


@given(platforms)
def test_a_platform_matches_itself(p: Platform) -> None:
    assert only(p).match(p)
    assert only_strict(p).match(p)
    assert only(p).match(normalize(p))
    assert not only(p).less(p, p)


@given(platforms, st.lists(platforms, max_size=6))
def test_selected_entry_matches_and_nothing_beats_it(
    wanted: Platform, entries: list[Platform]
) -> None:
    comparer = only(wanted)
    try:
        index = select_manifest(comparer, entries)
    except NoMatchingPlatformError:
        assert not any(
            comparer.match(e) for e in entries if (e.os, e.architecture) != ("unknown", "unknown")
        )
        return
    chosen = entries[index]
    assert comparer.match(chosen)
    assert not any(comparer.less(e, chosen) for e in entries[:index] if comparer.match(e))
