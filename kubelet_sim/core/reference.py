"""Image references: the distribution/reference grammar and Docker-style normalisation.

Models ``github.com/distribution/reference`` v0.6.0 (``regexp.go``, ``reference.go``,
``normalize.go``), the version kubernetes pins, with digests validated as go-digest v1.0.0
does, and the kubelet's uses of it: ``ParseImageName`` (``pkg/util/parsers/parsers.go``) and
``applyDefaultImageTag`` (``pkg/kubelet/images/image_manager.go``).

Upstream quirks are kept on purpose, because the kubelet shows them to users:

- a name without ``/`` is always a Docker Hub name: ``localhost:5000`` is
  ``docker.io/library/localhost`` with tag ``5000``;
- a first component with uppercase letters is a domain (``Foo/bar`` has domain ``Foo``);
- the combined string is re-split by the name grammar, so ``a.b_c/foo`` ends up with an
  empty domain and path ``a.b_c/foo`` (the grammar does not accept ``a.b_c`` as a domain);
- the 255-character limit counts the path only, not the domain.

Every error is an :class:`~kubelet_sim.errors.InvalidImageNameError` whose ``message`` is
the upstream error text and whose ``value`` is the string that was parsed.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import InvalidImageNameError

__all__ = [
    "ANCHORED_DIGEST",
    "ANCHORED_DOMAIN",
    "ANCHORED_IDENTIFIER",
    "ANCHORED_NAME",
    "ANCHORED_REFERENCE",
    "ANCHORED_TAG",
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "LEGACY_DEFAULT_DOMAIN",
    "OFFICIAL_REPO_PREFIX",
    "REPOSITORY_NAME_TOTAL_LENGTH_MAX",
    "ImageReference",
    "apply_default_image_tag",
    "go_quote",
    "image_name_error_text",
    "is_normalized",
    "parse",
    "parse_docker_ref",
    "parse_image_name",
    "parse_named",
    "parse_normalized",
]

# normalize.go constants.
DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
LOCALHOST = "localhost"
# reference.go: counts the path (remote name) only since v0.6.0; v0.5.0 counted the domain too.
REPOSITORY_NAME_TOTAL_LENGTH_MAX = 255

# reference.go / go-digest error texts, verbatim.
ERR_REFERENCE_INVALID_FORMAT = "invalid reference format"
ERR_NAME_CONTAINS_UPPERCASE = "repository name must be lowercase"
ERR_NAME_EMPTY = "repository name must have at least one component"
ERR_NAME_TOO_LONG = (
    f"repository name must not be more than {REPOSITORY_NAME_TOTAL_LENGTH_MAX} characters"
)
ERR_NAME_NOT_CANONICAL = "repository name must be canonical"
ERR_DIGEST_INVALID_FORMAT = "invalid checksum digest format"
ERR_DIGEST_INVALID_LENGTH = "invalid checksum digest length"
ERR_DIGEST_UNSUPPORTED = "unsupported digest algorithm"


# --- regexp.go, piece by piece ---------------------------------------------------------------
def _optional(*res: str) -> str:
    return "(?:" + "".join(res) + ")?"


def _any_times(*res: str) -> str:
    return "(?:" + "".join(res) + ")*"


def _capture(*res: str) -> str:
    return "(" + "".join(res) + ")"


_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_DOMAIN_NAME_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_OPTIONAL_PORT = r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"  # RE2's \w is ASCII: compiled with re.ASCII below
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
_IDENTIFIER = r"[a-f0-9]{64}"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = _DOMAIN_NAME_COMPONENT + _any_times(r"\.", _DOMAIN_NAME_COMPONENT)
_HOST = "(?:" + _DOMAIN_NAME + "|" + _IPV6 + ")"
_DOMAIN_AND_PORT = _HOST + _OPTIONAL_PORT
_PATH_COMPONENT = _ALPHANUMERIC + _any_times(_SEPARATOR, _ALPHANUMERIC)
_REMOTE_NAME = _PATH_COMPONENT + _any_times("/", _PATH_COMPONENT)
_NAME = _optional(_DOMAIN_AND_PORT, "/") + _REMOTE_NAME
_ANCHORED_NAME = _optional(_capture(_DOMAIN_AND_PORT), "/") + _capture(_REMOTE_NAME)
_REFERENCE = _capture(_NAME) + _optional(":", _capture(_TAG)) + _optional("@", _capture(_DIGEST))

# Always used with fullmatch(): Python's "$" would also match before a trailing newline.
ANCHORED_REFERENCE = re.compile(_REFERENCE, re.ASCII)
ANCHORED_NAME = re.compile(_ANCHORED_NAME, re.ASCII)
ANCHORED_DOMAIN = re.compile(_DOMAIN_AND_PORT, re.ASCII)
ANCHORED_TAG = re.compile(_TAG, re.ASCII)
ANCHORED_DIGEST = re.compile(_DIGEST, re.ASCII)
ANCHORED_IDENTIFIER = re.compile(_IDENTIFIER, re.ASCII)
_ANCHORED_REMOTE_NAME = re.compile(_REMOTE_NAME, re.ASCII)

# go-digest v1.0.0 (digest.go, algorithm.go).
_GO_DIGEST_ANCHORED = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)
_GO_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX = re.compile(r"[a-f0-9]+", re.ASCII)


def _go_lower(value: str) -> str:
    """Go's ``strings.ToLower``: simple per-rune case mapping.

    Python's ``str.lower`` maps U+0130 to two runes where Go maps it to ``i``; that is the
    only difference that can change whether a lowercased name matches the ASCII grammar.
    """
    return value.replace("\u0130", "i").lower()


def _go_digest_error(value: str) -> str | None:
    """The error go-digest v1.0.0 ``Digest.Validate`` returns for ``value``, or None."""
    i = value.find(":")
    if i <= 0 or i + 1 == len(value):
        return ERR_DIGEST_INVALID_FORMAT
    algorithm, encoded = value[:i], value[i + 1 :]
    expected = _GO_DIGEST_HEX_LENGTH.get(algorithm)
    if expected is None:
        if not _GO_DIGEST_ANCHORED.fullmatch(value):
            return ERR_DIGEST_INVALID_FORMAT
        return ERR_DIGEST_UNSUPPORTED
    if len(encoded) != expected:
        return ERR_DIGEST_INVALID_LENGTH
    if not _LOWER_HEX.fullmatch(encoded):
        return ERR_DIGEST_INVALID_FORMAT
    return None


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A parsed image reference: ``[domain/]path[:tag][@digest]``.

    From :func:`parse_normalized` the domain is always set (``docker.io`` by default), except
    in the upstream re-split quirk described in the module docstring.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        if self.domain and not ANCHORED_DOMAIN.fullmatch(self.domain):
            raise InvalidImageNameError(self.domain, ERR_REFERENCE_INVALID_FORMAT)
        if not _ANCHORED_REMOTE_NAME.fullmatch(self.path):
            raise InvalidImageNameError(self.path, ERR_REFERENCE_INVALID_FORMAT)
        if len(self.path) > REPOSITORY_NAME_TOTAL_LENGTH_MAX:
            raise InvalidImageNameError(self.path, ERR_NAME_TOO_LONG)
        if self.tag is not None and not ANCHORED_TAG.fullmatch(self.tag):
            raise InvalidImageNameError(self.tag, "invalid tag format")

    @property
    def name(self) -> str:
        """The repository name with its domain, without tag or digest (``Named.Name()``)."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    @property
    def repository(self) -> str:
        """The repository as used in ``/v2/<repository>/`` URLs (the path)."""
        return self.path

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest if any, else the tag, else ``latest``."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag if self.tag is not None else DEFAULT_TAG

    def __str__(self) -> str:
        return _render(self.name, self.tag, self.digest)

    def familiar_name(self) -> str:
        """The short name Docker shows (``FamiliarName``): ``busybox``, ``user/app``."""
        # normalize.go familiarizeName
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_REPO_PREFIX):
            remainder = path[len(OFFICIAL_REPO_PREFIX) :]
            if "/" not in remainder:
                return remainder
        return path

    def familiar(self) -> str:
        """The short form with tag and digest (``FamiliarString``): ``busybox:1.32.0``."""
        return _render(self.familiar_name(), self.tag, self.digest)

    def with_default_tag(self) -> ImageReference:
        """Add the tag ``latest`` when there is neither tag nor digest (``TagNameOnly``)."""
        if self.tag is None and self.digest is None:
            return dataclasses.replace(self, tag=DEFAULT_TAG)
        return self

    def trimmed(self) -> ImageReference:
        """The repository alone, without tag or digest (``TrimNamed``)."""
        return ImageReference(self.domain, self.path)


