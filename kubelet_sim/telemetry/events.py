"""The kubelet's image events: reasons, types, exact message texts, and a correlating recorder.

Reasons come from ``pkg/kubelet/events/event.go``; texts are the format strings of
``pkg/kubelet/images/image_manager.go``, ``kuberuntime/kuberuntime_container.go``,
``kubelet_pods.go`` and ``images/image_gc_manager.go`` (Go ``%q`` images, ``time.Duration`` text).

:class:`EventRecorder` models client-go's ``tools/record/events_cache.go`` (``EventCorrelator``):

1. *aggregate*: events differing only in message (same object ignoring field path, same type and
   reason) are grouped; at 10 distinct messages with no gap over 600 s the event becomes one with
   message ``(combined from similar events): <message>``, stored once per group;
2. *count*: an event identical to an earlier one (object incl. field path, type, reason, message)
   updates it: ``count + 1``, same name and ``first_timestamp``, new ``last_timestamp``. No time
   window, only an LRU of 4096 keys;
3. *spam filter*: a token bucket per object (burst 25, 1 per 300 s) drops the event; a dropped event
   was still counted in step 2.

Stored events are bounded (least recently updated dropped first). Callers build messages without
credentials; :func:`redact` and the ``redactor`` hook are a second line of defence.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Generic, TypeVar

import structlog

from kubelet_sim.core.durations import MILLISECOND, format_go_duration_ns, seconds_to_ns
from kubelet_sim.core.ratelimit import TokenBucket
from kubelet_sim.core.reference import go_quote, image_name_error_text
from kubelet_sim.errors import InvalidImageNameError

__all__ = [
    "AGGREGATE_PREFIX",
    "REDACTED",
    "ContainerSection",
    "Event",
    "EventReason",
    "EventRecorder",
    "EventType",
    "ObjectRef",
    "RecorderStatistics",
    "messages",
    "redact",
]

log = structlog.get_logger(__name__)

AGGREGATE_PREFIX: Final = "(combined from similar events): "
REDACTED: Final = "<redacted>"


class EventType(StrEnum):
    """``v1.EventTypeNormal`` / ``v1.EventTypeWarning``."""

    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(StrEnum):
    """Event reasons the image subsystem emits (``pkg/kubelet/events/event.go``).

    ``FAILED`` is both ``FailedToPullImage`` (``Failed to pull image ...``) and
    ``FailedToCreateContainer`` (``Error: ErrImagePull``); ``BACK_OFF`` is ``BackOffPullImage``,
    a *Normal* event, and ``BackOffStartContainer`` (crash loop), a *Warning*.
    """

    PULLING = "Pulling"
    PULLED = "Pulled"
    FAILED = "Failed"
    INSPECT_FAILED = "InspectFailed"
    ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
    BACK_OFF = "BackOff"
    FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET = "FailedToRetrieveImagePullSecret"  # noqa: S105
    IMAGE_GC_FAILED = "ImageGCFailed"
    INVALID_DISK_CAPACITY = "InvalidDiskCapacity"
    FREE_DISK_SPACE_FAILED = "FreeDiskSpaceFailed"
    # the container half (kuberuntime)
    CREATED = "Created"
    STARTED = "Started"
    KILLING = "Killing"
    FAILED_POST_START_HOOK = "FailedPostStartHook"
    FAILED_PRE_STOP_HOOK = "FailedPreStopHook"
    FAILED_CREATE_POD_SANDBOX = "FailedCreatePodSandBox"
    INVALID_ENVIRONMENT_VARIABLE_NAMES = "InvalidEnvironmentVariableNames"
    FAILED_VALIDATION = "FailedValidation"
    NODE_AFFINITY = "NodeAffinity"
    LIFECYCLE_HTTP_FALLBACK = "LifecycleHTTPFallback"


class ContainerSection(StrEnum):
    """The pod-spec list a container lives in, as spelled in an event's field path."""

    CONTAINERS = "containers"
    INIT_CONTAINERS = "initContainers"
    EPHEMERAL_CONTAINERS = "ephemeralContainers"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The event's ``involvedObject`` (``v1.ObjectReference``); a container is a pod plus field path."""

    namespace: str
    name: str
    uid: str = ""
    field_path: str = ""
    kind: str = "Pod"
    api_version: str = "v1"
    correlation_key: tuple[str, str, str, str, str] = field(
        init=False, repr=False, compare=False, hash=False
    )
    """The object as the correlator groups it (everything but the field path), made once."""

    def __post_init__(self) -> None:
        key = (self.kind, self.namespace, self.name, self.uid, self.api_version)
        object.__setattr__(self, "correlation_key", key)

    @classmethod
    def container(
        cls,
        namespace: str,
        name: str,
        uid: str,
        container: str,
        section: ContainerSection = ContainerSection.CONTAINERS,
        *,
        index: int = 0,
    ) -> ObjectRef:
        """A container reference as ``GenerateContainerRef`` (``pkg/kubelet/container/ref.go``) makes it:
        field path ``spec.containers{name}``, or ``spec.containers[index]`` for an unnamed container."""
        path = f"spec.{section}{{{container}}}" if container else f"spec.{section}[{index}]"
        return cls(namespace=namespace, name=name, uid=uid, field_path=path)

    @classmethod
    def node(cls, name: str) -> ObjectRef:
        """The kubelet's ``nodeRef``: kind Node, no namespace, the node name as UID."""
        return cls(namespace="", name=name, uid=name, kind="Node", api_version="")


