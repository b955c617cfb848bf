"""The whole exception tree of kubelet-sim, drawn once.

::

    KubeletSimError
    ├── InvalidImageNameError      reason InvalidImageName; carries the offending value
    ├── InvalidDigestError         a digest string that fails the digest grammar
    ├── ConfigError                names the file and the field
    │   └── PatchError             a JSON, merge or strategic merge patch that cannot be applied
    ├── APIStatusError             a Kubernetes API answer: HTTP code, metav1.Status reason, details
    ├── PlatformError              bad platform specifier
    ├── RegistryError              OCI error code + HTTP status (may be None for transport errors)
    │   ├── RegistryAuthError      401/403, or a token fetch that failed; never loops
    │   ├── RegistryNotFoundError  MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN, 404
    │   ├── RegistryTransportError connection errors, timeouts, stalls (after retries)
    │   ├── ManifestError          unsupported/unknown media type, schema 1, oversized, unparsable
    │   │   └── NotAnImageError    an OCI artifact (non-image config, artifactType): no container image
    │   ├── NoMatchingPlatformError names the wanted platform and the ones offered
    │   └── DigestMismatchError    content whose size or digest is not what the descriptor says
    ├── StoreError                 the local image store
    │   ├── BlobCorruptError
    │   ├── StoreFullError         names the store folder; nothing partial was left behind
    │   ├── StoreBusyError         another writer kept the store past the lock wait
    │   └── StoreNotFoundError     no store at the folder (and none is created there)
    ├── PullError                  carries the kubelet reason (ErrImagePull, ImagePullBackOff, ...)
    ├── ContainerConfigError       reason CreateContainerConfigError: the container's env cannot be
    │                              made (a missing ConfigMap, Secret or key); upstream's message
    └── ContainerRuntimeError      a runtime handler could not create, start, exec or stop a
        └── RootfsError            container (names it); an image layer that cannot be unpacked

Messages never contain credentials, tokens or Authorization headers.
"""

from __future__ import annotations

from enum import StrEnum


class PullReason(StrEnum):
    """Container waiting reasons and image errors, as in ``pkg/kubelet/images/types.go``."""

    ERR_IMAGE_PULL = "ErrImagePull"
    IMAGE_PULL_BACKOFF = "ImagePullBackOff"
    ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
    INVALID_IMAGE_NAME = "InvalidImageName"
    ERR_IMAGE_INSPECT = "ImageInspectError"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    SIGNATURE_VALIDATION_FAILED = "SignatureValidationFailed"


class KubeletSimError(Exception):
    """Root of every error raised by kubelet-sim."""


class InvalidImageNameError(KubeletSimError):
    """An image reference that fails the distribution/reference grammar."""

    reason = PullReason.INVALID_IMAGE_NAME

    def __init__(self, value: str, message: str) -> None:
        self.value = value
        self.message = message
        super().__init__(f"{message}: {value!r}")


class InvalidDigestError(KubeletSimError):
    """A digest string that fails the digest grammar (algorithm and exact hex length)."""

    def __init__(self, value: str, message: str = "invalid digest") -> None:
        self.value = value
        self.message = message
        super().__init__(f"{message}: {value!r}")


class ConfigError(KubeletSimError):
    """A configuration file that cannot be accepted; names the file and the field.

    ``problems`` lists every (field, message) found when several are reported together (a
    KubeletConfiguration's validation errors); a single problem is ``field``/``message`` itself.
    """

    def __init__(
        self,
        file: str | None,
        field: str | None,
        message: str,
        *,
        problems: tuple[tuple[str | None, str], ...] = (),
    ) -> None:
        self.file = file
        self.field = field
        self.message = message
        self.problems = problems or ((field, message),)
        parts = [p for p in (file, field) if p]
        super().__init__(": ".join([*parts, message]))


class PatchError(ConfigError):
    """A patch document that is malformed (``invalid`` False: the API answers 400 BadRequest) or
    that cannot be applied to the object (``invalid`` True: 422, as a failed JSON patch ``test``).
    """

    def __init__(self, field: str | None, message: str, *, invalid: bool = False) -> None:
        super().__init__(None, field, message)
        self.invalid = invalid


class APIStatusError(KubeletSimError):
    """An error the Kubernetes API answers as a ``metav1.Status``: ``code`` (HTTP), ``reason``
    (``NotFound``, ``AlreadyExists``, ``Conflict``, ``Invalid``, ``BadRequest``, ...) and the
    object it is about (``kind``, the resource's plural, ``name``)."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        kind: str = "",
        group: str = "",
        name: str = "",
        causes: tuple[tuple[str, str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.group = group
        self.name = name
        self.causes = causes
        """(reason, message, field) per cause (``FieldValueRequired``, ...)."""


class PlatformError(KubeletSimError):
    """A platform specifier (``os/arch[/variant]``) that cannot be parsed."""


class RegistryError(KubeletSimError):
    """An error answer from a registry, or a failure talking to it.

    ``code`` is the OCI error code (``MANIFEST_UNKNOWN``, ``UNAUTHORIZED``, ...) when the registry
    sent one; ``status`` the HTTP status when there was an answer at all.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        detail: object = None,
    ) -> None:
        self.message = message
        self.code = code
        self.status = status
        self.detail = detail
        extras = [f"code={code}"] if code else []
        if status is not None:
            extras.append(f"status={status}")
        super().__init__(f"{message} ({', '.join(extras)})" if extras else message)


class RegistryAuthError(RegistryError):
    """401/403 after the auth flow ran, or a token endpoint that refused us."""


class RegistryNotFoundError(RegistryError):
    """The repository, manifest or blob does not exist."""