def _render(name: str, tag: str | None, digest: Digest | None) -> str:
    text = name
    if tag is not None:
        text += ":" + tag
    if digest is not None:
        text += "@" + str(digest)
    return text


def parse(value: str) -> ImageReference:
    """Parse ``value`` with the plain grammar, without normalising (``reference.Parse``).

    The domain is empty when the name has none: ``parse("busybox").domain == ""``.

    Raises:
        InvalidImageNameError: with the upstream message.
    """
    if value == "":
        raise InvalidImageNameError(value, ERR_NAME_EMPTY)
    match = ANCHORED_REFERENCE.fullmatch(value)
    if match is None:
        lowered = _go_lower(value)
        if lowered != value and ANCHORED_REFERENCE.fullmatch(lowered):
            raise InvalidImageNameError(value, ERR_NAME_CONTAINS_UPPERCASE)
        raise InvalidImageNameError(value, ERR_REFERENCE_INVALID_FORMAT)
    name, tag, digest_text = match.group(1, 2, 3)
    name_match = ANCHORED_NAME.fullmatch(name)
    if name_match is None:  # pragma: no cover - the reference grammar contains the name grammar
        raise InvalidImageNameError(value, ERR_REFERENCE_INVALID_FORMAT)
    domain, path = name_match.group(1) or "", name_match.group(2)
    if len(path) > REPOSITORY_NAME_TOTAL_LENGTH_MAX:
        raise InvalidImageNameError(value, ERR_NAME_TOO_LONG)
    digest: Digest | None = None
    if digest_text:
        error = _go_digest_error(digest_text)
        if error is not None:
            raise InvalidImageNameError(value, error)
        digest = Digest.parse(digest_text)
    return ImageReference(domain, path, tag or None, digest)


