"""Platform parsing, normalisation and matching with containerd's semantics.

Models ``containerd/platforms`` (``database.go``, ``platforms.go``, ``compare.go``,
``platform_windows_compat.go``, ``defaults_windows.go``, tag v1.0.0-rc.4) and the manifest pick of
``containerd/core/images/image.go: Manifest``: children of an index are filtered with ``Match``,
stable-sorted with ``Less`` (children without a platform last), and the first survivor wins, so
index order breaks ties. Every comparison normalises both sides first, so ``arm64 == arm64/v8``,
``arm == arm/v7`` and ``amd64 == amd64/v1``.
"""

from __future__ import annotations

import functools
import platform as _stdlib_platform
import re
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from kubelet_sim.errors import NoMatchingPlatformError, PlatformError

# database.go: isKnownOS / isKnownArch (the Go syslist).
_OS_NAMES = (
    "aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 "
    "solaris windows zos"
)
_ARCH_NAMES = (
    "386 amd64 amd64p32 arm armbe arm64 arm64be ppc64 ppc64le loong64 mips mipsle mips64 "
    "mips64le mips64p32 mips64p32le ppc riscv riscv64 s390 s390x sparc sparc64 wasm"
)
_KNOWN_OS = frozenset(_OS_NAMES.split())
_KNOWN_ARCH = frozenset(_ARCH_NAMES.split())