def _error_text(err: BaseException | str) -> str:
    """Go's ``%v`` of an error; an invalid image name gets the kubelet's parser wording."""
    if isinstance(err, InvalidImageNameError):
        return image_name_error_text(err)
    return str(err)


def _millis(seconds: float) -> str:
    """``d.Truncate(time.Millisecond)`` printed with ``%v``."""
    ns = seconds_to_ns(seconds)
    remainder = ns % MILLISECOND if ns >= 0 else -(-ns % MILLISECOND)  # Go's % truncates
    return format_go_duration_ns(ns - remainder)


class _Messages:
    """Message texts, one builder per upstream format string; ``image`` is the requested string."""

    def pulling(self, image: str) -> str:
        return f"Pulling image {go_quote(image)}"

    def successfully_pulled(self, image: str, pull_duration: float, total: float, size: int) -> str:
        """Both durations are seconds; upstream truncates each to milliseconds before printing."""
        return (
            f"Successfully pulled image {go_quote(image)} in {_millis(pull_duration)} "
            f"({_millis(total)} including waiting). Image size: {size} bytes."
        )

    def already_present(self, image: str, *, accessible: bool = False) -> str:
        """``accessible``: the KEP-2535 wording, used when ``KubeletEnsureSecretPulledImages`` is on."""
        suffix = " and can be accessed by the pod" if accessible else ""
        return f"Container image {go_quote(image)} already present on machine{suffix}"

    def failed_to_pull(self, image: str, err: BaseException | str) -> str:
        return f"Failed to pull image {go_quote(image)}: {_error_text(err)}"

    def back_off(self, image: str) -> str:
        return f"Back-off pulling image {go_quote(image)}"

    def never_pull(self, image: str) -> str:
        return f"Container image {go_quote(image)} is not present with pull policy of Never"

    def failed_to_inspect_image(self, image_ref: str, err: BaseException | str) -> str:
        """Upstream formats the (still empty) ``imageRef`` here: pass ``""`` to match it."""
        return f"Failed to inspect image {go_quote(image_ref)}: {_error_text(err)}"

    def failed_to_apply_default_tag(self, image: str, err: BaseException | str) -> str:
        return f"Failed to apply default image tag {go_quote(image)}: {_error_text(err)}"

    def container_error(self, err: BaseException | str) -> str:
        """kuberuntime's ``Error: <message>`` Warning, e.g. ``Error: ErrImagePull``."""
        return f"Error: {_error_text(err)}"

    def failed_to_retrieve_pull_secrets(self, names: Sequence[str]) -> str:
        return (
            f"Unable to retrieve some image pull secrets ({', '.join(names)}); "
            "attempting to pull the image may not succeed."
        )

    def invalid_disk_capacity(self, capacity: int = 0) -> str:
        return f"invalid capacity {capacity} on image filesystem"

    def free_disk_space_failed(self, to_free: int, freed: int) -> str:
        return (
            "Failed to garbage collect required amount of images. "
            f"Attempted to free {to_free} bytes, but only found {freed} bytes eligible to free."
        )


