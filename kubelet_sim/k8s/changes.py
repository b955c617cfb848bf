"""The object store's change log: every write as a :class:`Change`, to subscribers (the API's
watches) and in a bounded history a watch can resume from (older: 410 Expired, list again)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubelet_sim.k8s.objects import Kind

__all__ = ["HISTORY", "Change", "ChangeLog", "ChangeType"]


class ChangeType(StrEnum):
    """A watch event's ``type``."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class Change:
    """One write, as a watch streams it: the object as served after it (before it, deleted)."""

    type: ChangeType
    kind: Kind
    namespace: str
    name: str
    resource_version: int
    document: Mapping[str, Any]


HISTORY = 4096
"""Changes kept for watches that resume from a resourceVersion (older ones answer 410 Gone)."""


class ChangeLog:
    """Changes in resourceVersion order: published to subscribers, the last ``size`` kept."""

    def __init__(self, size: int = HISTORY) -> None:
        self._history: deque[Change] = deque(maxlen=size)
        self._subscribers: list[Callable[[Change], None]] = []

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, change: Change) -> None:
        self._history.append(change)
        for subscriber in list(self._subscribers):
            subscriber(change)

    def subscribe(self, subscriber: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``subscriber`` with every change from now on; returns the unsubscribe."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def since(self, resource_version: int, latest: int) -> list[Change] | None:
        """The changes after ``resource_version`` (``latest`` is the store's revision); None
        when the history no longer reaches back that far."""
        if resource_version >= latest:
            return []
        if not self._history or self._history[0].resource_version > resource_version + 1:
            return None
        return [c for c in self._history if c.resource_version > resource_version]