class BlobNotFoundError(RegistryNotFoundError):
    """A blob (config or layer) the manifest lists that no host would serve.

    The reference itself resolved; containerd reports these from its fetcher (``could not fetch
    content descriptor ... from remote: not found``), never as "failed to resolve reference".
    """


class RegistryTransportError(RegistryError):
    """Connection failures, timeouts and stalls that outlived the retries."""


class ManifestError(RegistryError):
    """A manifest that cannot be used: schema 1, unknown media type, oversized, unparsable."""


class NotAnImageError(ManifestError):
    """A manifest that is not a container image (an OCI artifact): there is nothing to run.

    containerd's CRI fails to unpack these; the message keeps its words and ``problem`` says
    what gave the manifest away (its config media type, its ``artifactType``, a rootfs that does
    not list the layers).
    """

    def __init__(self, digest: str, problem: str) -> None:
        self.digest = digest
        self.problem = problem
        super().__init__(
            "failed to unpack image on snapshotter overlayfs: mismatched image rootfs and "
            f"manifest layers: manifest {digest} is not a container image ({problem})"
        )


class NoMatchingPlatformError(RegistryError):
    """No manifest in an index matches the wanted platform."""

    def __init__(self, wanted: str, offered: list[str]) -> None:
        self.wanted = wanted
        self.offered = offered
        offered_text = ", ".join(offered) if offered else "none"
        super().__init__(f"no manifest for platform {wanted} in index; offered: {offered_text}")


class DigestMismatchError(RegistryError):
    """Content whose size or digest differs from its descriptor."""

    def __init__(self, expected: str, actual: str, *, what: str = "content") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what} failed verification: expected {expected}, got {actual}")


class StoreError(KubeletSimError):
    """The local image store refused or failed an operation."""


class BlobCorruptError(StoreError):
    """A committed blob whose content no longer matches its digest."""


class StoreFullError(StoreError):
    """The store's filesystem ran out of space; nothing partial was left behind."""


class StoreBusyError(StoreError):
    """Another process kept the store open for writing for longer than the lock wait."""


class StoreNotFoundError(StoreError):
    """No store at the folder; opened without ``create``, nothing was created there."""

    def __init__(self, root: str) -> None:
        self.root = root
        super().__init__(f"no image store at {root}")


class PullError(KubeletSimError):
    """A pull that failed, with the kubelet reason a container would show; ``cause`` says what
    kind of failure it was (:class:`Cause`) when the message alone does not."""

    def __init__(self, reason: PullReason, message: str, *, cause: str = "") -> None:
        self.reason = reason
        self.message = message
        self.cause = cause
        super().__init__(f"{reason}: {message}")


class Cause(StrEnum):
    """What kind of failure ended a pull, for ``explain``'s verdicts (not a kubelet reason:
    ``ErrImagePull`` covers all of these)."""

    QPS = "qps"
    AUTH = "auth"
    NOT_FOUND = "not-found"
    BLOB_MISSING = "blob-missing"
    PLATFORM = "platform"
    UNREACHABLE = "unreachable"
    RATE_LIMITED = "rate-limited"  # the registry answered 429
    SERVER_ERROR = "server-error"  # the registry answered 5xx
    NOT_AN_IMAGE = "not-an-image"
    CORRUPT = "corrupt"
    STORE = "store"
    CANCELLED = "cancelled"
    OTHER = "other"


def failure_cause(error: BaseException) -> Cause:
    """The :class:`Cause` of a failed pull's error. An aggregate (every credential failed, each
    error in ``errors``) is auth when any credential was refused, else its last error's cause."""
    if isinstance(error, PullError):
        if error.cause:
            return Cause(error.cause)
        parts = [failure_cause(e) for e in getattr(error, "errors", ())]
        if parts:
            return Cause.AUTH if Cause.AUTH in parts else parts[-1]
        return Cause.OTHER
    for kind, cause in _CAUSES:
        if isinstance(error, kind):
            return cause
    if isinstance(error, RegistryError) and error.status is not None:
        if error.status == 429:
            return Cause.RATE_LIMITED
        if error.status >= 500:
            return Cause.SERVER_ERROR
    return Cause.OTHER


class ContainerConfigError(KubeletSimError):
    """The kubelet cannot make a container's config (``CreateContainerConfigError``).

    ``message`` is upstream's (e.g. ``couldn't find key user in Secret default/db``); it names
    objects and keys, never values.
    """

    reason = "CreateContainerConfigError"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class ContainerRuntimeError(KubeletSimError):
    """A runtime handler failed a container operation; names the container, never its env."""

    def __init__(self, container: str, message: str) -> None:
        self.container = container
        self.message = message
        super().__init__(f"container {container}: {message}")


class RootfsError(ContainerRuntimeError):
    """An image layer that cannot be unpacked safely (a path escaping the rootfs, a bad tar)."""


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of a task group's exception group: what callers of one operation expect.

    A pull runs its layers in a task group; when one fails the others are cancelled, and the
    caller wants the failure, not a group of one.
    """
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


_CAUSES: tuple[tuple[type[BaseException], Cause], ...] = (
    (NoMatchingPlatformError, Cause.PLATFORM),
    (NotAnImageError, Cause.NOT_AN_IMAGE),
    (BlobNotFoundError, Cause.BLOB_MISSING),
    (RegistryNotFoundError, Cause.NOT_FOUND),
    (RegistryAuthError, Cause.AUTH),
    (RegistryTransportError, Cause.UNREACHABLE),
    (OSError, Cause.UNREACHABLE),
    (DigestMismatchError, Cause.CORRUPT),
    (BlobCorruptError, Cause.CORRUPT),
    (StoreError, Cause.STORE),
)
