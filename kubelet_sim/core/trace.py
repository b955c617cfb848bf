"""What one pull is doing now and what it did: its step, its layers' bytes, every host it asked.

The kubelet keeps only a pull's last error; ``describe`` and ``explain`` need more: whether a
pull waits for the puller or is under way, which request it waits on and since when (a registry
that never answers holds a slot without a word in any log), how far its layers are, and each
host it tried with the answer. A :class:`PullTrace` is made by the image manager when the pull
is asked for and filled by the layers below, which find it through :data:`CURRENT` (a context
variable, set by the puller around the runtime call, so the registry client needs no new
argument and tasks it starts inherit it). Nothing here holds a credential: a host try records
only whether credentials went with it.
"""

from __future__ import annotations

import itertools
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["CURRENT", "HOST_TRIES", "HostTry", "PullTrace", "Step"]

HOST_TRIES = 32
"""Host tries kept per pull (a pull of many layers through a dead mirror tries it for each)."""


_SESSIONS = itertools.count(1)


class Step:
    """The steps a pull goes through, as ``describe`` words them."""

    WAITING = "waiting for a pull slot"
    RESOLVING = "resolving"
    DOWNLOADING = "downloading"
    COMMITTING = "committing"
    SHARING = "waiting for an identical pull in flight"


@dataclass(frozen=True, slots=True)
class HostTry:
    """One request on one host: what for, whether it went to a mirror or the upstream, whether
    credentials went with it, how long it took, and the error (empty: it answered)."""

    what: str
    host: str
    role: str
    with_credentials: bool
    seconds: float
    status: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(slots=True)
class PullTrace:
    """One pull under way (see the module docstring); times are the engine's clock."""

    since: float
    """When the pull was asked for (it then waits for the serial queue or a parallel slot)."""
    image: str = ""
    """The container's image as the pod names it."""
    step: str = Step.WAITING
    pulling: float | None = None
    """When the puller started it (a token taken from the QPS throttle)."""
    credential: int = 0
    """Which of the matching credentials is being tried (1-based; 0: anonymous)."""
    credentials: int = 0
    layers: int = 0
    layers_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    last_byte: float | None = None
    """When the last layer byte arrived."""
    config_pending: bool = False
    """The image config is being fetched (beside the layers, which commit only after it)."""
    hosts: list[HostTry] = field(default_factory=list)
    session: int = field(default_factory=lambda: next(_SESSIONS))
    """This pull's own number: containerd authorizes each pull afresh (a resolver and an
    authorizer per ``PullImage``), so registry auth is cached per session (``authPerPull``)."""
    leader: PullTrace | None = None
    """While :attr:`step` is :attr:`Step.SHARING`: the trace of the identical pull it waits
    for, when that pull has one."""
    _received: dict[str, int] = field(default_factory=dict, repr=False)
    _open: dict[int, tuple[str, str, float]] = field(default_factory=dict, repr=False)
    _keys: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def started(self, now: float) -> None:
        self.pulling = now
        self.step = Step.RESOLVING

    @property
    def request(self) -> tuple[str, str, float] | None:
        """The request waited on longest of those open (the config and layers go out side
        by side): what, host, since when; None between requests."""
        return min(self._open.values(), key=lambda r: r[2], default=None)

    def trying(self, what: str, host: str, now: float) -> int:
        """A request goes out; the key to give :meth:`tried` when it is answered."""
        key = next(self._keys)
        self._open[key] = (what, host, now)
        return key

    def tried(self, attempt: HostTry, key: int) -> None:
        """The request ``key`` (from :meth:`trying`) was answered or failed."""
        self._open.pop(key, None)
        if len(self.hosts) < HOST_TRIES:
            self.hosts.append(attempt)

    def downloading(self, sizes: dict[str, int], *, config: bool = False) -> None:
        """The manifest is known: ``sizes`` of its distinct layers by digest; ``config`` when
        the image config is still to be fetched (beside them)."""
        self.step = Step.DOWNLOADING
        self.config_pending = config
        self.layers = len(sizes)
        self.layers_done = 0
        self.bytes_total = sum(sizes.values())
        self.bytes_done = 0
        self._received = {}

    def received(self, digest: str, received: int, now: float) -> None:
        """``received`` bytes of layer ``digest`` so far."""
        before = self._received.get(digest, 0)
        self._received[digest] = received
        self.bytes_done += received - before
        self.last_byte = now

    def layer_done(self) -> None:
        self.layers_done += 1

    def config_checked(self) -> None:
        """The image config arrived and shows an image to run."""
        self.config_pending = False

    def committing(self) -> None:
        self.step = Step.COMMITTING

    def describe(self) -> str:
        """The step in words: ``downloading layer 2/3 (1.2 MB of 4.0 MB)``."""
        if self.step == Step.DOWNLOADING:
            current = min(self.layers_done + 1, self.layers)
            config = "fetching the image config, " if self.config_pending else ""
            return (
                f"{config}downloading layer {current}/{self.layers} "
                f"({_size(self.bytes_done)} of {_size(self.bytes_total)})"
            )
        if self.step == Step.SHARING and self.leader is not None:
            return f"{Step.SHARING} ({self.leader.describe()})"
        if self.step == Step.RESOLVING and self.credentials > 1:
            return f"resolving (credential {self.credential} of {self.credentials})"
        return self.step


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


CURRENT: ContextVar[PullTrace | None] = ContextVar("kubelet_sim_pull_trace", default=None)
"""The trace of the pull the current task works for, if any."""
