"""The image manager: ``EnsureImageExists`` step by step (``pkg/kubelet/images/image_manager.go``).

Per request: apply the default tag (``InvalidImageName``), check presence unless the policy is
``Always`` (``ImageInspectError``), refuse ``Never`` when absent (``ErrImageNeverPull``, no backoff),
answer "already present" when the policy allows, look up credentials, check the per-(pod, image)
backoff (``ImagePullBackOff``), then hand the pull to the puller and record the outcome: events,
backoff, metrics. The pure decisions live in :mod:`kubelet_sim.core.policy` and
:mod:`kubelet_sim.core.backoff`.

With a KEP-2535 ``verifier`` (gate ``KubeletEnsureSecretPulledImages`` on), a present image is
checked before an ``IfNotPresent``/``Never`` container may use it, and every successful pull is
recorded; the credential lookup runs at most once per call and is shared by both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio
import structlog

from kubelet_sim.core.backoff import Backoff
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.memo import put_bounded
from kubelet_sim.core.pods import PullAttempt, PulledImage, PullRequest
from kubelet_sim.core.policy import PullPolicy, should_pull_image
from kubelet_sim.core.reference import ImageReference, apply_default_image_tag, parse_normalized
from kubelet_sim.core.trace import PullTrace
from kubelet_sim.engine.ports import (
    CredentialLookup,
    EventSink,
    ImageStatus,
    ManagerMetrics,
    PulledImageVerifier,
    RuntimeImageService,
)
from kubelet_sim.engine.pullers import ImagePuller, PullJob
from kubelet_sim.errors import (
    BlobNotFoundError,
    InvalidImageNameError,
    KubeletSimError,
    PullError,
    PullReason,
    RegistryAuthError,
    RegistryNotFoundError,
    StoreError,
    failure_cause,
)
from kubelet_sim.telemetry.events import EventReason, EventType, ObjectRef, messages

log = structlog.get_logger(__name__)


async def anonymous(request: PullRequest, ref: ImageReference) -> Sequence[Credentials]:
    """The credential lookup of a node without any credentials."""
    return ()


class _OnceLookup:
    """One request's credential lookup, done on first use and shared after (``sync.OnceValues``)."""

    def __init__(self, lookup: CredentialLookup, request: PullRequest, ref: ImageReference) -> None:
        self._lookup = lookup
        self._request = request
        self._ref = ref
        self._result: Sequence[Credentials] | None = None

    async def __call__(self) -> Sequence[Credentials]:
        if self._result is None:
            self._result = tuple(await self._lookup(self._request, self._ref))
        return self._result


@dataclass(frozen=True, slots=True)
class EnsureResult:
    """The answer of ``EnsureImageExists``: an image ref, or a reason and message."""

    image_ref: str = ""
    repo_digest: str = ""
    reason: PullReason | None = None
    message: str = ""
    pulled: PulledImage | None = None
    present: bool = False

    @property
    def ok(self) -> bool:
        return self.reason is None


PULL_HISTORY = 5
"""Pulls kept per pod and image for ``describe``/``explain`` (the kubelet keeps only the last
error; five show whether a failure repeats or changes)."""

# Read on every decision: an enum member read through its class costs ~90 ns on Python 3.11.
_ALWAYS, _NEVER = PullPolicy.ALWAYS, PullPolicy.NEVER
_NORMAL, _PULLED = EventType.NORMAL, EventReason.PULLED

_MEMO_SIZE = 4096
"""Entries each of the manager's per-decision memos keeps before it starts again (a pod's event
object, an image's parsed reference, an image's "already present" answer)."""