messages: Final = _Messages()


def redact(message: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each non-empty secret with ``<redacted>``, longest first."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        message = message.replace(secret, REDACTED)
    return message


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event, as ``kubectl describe`` shows it (timestamps are wall-clock seconds)."""

    involved_object: ObjectRef
    type: EventType
    reason: EventReason
    message: str
    count: int
    first_timestamp: float
    last_timestamp: float
    name: str
    source_component: str = "kubelet"
    source_host: str = ""

    @property
    def namespace(self) -> str:
        return self.involved_object.namespace

    @property
    def field_path(self) -> str:
        return self.involved_object.field_path


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    """Counters of an :class:`EventRecorder` since it was made."""

    stored: int
    recorded: int  # accepted: new, or counted into an existing one
    aggregated: int  # accepted as a "(combined from similar events)" one
    spam_filtered: int
    evicted: int  # dropped to stay within capacity


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _LRU(Generic[K, V]):
    """groupcache's ``lru.Cache``: ``get`` refreshes, ``put`` evicts the least recently used."""

    __slots__ = ("_data", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self._size:
            self._data.popitem(last=False)


@dataclass(slots=True)
class _AggregateRecord:
    local_keys: dict[str, None] = field(default_factory=dict)  # an insertion-ordered set
    last: float = float("-inf")


@dataclass(slots=True)
class _Observation:
    count: int
    first_timestamp: float
    name: str


Subscriber = Callable[[Event], None]


class EventRecorder:
    """Records events like the kubelet's ``record.EventRecorder`` and keeps them for queries.

    Args:
        clock: wall-clock seconds since the epoch, for timestamps and the correlator's windows.
        capacity: most events kept; the least recently updated is dropped first.
        source_host: ``source.host`` (the node name); the component is always ``kubelet``.
        spam_filter: apply the per-object token bucket (upstream always does).
        redactor: applied to every message before anything else, e.g. ``lambda m: redact(m, s)``.
        subscribers: called with each accepted event (the daemon's log stream).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        capacity: int = 10_000,
        source_host: str = "",
        cache_size: int = 4096,
        aggregate_max_events: int = 10,
        aggregate_interval: float = 600.0,
        spam_filter: bool = True,
        spam_burst: int = 25,
        spam_qps: float = 1.0 / 300.0,
        redactor: Callable[[str], str] | None = None,
        subscribers: Iterable[Subscriber] = (),
    ) -> None:
        if capacity < 1:
            raise ValueError(f"event recorder capacity must be at least 1, got {capacity}")
        if cache_size < 1:
            raise ValueError(f"event recorder cache_size must be at least 1, got {cache_size}")
        if spam_qps <= 0:
            # The spam filter's limiter refills at spam_qps; the shared bucket reads 0 as "no
            # limit" (the pull throttle's meaning), which here is spam_filter=False.
            raise ValueError(
                f"spam_qps must be positive (spam_filter=False disables), got {spam_qps}"
            )
        self._clock = clock
        self._capacity = capacity
        self.source_host = source_host
        self._aggregate_max = aggregate_max_events
        self._aggregate_interval = aggregate_interval
        self._spam = spam_filter
        self._spam_burst = spam_burst
        self._spam_qps = spam_qps
        self._redactor = redactor
        self._subscribers: list[Subscriber] = list(subscribers)
        self._aggregates: _LRU[tuple[object, ...], _AggregateRecord] = _LRU(cache_size)
        self._observed: _LRU[tuple[object, ...], _Observation] = _LRU(cache_size)
        self._buckets: _LRU[tuple[str, ...], TokenBucket] = _LRU(cache_size)
        self._store: OrderedDict[tuple[object, ...], Event] = OrderedDict()
        self._recorded = self._aggregated = self._filtered = self._evicted = 0

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` with every accepted event; returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def event(
        self, obj: ObjectRef, type_: EventType, reason: EventReason, message: str
    ) -> Event | None:
        """Record one event (``recorder.Event``).

        Returns:
            The event as stored (possibly aggregated, with its count), or None when the spam
            filter dropped it.
        """
        now = self._clock()
        if self._redactor is not None:
            message = self._redactor(message)
        obj_key = obj.correlation_key
        # The keys hold the enum members themselves: they hash and compare as their strings.

        # EventAggregate: group by everything but message and field path.
        group = (obj_key, type_, reason)
        record = self._aggregates.get(group)  # a hit is refreshed already
        if record is None or now - record.last > self._aggregate_interval:
            record = _AggregateRecord({}, now)
            self._aggregates.put(group, record)
        local_keys = record.local_keys
        local_keys[message] = None
        record.last = now
        key: tuple[object, ...] = (obj_key, obj.field_path, type_, reason, message)
        aggregated = len(local_keys) >= self._aggregate_max
        if aggregated:
            # Upstream pops an arbitrary key (Go map order); the oldest keeps this deterministic.
            del local_keys[next(iter(local_keys))]
            message = AGGREGATE_PREFIX + message
            key = ("aggregate", group)

        # eventObserve: identical events become one with a growing count.
        seen = self._observed.get(key)
        if seen is None:
            seen = _Observation(0, now, f"{obj.name}.{seconds_to_ns(now):x}")
            self._observed.put(key, seen)
        seen.count += 1

        if self._spam:
            bucket = self._buckets.get(obj_key)
            if bucket is None:
                bucket = TokenBucket(self._spam_qps, self._spam_burst)
                self._buckets.put(obj_key, bucket)
            if not bucket.try_accept(now):
                # Counted (statistics().spam_filtered), not logged: a node in ImagePullBackOff
                # drops two events per sync, and a log call per drop was a third of its cost.
                self._filtered += 1
                return None
        count, first, name = seen.count, seen.first_timestamp, seen.name

        stored = Event(
            involved_object=obj,
            type=type_,
            reason=reason,
            message=message,
            count=count,
            first_timestamp=first,
            last_timestamp=now,
            name=name,
            source_host=self.source_host,
        )
        self._store[key] = stored
        self._store.move_to_end(key)
        while len(self._store) > self._capacity:
            self._store.popitem(last=False)
            self._evicted += 1
        self._recorded += 1
        self._aggregated += aggregated
        for callback in tuple(self._subscribers):
            try:
                callback(stored)
            except Exception:
                # A broken log stream must not break pulls; cancellation is not an Exception.
                log.exception("events.subscriber_failed")
        return stored

    def events(self, namespace: str | None = None, name: str | None = None) -> list[Event]:
        """Stored events, least recently updated first, optionally for one namespace / object."""
        return [
            e
            for e in self._store.values()
            if (namespace is None or e.involved_object.namespace == namespace)
            and (name is None or e.involved_object.name == name)
        ]

    def __len__(self) -> int:
        return len(self._store)

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            stored=len(self._store),
            recorded=self._recorded,
            aggregated=self._aggregated,
            spam_filtered=self._filtered,
            evicted=self._evicted,
        )
