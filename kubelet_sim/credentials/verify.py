"""KEP-2535: may a pod use an image already on the node, or must it prove access first?

Models ``pkg/kubelet/images/pullmanager/image_pull_manager.go`` (``MustAttemptImagePull``,
``RecordImagePulled``) and ``image_pull_policies.go``. After every successful pull the verifier
records who pulled the image, per repository (the normalised name without tag or digest): the
Secret's namespace, name, UID and credential hash, or "node-accessible" for anonymous pulls and
node credentials (docker config, plugins). Before an ``IfNotPresent``/``Never`` container uses a
present image:

1. no image ID: pull;
2. the policy may exempt it: ``NeverVerify`` always, ``NeverVerifyPreloadedImages`` when the
   kubelet never pulled it (no record), ``NeverVerifyAllowlistedImages`` when the repository is
   allowlisted (``host/path`` exactly, or a ``host/path/*`` prefix); ``AlwaysVerify`` never;
3. no record for the image, or none for this repository: pull;
4. a node-accessible record: use it;
5. one of the pod's secret credentials matching the image has the recorded hash, or the recorded
   Secret's coordinates (a rotated Secret): use it, and record the pod's coordinates or hash too
   (while fewer than 100 Secrets are recorded); otherwise the pod must pull with its own
   credentials, which the registry checks.

Every check counts in ``kubelet_imagemanager_image_mustpull_checks_total{result}``. The store keeps
hashes only, never credentials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Protocol

import structlog

from kubelet_sim.config.kubelet import ImagePullCredentialsVerificationPolicy, KubeletConfiguration
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.memo import put_bounded
from kubelet_sim.core.pods import PullRequest
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.credentials.keyring import SourcedCredentials
from kubelet_sim.errors import StoreError
from kubelet_sim.store.records import CredentialIdentity, CredentialKind

__all__ = [
    "WRITE_RECORD_WHILE_MATCHING_LIMIT",
    "ImageAccessVerifier",
    "MustPullMetrics",
    "MustPullResult",
    "PullRecordStore",
    "allowlisted",
    "identity_of",
    "requires_verification",
]

log = structlog.get_logger(__name__)

Policy = ImagePullCredentialsVerificationPolicy
WRITE_RECORD_WHILE_MATCHING_LIMIT = 100  # image_pull_manager.go writeRecordWhileMatchingLimit
GATE = "KubeletEnsureSecretPulledImages"
_MEMO_SIZE = 4096


class MustPullResult(StrEnum):
    """The ``result`` label of ``kubelet_imagemanager_image_mustpull_checks_total``."""

    CREDENTIAL_POLICY_ALLOWED = "credentialPolicyAllowed"
    CREDENTIAL_RECORD_FOUND = "credentialRecordFound"
    MUST_AUTHENTICATE = "mustAuthenticate"
    ERROR = "error"


# Read on every cache-hit decision: an enum member read through its class costs ~90 ns on
# Python 3.11, a module global ~10.
_MUST_AUTHENTICATE, _ERROR = MustPullResult.MUST_AUTHENTICATE, MustPullResult.ERROR
_NEVER_VERIFY = Policy.NEVER_VERIFY
_NEVER_VERIFY_PRELOADED = Policy.NEVER_VERIFY_PRELOADED_IMAGES
_NEVER_VERIFY_ALLOWLISTED = Policy.NEVER_VERIFY_ALLOWLISTED_IMAGES


class PullRecordStore(Protocol):
    """Where pull records live (:class:`kubelet_sim.store.Store`)."""

    async def record_pull(
        self, image_id: str, identity: CredentialIdentity, *, repository: str = ""
    ) -> bool: ...

    async def pull_records(
        self, image_id: str, *, repository: str | None = None
    ) -> list[CredentialIdentity]: ...

    def cached_pull_records(
        self, image_id: str, *, repository: str | None = None
    ) -> Sequence[CredentialIdentity] | None: ...


class MustPullMetrics(Protocol):
    def must_pull_check(self, result: str) -> None: ...


def allowlisted(patterns: Sequence[str], repository: str) -> bool:
    """``preloadedImagesVerificationAllowlist`` match: ``host/path/*`` by prefix, else exactly."""
    for pattern in patterns:
        if pattern.endswith("/*"):
            if repository.startswith(pattern[:-1]):
                return True
        elif repository == pattern:
            return True
    return False


def requires_verification(
    policy: Policy, allowlist: Sequence[str], repository: str, pulled_by_kubelet: bool
) -> bool:
    """``RequireVerification`` of each policy (``image_pull_policies.go``)."""
    if policy is _NEVER_VERIFY:
        return False
    if policy is _NEVER_VERIFY_PRELOADED:
        return pulled_by_kubelet
    if policy is _NEVER_VERIFY_ALLOWLISTED:
        return not allowlisted(allowlist, repository)
    return True


def identity_of(fingerprint: str, credentials: Sequence[Credentials]) -> CredentialIdentity:
    """Who a pull was made as (``trackedToImagePullCreds``): the credential whose fingerprint
    the runtime reports, a Secret if it came from one, else the node; anonymous without one."""
    if not fingerprint:
        return CredentialIdentity.anonymous()
    for creds in credentials:
        if creds.fingerprint() != fingerprint:
            continue
        if isinstance(creds, SourcedCredentials) and creds.source is not None:
            source = creds.source
            return CredentialIdentity(
                CredentialKind.SECRET,
                source.namespace,
                source.name,
                source.uid,
                creds.credential_hash,
            )
        break
    return CredentialIdentity.node()


class ImageAccessVerifier:
    """The pull manager's ``MustAttemptImagePull`` and ``RecordImagePulled`` over a record store.

    Plugs into :class:`kubelet_sim.engine.manager.ImageManager` as its ``verifier``.
    """

    def __init__(
        self,
        store: PullRecordStore,
        policy: Policy = Policy.NEVER_VERIFY_PRELOADED_IMAGES,
        allowlist: Sequence[str] = (),
        *,
        metrics: MustPullMetrics | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.allowlist = tuple(allowlist)
        self.metrics = metrics
        # (image ID, repository) -> the store's answers the result was made from, and the result
        self._memo: dict[
            tuple[str, str],
            tuple[
                Sequence[CredentialIdentity], Sequence[CredentialIdentity] | None, MustPullResult
            ],
        ] = {}

    @classmethod
    def from_config(
        cls,
        config: KubeletConfiguration,
        store: PullRecordStore,
        *,
        metrics: MustPullMetrics | None = None,
    ) -> ImageAccessVerifier | None:
        """The verifier the config asks for; None when ``KubeletEnsureSecretPulledImages`` is off."""
        if not config.feature_enabled(GATE):
            return None
        return cls(
            store,
            config.effective_verification_policy,
            config.preloaded_images_verification_allowlist,
            metrics=metrics,
        )

    async def must_attempt_pull(
        self,
        request: PullRequest,
        ref: ImageReference,
        image_id: str,
        credentials: Callable[[], Awaitable[Sequence[Credentials]]],
    ) -> bool:
        """True when the pod must pull (proving access) instead of using the present image."""
        if not image_id:
            return True
        return self._counted(request, await self._check(ref.name, image_id, credentials))

    def must_attempt_pull_now(
        self, request: PullRequest, ref: ImageReference, image_id: str
    ) -> bool | None:
        """:meth:`must_attempt_pull` when it can answer without waiting: the store has the
        records in memory and the answer does not turn on the pod's credentials. None otherwise.

        Every cache-hit decision asks; two reads from the store and two coroutines were a third
        of its cost.
        """
        if not image_id:
            return True
        result = self._check_now(ref.name, image_id)
        return None if result is None else self._counted(request, result)

    def _counted(self, request: PullRequest, result: MustPullResult) -> bool:
        if self.metrics is not None:
            self.metrics.must_pull_check(result)
        must = result is _MUST_AUTHENTICATE or result is _ERROR
        if must:
            # Logged only when it makes a pull: a cache hit is counted by the metric above, and
            # a log call (structlog binds a logger per call) was a sixth of each hit's cost.
            log.debug(
                "pull_records.checked",
                pod=str(request.pod),
                image=request.image,
                result=str(result),
                must_pull=must,
            )
        return must

    async def check(
        self,
        ref: ImageReference,
        image_id: str,
        credentials: Callable[[], Awaitable[Sequence[Credentials]]],
    ) -> MustPullResult:
        """What :meth:`must_attempt_pull` would decide, without its metric (``explain``)."""
        if not image_id:
            return MustPullResult.MUST_AUTHENTICATE
        return await self._check(ref.name, image_id, credentials)

    def _by_policy(
        self, repository: str, records: Sequence[CredentialIdentity]
    ) -> MustPullResult | None:
        """The answer the policy and the image's records give before the repository's are read."""
        if not requires_verification(self.policy, self.allowlist, repository, bool(records)):
            return MustPullResult.CREDENTIAL_POLICY_ALLOWED
        if not records:
            return MustPullResult.MUST_AUTHENTICATE
        return None

    @staticmethod
    def _by_records(mapped: Sequence[CredentialIdentity]) -> MustPullResult | None:
        """The answer the repository's records give alone; None when it is the pod's secrets'."""
        if not mapped:
            return MustPullResult.MUST_AUTHENTICATE
        for record in mapped:
            if record.kind.node_accessible:
                return MustPullResult.CREDENTIAL_RECORD_FOUND
        for record in mapped:
            if record.kind is CredentialKind.SECRET:
                return None
        return MustPullResult.MUST_AUTHENTICATE  # kubelet-sim has no service-account creds

    def _check_now(self, repository: str, image_id: str) -> MustPullResult | None:
        """:meth:`_check` from the store's in-memory answers, or None when it needs more.

        The answer is kept with the very answers of the store it came from: the store hands out
        the same sequences until its next write, so while they are the same objects the answer
        is too (the policy and allowlist never change).
        """
        records = self.store.cached_pull_records(image_id)
        if records is None:
            return None
        key = (image_id, repository)
        memo = self._memo.get(key)
        if memo is not None and memo[0] is records:
            if memo[1] is None:
                return memo[2]
            if self.store.cached_pull_records(image_id, repository=repository) is memo[1]:
                return memo[2]
        mapped = None
        result = self._by_policy(repository, records)
        if result is None:
            mapped = self.store.cached_pull_records(image_id, repository=repository)
            if mapped is None:
                return None
            result = self._by_records(mapped)
            if result is None:
                return None  # the pod's secrets decide
        put_bounded(self._memo, key, (records, mapped, result), _MEMO_SIZE)
        return result

    async def _check(
        self,
        repository: str,
        image_id: str,
        credentials: Callable[[], Awaitable[Sequence[Credentials]]],
    ) -> MustPullResult:
        try:
            records = await self.store.pull_records(image_id)
            early = self._by_policy(repository, records)
            if early is not None:
                return early
            mapped = await self.store.pull_records(image_id, repository=repository)
        except StoreError as exc:
            log.warning("pull_records.read_failed", image_id=image_id, error=str(exc))
            return MustPullResult.ERROR
        found = self._by_records(mapped)
        if found is not None:
            return found
        secrets = [r for r in mapped if r.kind is CredentialKind.SECRET]
        writable = len(secrets) < WRITE_RECORD_WHILE_MATCHING_LIMIT
        for creds in await credentials():
            if not isinstance(creds, SourcedCredentials) or creds.source is None:
                continue
            source, digest = creds.source, creds.credential_hash
            for record in secrets:
                same_hash = record.credential_hash == digest
                same_coords = (record.uid, record.namespace, record.name) == (
                    source.uid,
                    source.namespace,
                    source.name,
                )
                if not (same_hash or same_coords):
                    continue
                if writable and not (same_hash and same_coords):
                    identity = CredentialIdentity(
                        CredentialKind.SECRET, source.namespace, source.name, source.uid, digest
                    )
                    try:
                        await self.store.record_pull(image_id, identity, repository=repository)
                    except StoreError as exc:
                        log.warning("pull_records.write_failed", image_id=image_id, error=str(exc))
                return MustPullResult.CREDENTIAL_RECORD_FOUND
        return MustPullResult.MUST_AUTHENTICATE

    async def record_pulled(
        self,
        request: PullRequest,
        ref: ImageReference,
        image_id: str,
        credential_fingerprint: str,
        credentials: Sequence[Credentials],
    ) -> None:
        """Record who pulled ``image_id`` (``RecordImagePulled``); a failed write is only logged.

        Called once the image resolved with these credentials, before it can become present.
        """
        identity = identity_of(credential_fingerprint, credentials)
        try:
            await self.store.record_pull(image_id, identity, repository=ref.name)
        except StoreError as exc:
            log.warning("pull_records.write_failed", image_id=image_id, error=str(exc))
            return
        log.debug(
            "pull_records.recorded",
            pod=str(request.pod),
            image=request.image,
            kind=str(identity.kind),
            secret=f"{identity.namespace}/{identity.name}" if identity.name else None,
        )