class ImageManager:
    """``EnsureImageExists`` over an image service, a puller, a backoff, events and metrics."""

    def __init__(
        self,
        service: RuntimeImageService,
        puller: ImagePuller,
        recorder: EventSink,
        metrics: ManagerMetrics,
        *,
        backoff: Backoff | None = None,
        credentials: CredentialLookup = anonymous,
        verifier: PulledImageVerifier | None = None,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.service = service
        self.puller = puller
        self.recorder = recorder
        self.metrics = metrics
        self.backoff = Backoff() if backoff is None else backoff
        self.credentials = credentials
        self.verifier = verifier
        self.clock = clock
        self._prev_error: dict[tuple[str, str], str] = {}
        self._history: dict[tuple[str, str], deque[PullAttempt]] = {}
        self._current: dict[tuple[str, str], PullTrace] = {}
        # Memos of the cache-hit path, each a pure function of its key: a container's event
        # object, an image string's normalised reference, and the "already present" message and
        # answer for the image status it was made from (the store's records are immutable, and
        # it hands out the same one until the image changes).
        self._objects: dict[tuple[str, str, str, str, str], ObjectRef] = {}
        self._refs: dict[str, tuple[ImageReference, str]] = {}
        self._present: dict[str, tuple[ImageStatus, bool, str, EnsureResult]] = {}

    def pull_history(self, uid: str, image: str) -> tuple[PullAttempt, ...]:
        """The last :data:`PULL_HISTORY` pulls of ``image`` for pod ``uid``, oldest first."""
        return tuple(self._history.get((uid, image), ()))

    def pull_in_progress(self, uid: str, image: str) -> PullTrace | None:
        """The pull of ``image`` for pod ``uid`` under way now, if one is."""
        return self._current.get((uid, image))

    def pulls_in_progress(self) -> list[tuple[str, str, PullTrace]]:
        """Every pull under way or waiting for the puller: (pod uid, image, trace), oldest
        first (the order the serial queue and the parallel slots serve them)."""
        return sorted(
            ((uid, image, trace) for (uid, image), trace in self._current.items()),
            key=lambda item: item[2].since,
        )

    def forget_pod(self, uid: str) -> None:
        """Drop the backoff, last-error and pull-history entries of a deleted pod (they are keyed
        by its UID)."""
        for key in [k for k in self._prev_error if k[0] == uid]:
            del self._prev_error[key]
        for obj_key in [k for k in self._objects if k[0] == uid]:
            del self._objects[obj_key]
        for key in [k for k in self._history if k[0] == uid]:
            del self._history[key]
        for key in [k for k in self.backoff.held_keys() if isinstance(k, tuple) and k[0] == uid]:
            self.backoff.reset(key)
        self._backoff_changed()

    def _backoff_changed(self) -> None:
        """Show the backoff's size, after each change (not on every decision: most change
        nothing)."""
        self.metrics.set_backoff_entries(len(self.backoff))

    def _event(self, request: PullRequest, type_: EventType, reason: EventReason, msg: str) -> None:
        pod = request.pod
        key = (pod.uid, pod.namespace, pod.name, request.kind, request.container)
        obj = self._objects.get(key)
        if obj is None:
            obj = ObjectRef(
                namespace=pod.namespace, name=pod.name, uid=pod.uid, field_path=request.field_path
            )
            put_bounded(self._objects, key, obj, _MEMO_SIZE)
        self.recorder.event(obj, type_, reason, msg)

    async def ensure_image(self, request: PullRequest) -> EnsureResult:
        """Make sure ``request``'s image is present, as the kubelet's ``EnsureImageExists``."""
        present: bool | None = None
        pull_required: bool | None = None
        try:
            result = await self._ensure(request)
            present, pull_required = _ensure_labels(request.policy, result)
            return result
        finally:
            # recordEnsureImageRequest, deferred: both labels stay "unknown" when the call ends
            # before they are known (an invalid name, a failed inspect, Never with no image).
            self.metrics.ensure_image_request(request.policy, present, pull_required)

    async def _ensure(self, request: PullRequest) -> EnsureResult:
        image = request.image
        parsed = self._refs.get(image)
        if parsed is None:
            try:
                ref = parse_normalized(apply_default_image_tag(image))
            except InvalidImageNameError as exc:
                msg = messages.failed_to_apply_default_tag(image, exc)
                self._event(request, EventType.WARNING, EventReason.INSPECT_FAILED, msg)
                return EnsureResult(reason=PullReason.INVALID_IMAGE_NAME, message=msg)
            parsed = (ref, str(ref))
            put_bounded(self._refs, image, parsed, _MEMO_SIZE)
        ref, spec = parsed

        record = None
        if request.policy is not _ALWAYS:
            started = self.clock()
            try:
                record = await self.service.image_status(spec, request.runtime_handler)
            except StoreError as exc:
                self.metrics.runtime_operation("image_status", self.clock() - started, True)
                msg = messages.failed_to_inspect_image("", exc)
                self._event(request, EventType.WARNING, EventReason.INSPECT_FAILED, msg)
                return EnsureResult(reason=PullReason.ERR_IMAGE_INSPECT, message=msg)
            self.metrics.runtime_operation("image_status", self.clock() - started, False)
            if record is None and request.policy is _NEVER:
                return self._never_pull(request)

        lookup: _OnceLookup | None = None  # made when first needed, then shared
        if record is not None and not should_pull_image(request.policy, present=True):
            must_attempt: bool | None = False
            if self.verifier is not None:
                must_attempt = self.verifier.must_attempt_pull_now(request, ref, record.image_id)
                if must_attempt is None:
                    lookup = _OnceLookup(self.credentials, request, ref)
                    must_attempt = await self.verifier.must_attempt_pull(
                        request, ref, record.image_id, lookup
                    )
            if not must_attempt:
                accessible = self.verifier is not None
                present = self._present.get(image)
                if present is None or present[0] is not record or present[1] is not accessible:
                    msg = messages.already_present(image, accessible=accessible)
                    answer = EnsureResult(
                        image_ref=record.image_id,
                        repo_digest=record.repo_digests[0] if record.repo_digests else "",
                        present=True,
                    )
                    present = (record, accessible, msg, answer)
                    put_bounded(self._present, image, present, _MEMO_SIZE)
                self._event(request, _NORMAL, _PULLED, present[2])
                self.metrics.cache_hit()
                return present[3]
            if request.policy is _NEVER:
                return self._never_pull(request)

        if lookup is None:
            lookup = _OnceLookup(self.credentials, request, ref)
        credentials = await lookup()
        return await self._pull(request, ref, credentials, present=record is not None)

    def _never_pull(self, request: PullRequest) -> EnsureResult:
        msg = messages.never_pull(request.image)
        self._event(request, EventType.WARNING, EventReason.ERR_IMAGE_NEVER_PULL, msg)
        return EnsureResult(reason=PullReason.ERR_IMAGE_NEVER_PULL, message=msg)

    async def _pull(
        self,
        request: PullRequest,
        ref: ImageReference,
        credentials: Sequence[Credentials],
        *,
        present: bool,
    ) -> EnsureResult:
        image = request.image
        key = (request.pod.uid, image)  # upstream keys on the raw container.Image string
        if self.backoff.is_in_backoff_since_update(key, self.clock()):
            msg = messages.back_off(image)
            log.debug(
                "pull.backoff", pod=str(request.pod), container=request.container, image=image
            )
            self._event(request, EventType.NORMAL, EventReason.BACK_OFF, msg)
            previous = self._prev_error.get(key)
            return EnsureResult(
                reason=PullReason.IMAGE_PULL_BACKOFF,
                message=f"{msg}: {previous}" if previous else msg,
                present=present,
            )
        self._prev_error.pop(key, None)
        log.info("pull.start", pod=str(request.pod), container=request.container, image=image)
        self._event(request, EventType.NORMAL, EventReason.PULLING, messages.pulling(image))
        enqueued = self.clock()
        on_resolved = None
        if self.verifier is not None:
            verifier = self.verifier

            async def on_resolved(image_id: str, fingerprint: str) -> None:
                try:
                    await verifier.record_pulled(request, ref, image_id, fingerprint, credentials)
                except KubeletSimError as exc:  # upstream logs a failed record write, goes on
                    log.warning(
                        "pull.record_failed", pod=str(request.pod), image=image, error=str(exc)
                    )

        trace = PullTrace(enqueued, image=image, credentials=len(credentials))
        job = PullJob(
            request=request,
            ref=ref,
            credentials=tuple(credentials),
            on_resolved=on_resolved,
            trace=trace,
        )
        self._current[key] = trace
        try:
            outcome = await self.puller.pull(job)
        finally:
            if self._current.get(key) is trace:
                del self._current[key]
        waited = max(0.0, self.clock() - enqueued - outcome.duration)
        history = self._history.setdefault(key, deque(maxlen=PULL_HISTORY))
        if outcome.error is not None:
            err_text = cri_error_message(ref, outcome.error)
            self._event(
                request,
                EventType.WARNING,
                EventReason.FAILED,
                messages.failed_to_pull(image, err_text),
            )
            self.backoff.next(key, self.clock())
            self._backoff_changed()
            cause = failure_cause(outcome.error)
            self.metrics.pull_attempted(image, outcome.duration, str(cause))
            reason = PullReason.ERR_IMAGE_PULL
            self._prev_error[key] = f"{reason}: {err_text}"
            history.append(
                PullAttempt(
                    enqueued,
                    waited,
                    outcome.duration,
                    str(reason),
                    err_text,
                    cause=str(cause),
                    step=trace.describe() if trace.pulling is not None else "not started",
                    credentials=len(credentials),
                    hosts=tuple(trace.hosts),
                )
            )
            log.info("pull.failed", pod=str(request.pod), image=image, error=err_text)
            return EnsureResult(reason=reason, message=err_text, present=present)
        assert outcome.pulled is not None
        self.metrics.pull_attempted(image, outcome.duration, "")
        history.append(
            PullAttempt(
                enqueued,
                waited,
                outcome.duration,
                credentials=len(credentials),
                hosts=tuple(trace.hosts),
            )
        )
        total = self.clock() - enqueued
        msg = messages.successfully_pulled(image, outcome.duration, total, outcome.pulled.size)
        self._event(request, EventType.NORMAL, EventReason.PULLED, msg)
        self.metrics.image_pull_duration(total, outcome.pulled.size)
        if self.backoff.gc(self.clock()):
            self._backoff_changed()
        return EnsureResult(
            image_ref=outcome.pulled.image_ref,
            repo_digest=outcome.pulled.repo_digest,
            pulled=outcome.pulled,
            present=present,
        )


_PULL_REASONS = frozenset({PullReason.ERR_IMAGE_PULL, PullReason.IMAGE_PULL_BACKOFF})
# A present image the pod must prove access to, under Never, is ErrImageNeverPull after the pull
# was found to be required.
_PULL_REASONS_AND_NEVER = _PULL_REASONS | {PullReason.ERR_IMAGE_NEVER_PULL}
_UNKNOWN_REASONS = frozenset(
    {PullReason.INVALID_IMAGE_NAME, PullReason.ERR_IMAGE_INSPECT, PullReason.ERR_IMAGE_NEVER_PULL}
)


def _ensure_labels(policy: PullPolicy, result: EnsureResult) -> tuple[bool | None, bool | None]:
    """``present_locally`` and ``pull_required`` of ``recordEnsureImageRequest`` for a finished
    ``EnsureImageExists`` (None is ``unknown``)."""
    if result.reason in _UNKNOWN_REASONS and not result.present:
        return None, None  # ended in the pre-check, before either was known
    present = result.present if policy is not _ALWAYS else None
    return present, result.pulled is not None or result.reason in _PULL_REASONS_AND_NEVER


def cri_error_message(ref: ImageReference, error: BaseException) -> str:
    """The error text a kubelet gets back from containerd's CRI ``PullImage`` for ``error``.

    Missing tags and refused access read as containerd words them
    (``core/remotes/docker/resolver.go``); everything else keeps our typed error's text.
    """
    if isinstance(error, PullError):
        return error.message
    prefix = f'failed to pull and unpack image "{ref}"'
    if isinstance(error, BlobNotFoundError):
        # The reference resolved; a blob it lists is missing (containerd's fetcher).
        return (
            f"rpc error: code = NotFound desc = {prefix}: failed to copy: httpReadSeeker: "
            f"failed open: {error.message}"
        )
    if isinstance(error, RegistryNotFoundError):
        return (
            f"rpc error: code = NotFound desc = {prefix}: "
            f'failed to resolve reference "{ref}": {ref}: not found'
        )
    if isinstance(error, RegistryAuthError):
        return (
            f"rpc error: code = Unknown desc = {prefix}: failed to resolve reference "
            f'"{ref}": pull access denied, repository does not exist or may require '
            f"authorization: {error}"
        )
    detail = (
        str(error) if isinstance(error, KubeletSimError) else f"{type(error).__name__}: {error}"
    )
    return f"rpc error: code = Unknown desc = {prefix}: {detail}"