# platforms.go: specifierRe and osRe (OS, optional "(version+feature+...)").
_SPECIFIER_RE = re.compile(r"[A-Za-z0-9_.-]+")
_OS_RE = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# The attestation-manifest marker BuildKit puts in indexes; never a runnable image.
_UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, order=False)
class Platform:
    """An OCI platform (``image-spec`` descriptor ``platform`` object)."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        # platforms.Format: path.Join(os, arch, variant); an empty OS formats as "unknown".
        if not self.os:
            return _UNKNOWN
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    @classmethod
    def from_oci(cls, obj: Mapping[str, object] | None) -> Platform | None:
        """Read a descriptor's ``platform`` object; ``None`` when there is none.

        Raises:
            PlatformError: a field has the wrong JSON type.
        """
        if obj is None:
            return None
        if not isinstance(obj, Mapping):
            raise PlatformError(f"descriptor platform must be an object, got {type(obj).__name__}")

        def text(key: str) -> str:
            value = obj.get(key, "")
            if value is None:
                return ""
            if not isinstance(value, str):
                raise PlatformError(f"platform field {key!r} must be a string, got {value!r}")
            return value

        raw_features = obj.get("os.features") or []
        if not isinstance(raw_features, list) or not all(isinstance(f, str) for f in raw_features):
            raise PlatformError(
                f"platform field 'os.features' must be a string list, got {raw_features!r}"
            )
        return cls(
            os=text("os"),
            architecture=text("architecture"),
            variant=text("variant"),
            os_version=text("os.version"),
            os_features=tuple(raw_features),
        )

    def to_oci(self) -> dict[str, object]:
        """The OCI JSON form, omitting empty optional fields."""
        out: dict[str, object] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out


# --- normalisation (database.go) ------------------------------------------------------------


@functools.cache
def _this_host() -> Platform:
    return host_platform()


def _normalize_os(os_name: str) -> str:
    if not os_name:
        return _this_host().os
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    # models database.go: normalizeArch
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    """The canonical form of ``p`` (``platforms.Normalize``): OS, arch, variant, sorted features."""
    arch, variant = _normalize_arch(p.architecture, p.variant)
    return Platform(
        os=_normalize_os(p.os),
        architecture=arch,
        variant=variant,
        os_version=p.os_version,
        os_features=tuple(sorted(set(p.os_features))),
    )


# uname -m spellings that normalizeArch does not know; ARM 32-bit carries its level (armv7l).
_MACHINE_ALIASES = {"x86": "386", "i486": "386", "i586": "386", "i686": "386"}
_ARM32_MACHINE = re.compile(r"armv(\d+)")


def host_platform(*, machine: str | None = None, sys_platform: str | None = None) -> Platform:
    """This machine's platform, normalised (``platforms.DefaultSpec``).

    As in containerd a variant is only derived for ARM; an amd64 host never claims ``v2+``.
    ``machine``/``sys_platform`` default to ``platform.machine()``/``sys.platform``.
    """
    system = sys.platform if sys_platform is None else sys_platform
    if system.startswith("win"):
        os_name = "windows"
    elif system.startswith("freebsd"):
        os_name = "freebsd"
    elif system.startswith("linux") or not system:
        os_name = "linux"
    else:
        os_name = system.lower()
    raw = (_stdlib_platform.machine() if machine is None else machine).lower() or "amd64"
    arm32 = _ARM32_MACHINE.match(raw)
    if arm32 is not None:
        arch, variant = _normalize_arch("arm", arm32.group(1))
    else:
        arch, variant = _normalize_arch(_MACHINE_ALIASES.get(raw, raw), "")
    return Platform(os=os_name, architecture=arch, variant=variant)


# --- parsing (platforms.go: Parse) ----------------------------------------------------------


def _decode_os_option(spec: str, value: str) -> str:
    if "%" not in value:
        return value
    if _BAD_ESCAPE.search(value):
        raise PlatformError(f"{spec!r}: invalid %-escape in OS option {value!r}")
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError as exc:
        raise PlatformError(f"{spec!r}: OS option {value!r} is not UTF-8 once unescaped") from exc


def parse_platform(spec: str) -> Platform:
    """Parse ``<os>|<arch>|<os>/<arch>[/<variant>]`` like containerd ``platforms.Parse``.

    The OS part may carry ``(version+feature+...)`` with %-escapes. A missing OS or architecture
    is taken from the host. As upstream, the result is only partly normalised: ``linux/arm`` keeps
    an empty variant and ``linux/arm64/v8`` keeps ``v8``; every comparison normalises anyway.

    Raises:
        PlatformError: the specifier is malformed or names an unknown OS/architecture.
    """
    if "*" in spec:
        raise PlatformError(f"{spec!r}: wildcards not yet supported")
    parts = spec.split("/", 3)
    os_match = _OS_RE.fullmatch(parts[0])
    if os_match is None:
        raise PlatformError(f"{parts[0]!r} is an invalid OS component of {spec!r}")
    for part in parts[1:]:
        if not _SPECIFIER_RE.fullmatch(part):
            raise PlatformError(f"{part!r} is an invalid component of {spec!r}")
    os_name = _normalize_os(os_match.group(1))
    os_version = _decode_os_option(spec, os_match.group(2) or "")
    features_raw = os_match.group(3) or ""
    features = (
        tuple(_decode_os_option(spec, f) for f in features_raw[1:].split("+"))
        if features_raw
        else ()
    )
    base = Platform(os=os_name, architecture="", os_version=os_version, os_features=features)

    if len(parts) == 1:
        if os_name in _KNOWN_OS:
            host = _this_host()
            variant = host.variant if host.architecture == "arm" and host.variant != "v7" else ""
            return replace(base, architecture=host.architecture, variant=variant)
        arch, variant = _normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in _KNOWN_ARCH:
            return Platform(_this_host().os, arch, variant, os_version, features)
        raise PlatformError(f"{spec!r}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = _normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return replace(base, architecture=arch, variant=variant)
    if len(parts) == 3:
        arch, variant = _normalize_arch(parts[1], parts[2])
        if arch == "arm64" and not variant:
            variant = "v8"
        return replace(base, architecture=arch, variant=variant)
    raise PlatformError(f"{spec!r}: cannot parse platform specifier")


# --- matchers (platforms.go: NewMatcher, compare.go) -----------------------------------------


class MatchComparer(Protocol):
    """Filters and ranks platforms (containerd ``platforms.MatchComparer``)."""

    def match(self, p: Platform, /) -> bool:
        """Whether ``p`` can run here."""
        ...

    def less(self, a: Platform, b: Platform, /) -> bool:
        """Whether ``a`` is preferred over ``b``."""
        ...


def _windows_version(value: str) -> tuple[int, int, int] | None:
    # platform_windows_compat.go: getWindowsOSVersion; fewer than two dots or junk -> empty.
    if value.count(".") < 2:
        return None
    major, minor, build = value.split(".")[:3]
    try:
        parsed = (int(major), int(minor), int(build))
    except ValueError:
        return None
    if not (0 <= parsed[0] < 256 and 0 <= parsed[1] < 256 and 0 <= parsed[2] < 65536):
        return None
    return None if parsed == (0, 0, 0) else parsed


# platform_windows_compat.go: the stable-ABI LTSC releases, ascending (ltsc2022, ltsc2025).
_WS2022_BUILD = 20348
_COMPAT_LTSC_BUILDS = (_WS2022_BUILD, 26100)


def _windows_version_compatible(host_version: str, image_version: str) -> bool:
    # models platform_windows_compat.go: windowsVersionMatcher.Match and
    # checkWindowsHostAndContainerCompat
    host = _windows_version(host_version)
    if host is None or not image_version:
        return True
    image = _windows_version(image_version) or (0, 0, 0)
    if host[:2] != image[:2]:
        return False
    if host[2] < _WS2022_BUILD:
        return host[2] == image[2]
    # The host runs images from the latest LTSC release before it (from its own build if it is
    # ltsc2022), up to its own build: a 26100 host runs 20348..26100, a 26200 host 26100..26200.
    oldest = next((b for b in reversed(_COMPAT_LTSC_BUILDS) if host[2] > b), _WS2022_BUILD)
    return oldest <= image[2] <= host[2]


_WIN32K = "win32k"


@dataclass(frozen=True, slots=True)
class _Matcher:
    """Equality on normalised OS/arch/variant, Windows OS-version compat, features subset."""

    platform: Platform  # normalised

    @classmethod
    def of(cls, p: Platform) -> _Matcher:
        return cls(normalize(p))

    def match(self, p: Platform) -> bool:
        # models platforms.go: matcher.Match
        q = normalize(p)
        if (q.os, q.architecture, q.variant) != (
            self.platform.os,
            self.platform.architecture,
            self.platform.variant,
        ):
            return False
        features = set(q.os_features)
        if self.platform.os == "windows":
            if not _windows_version_compatible(self.platform.os_version, p.os_version):
                return False
            # windowsStripFeaturesMatcher: older releases ignored win32k, so it never excludes.
            features.discard(_WIN32K)
        return features <= set(self.platform.os_features)


@dataclass(frozen=True, slots=True)
class _OrderedComparer:
    """``platforms.Ordered``: matches any; earlier matchers are preferred."""

    matchers: tuple[_Matcher, ...]
    label: str

    def __str__(self) -> str:
        return self.label

    def match(self, p: Platform) -> bool:
        return any(m.match(p) for m in self.matchers)

    def less(self, a: Platform, b: Platform) -> bool:
        # models compare.go: orderedPlatformComparer.Less (features tie-break, then stripped retry)
        for m in self.matchers:
            am, bm = m.match(a), m.match(b)
            if am and not bm:
                return True
            if am or bm:
                if am and bm and len(a.os_features) != len(b.os_features):
                    return len(a.os_features) > len(b.os_features)
                return False
        if a.os_features or b.os_features:
            return self.less(replace(a, os_features=()), replace(b, os_features=()))
        return False


@dataclass(frozen=True, slots=True)
class _AllComparer:
    """``platforms.All``: matches everything, no preference."""

    def __str__(self) -> str:
        return "all"

    def match(self, p: Platform) -> bool:
        return True

    def less(self, a: Platform, b: Platform) -> bool:
        return False


# compare.go (rc.4) arm64variantToVersion: v9.x is compatible with v8.(x+5), capped at v8.9.
_ARM64_V8_MAX_MINOR = 9
_ARM64_V9_MAX_MINOR = 7
_ARM64_VARIANT = re.compile(r"v([89])(?:\.(\d))?")


def _arm64_variants(variant: str) -> list[str]:
    """Normalised arm64 variants an arm64/<variant> CPU runs, best first (itself excluded)."""
    m = _ARM64_VARIANT.fullmatch(variant or "v8")
    if m is None:
        return []
    major, minor = int(m.group(1)), int(m.group(2) or 0)
    out: list[str] = []
    if major == 9:
        if minor > _ARM64_V9_MAX_MINOR:
            return []
        out += [f"v9.{n}" if n else "v9" for n in range(minor - 1, -1, -1)]
        minor = min(minor + 5, _ARM64_V8_MAX_MINOR) + 1  # v8.(x+5) itself is included below
    elif minor > _ARM64_V8_MAX_MINOR:
        return []
    out += [f"v8.{n}" if n else "" for n in range(minor - 1, -1, -1)]
    return out


def _platform_vector(p: Platform) -> list[Platform]:
    # models compare.go: platformVector (p is normalised)
    vector = [p]
    arch, variant = p.architecture, p.variant
    if arch == "amd64":
        level = _variant_number(variant)
        if level is not None and level > 1:
            vector += [
                replace(p, variant=f"v{n}" if n > 1 else "") for n in range(level - 1, 0, -1)
            ]
        vector.append(replace(p, architecture="386", variant=""))
    elif arch == "arm":
        level = _variant_number(variant)
        if level is not None and level > 5:
            vector += [replace(p, variant=f"v{n}") for n in range(level - 1, 4, -1)]
    elif arch == "arm64":
        vector += [replace(p, variant=v) for v in _arm64_variants(variant)]
        # Every arm64 CPU also runs 32-bit arm up to v8.
        vector += [replace(p, architecture="arm", variant=f"v{n}") for n in (8, 7, 6, 5)]
    return vector


def _variant_number(variant: str) -> int | None:
    digits = variant.removeprefix("v")
    return int(digits) if digits.isdigit() else None


def only(p: Platform) -> MatchComparer:
    """``platforms.Only``: ``p`` plus what it can also run, in preference order.

    amd64/vN falls back to vN-1..v1 then 386; arm/vN to v5; arm64/v8.x to v8.0; arm64/v9.x to
    v9.0 then v8.(x+5)..v8.0; every arm64 then to arm v8, v7, v6, v5.
    """
    vector = _platform_vector(normalize(p))
    return _OrderedComparer(tuple(_Matcher.of(v) for v in vector), str(p))


def only_strict(p: Platform) -> MatchComparer:
    """``platforms.OnlyStrict``: ``p`` (normalised) and nothing else."""
    return _OrderedComparer((_Matcher.of(p),), str(p))


def ordered(*ps: Platform) -> MatchComparer:
    """``platforms.Ordered``: any of ``ps``, preferring earlier ones."""
    return _OrderedComparer(tuple(_Matcher.of(p) for p in ps), ", ".join(str(p) for p in ps))


def all_platforms() -> MatchComparer:
    """``platforms.All``: every platform (attestation entries are still never selected)."""
    return _AllComparer()


@dataclass(frozen=True, slots=True)
class _WindowsComparer:
    """``platforms.Default()`` on a Windows node (``defaults_windows.go: windowsMatchComparer``).

    Matches the node's own platform only (OS version compatibility, ``win32k`` ignored) and, of
    two matching entries, prefers the higher ``os.version``.
    """

    matcher: _Matcher

    def __str__(self) -> str:
        return str(self.matcher.platform)

    def match(self, p: Platform) -> bool:
        return self.matcher.match(p)

    def less(self, a: Platform, b: Platform) -> bool:
        am, bm = self.match(a), self.match(b)
        if am and bm:
            return _version_key(a.os_version) > _version_key(b.os_version)
        return am and not bm


def _version_key(version: str) -> tuple[int, ...]:
    # Upstream compares the strings; numbers agree with that for the builds that can both match
    # and also order revisions right (10.0.26100.1742 after 10.0.26100.32).
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def node_matcher(p: Platform) -> MatchComparer:
    """The matcher containerd pulls with on a node of platform ``p`` (CRI: ``platforms.Default``).

    ``only(p)`` on Linux and other systems; on Windows the node's own platform, newest compatible
    ``os.version`` first (no ``386`` fallback).
    """
    if normalize(p).os == "windows":
        return _WindowsComparer(_Matcher.of(p))
    return only(p)


def default_matcher() -> MatchComparer:
    """``platforms.Default``: :func:`node_matcher` of :func:`host_platform`."""
    return node_matcher(host_platform())


# --- picking the manifest (core/images/image.go: Manifest) ----------------------------------


def _is_attestation(p: Platform) -> bool:
    return p.os == _UNKNOWN and p.architecture == _UNKNOWN


def select_manifest(wanted: MatchComparer | Platform, entries: Sequence[Platform | None]) -> int:
    """Index of the index child to pull for ``wanted`` (a Platform: :func:`node_matcher`).

    As ``core/images/image.go: Manifest``: entries that match are stable-sorted with ``less`` and
    the first wins, so among equally good matches the earliest in index order is taken. Entries
    without a platform (``None``) are kept and sort last: one is chosen only when nothing with a
    platform matches (a nested index is then followed, a manifest is checked against its
    config's platform by the caller). Attestation entries (``unknown/unknown``) are never chosen.

    Raises:
        NoMatchingPlatformError: nothing matches; names the wanted and the offered platforms.
    """
    matcher = node_matcher(wanted) if isinstance(wanted, Platform) else wanted
    offered = [(i, p) for i, p in enumerate(entries) if p is not None and not _is_attestation(p)]
    candidates = [(i, p) for i, p in offered if matcher.match(p)]
    if not candidates:
        without = [i for i, p in enumerate(entries) if p is None]
        if without:
            return without[0]
        raise NoMatchingPlatformError(wanted=str(wanted), offered=[str(p) for _, p in offered])

    def compare(a: tuple[int, Platform], b: tuple[int, Platform]) -> int:
        if matcher.less(a[1], b[1]):
            return -1
        if matcher.less(b[1], a[1]):
            return 1
        return 0

    candidates.sort(key=functools.cmp_to_key(compare))  # list.sort is stable
    return candidates[0][0]