def _split_docker_domain(name: str) -> tuple[str, str]:
    """normalize.go ``splitDockerDomain``: separate the domain, defaulting to Docker Hub."""
    maybe_domain, sep, maybe_remote = name.partition("/")
    if not sep:
        # Upstream FIXME: bare "localhost" or "example.com" are still Docker Hub names.
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if maybe_domain == LOCALHOST:
        domain, remote = maybe_domain, maybe_remote
    elif maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, maybe_remote
    elif "." in maybe_domain or ":" in maybe_domain:
        domain, remote = maybe_domain, maybe_remote
    elif _go_lower(maybe_domain) != maybe_domain:
        # Namespaces are never uppercase, so an uppercase first component is a domain.
        domain, remote = maybe_domain, maybe_remote
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_REPO_PREFIX + remote
    return domain, remote


@functools.lru_cache(maxsize=4096)
def parse_normalized(value: str) -> ImageReference:
    """Parse a familiar or full reference into its fully qualified form.

    Models normalize.go ``ParseNormalizedNamed``: ``busybox`` becomes
    ``docker.io/library/busybox``; tag and digest are kept as given (no default tag).

    Raises:
        InvalidImageNameError: with the upstream message, carrying ``value``.
    """
    if ANCHORED_IDENTIFIER.fullmatch(value):
        raise InvalidImageNameError(
            value,
            f"invalid repository name ({value}), cannot specify 64-byte hexadecimal strings",
        )
    domain, remainder = _split_docker_domain(value)
    remote = remainder.partition(":")[0]
    if _go_lower(remote) != remote:
        raise InvalidImageNameError(
            value, f"invalid reference format: repository name ({remote}) must be lowercase"
        )
    try:
        return parse(domain + "/" + remainder)
    except InvalidImageNameError as exc:
        raise InvalidImageNameError(value, exc.message) from None


def parse_named(value: str) -> ImageReference:
    """Parse ``value``, which must already be in canonical form (``reference.ParseNamed``).

    Raises:
        InvalidImageNameError: the value is invalid, or not canonical
            (``repository name must be canonical``).
    """
    ref = parse_normalized(value)
    if str(ref) != value:
        raise InvalidImageNameError(value, ERR_NAME_NOT_CANONICAL)
    return ref


def parse_docker_ref(value: str) -> ImageReference:
    """Normalise as ``docker.ParseDockerRef``: the digest wins over a tag; else default tag."""
    ref = parse_normalized(value)
    if ref.digest is not None:
        return dataclasses.replace(ref, tag=None)
    return ref.with_default_tag()


def is_normalized(value: str) -> bool:
    """True when ``value`` is the string form of a normalised reference, unchanged by parsing."""
    try:
        return str(parse_normalized(value)) == value
    except InvalidImageNameError:
        return False


def parse_image_name(image: str) -> tuple[str, str, str]:
    """The kubelet's ``ParseImageName``: ``(name, tag, digest)`` with ``latest`` as default tag.

    ``name`` is fully qualified; ``tag`` is ``""`` for a digest-only reference and ``digest``
    is ``""`` when absent (``pkg/util/parsers/parsers.go``).

    Raises:
        InvalidImageNameError: see :func:`image_name_error_text` for the kubelet's wording.
    """
    ref = parse_normalized(image)
    tag = ref.tag or ""
    digest = str(ref.digest) if ref.digest is not None else ""
    if not tag and not digest:
        tag = DEFAULT_TAG
    return ref.name, tag, digest


def image_name_error_text(error: InvalidImageNameError) -> str:
    """The kubelet's wording: ``couldn't parse image name "<image>": <err>``."""
    return f"couldn't parse image name {go_quote(error.value)}: {error.message}"


@functools.lru_cache(maxsize=4096)
def apply_default_image_tag(image: str) -> str:
    """The string the kubelet hands to the runtime as ``ImageSpec.Image``.

    Models ``applyDefaultImageTag`` (``pkg/kubelet/images/image_manager.go``): appends
    ``:latest`` when there is no digest and the image does not already end with ``:<tag>``,
    i.e. only to untagged, undigested images. It does not normalise: ``busybox`` becomes
    ``busybox:latest``, not ``docker.io/library/busybox:latest``.

    Raises:
        InvalidImageNameError: the image does not parse.
    """
    _, tag, digest = parse_image_name(image)
    if not digest and tag and not image.endswith(":" + tag):
        image = image + ":" + tag
    return image


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


# Printable ASCII other than '"' and '\\': quoted as is.
_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


def go_quote(value: str) -> str:
    """Quote ``value`` as Go's ``%q`` / ``strconv.Quote`` does, for messages mirroring upstream."""
    if _PLAIN.fullmatch(value):
        return f'"{value}"'  # the common case: printable ASCII, nothing to escape
    out = ['"']
    for char in value:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
