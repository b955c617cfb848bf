"""Watch streams: ``GET ...?watch=true`` answers one JSON event per line until the client leaves
or ``timeoutSeconds`` pass.

From ``resourceVersion`` "" or "0" a watch starts with an ``ADDED`` event per object; from a
later one (kubectl lists, then watches from the list's version) it replays the store's changes
after it, or answers an ``ERROR`` event with a 410 ``Expired`` Status when its history no longer
reaches back (the client lists again). A watcher that cannot keep up is ended the same way,
never allowed to hold memory without bound. Asked for tables (``kubectl get -w``), each event's
object is a Table of one row; only the first carries the column definitions. Events are
watched by polling the node's recorder each second (it keeps no change history).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from kubelet_sim.k8s.store import Change, ChangeType, ObjectStore
from kubelet_sim.node.httpserver import ChunkSender, Request, Response
from kubelet_sim.node.kubeapi.resources import Resource
from kubelet_sim.node.kubeapi.tables import table as make_table
from kubelet_sim.node.kubeapi.wire import bad_request, dumps

__all__ = ["DEFAULT_TIMEOUT", "watch_stream"]

DEFAULT_TIMEOUT = 1800.0
"""A watch without ``timeoutSeconds`` ends after this (the API server's is 30-60 minutes)."""
BUFFER = 1024
"""Changes queued for one watcher before it is ended as too slow."""
EVENT_POLL = 1.0
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: "²" passes str.isdigit, not int()

_Docs = Callable[[str | None], list[dict[str, Any]]]


def _expired() -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "too old resource version",
            "reason": "Expired",
            "code": 410,
        },
    }


_ENCODED: OrderedDict[int, tuple[Mapping[str, Any], bytes]] = OrderedDict()
_ENCODED_KEPT = 256


def encoded(kind: str, doc: Mapping[str, Any]) -> bytes:
    """One change's event line, encoded once for every watcher that sends it. Keyed by the
    change's document object, which the cache holds, so its id cannot be reused meanwhile."""
    entry = _ENCODED.get(id(doc))
    if entry is not None and entry[0] is doc:
        return entry[1]
    line = dumps({"type": kind, "object": doc}) + b"\n"
    _ENCODED[id(doc)] = (doc, line)
    if len(_ENCODED) > _ENCODED_KEPT:
        _ENCODED.popitem(last=False)
    return line


def _key(doc: Mapping[str, Any]) -> tuple[str, str]:
    metadata = doc.get("metadata") or {}
    return (str(metadata.get("namespace", "")), str(metadata.get("name", "")))


def _version(doc: Mapping[str, Any]) -> int:
    value = str((doc.get("metadata") or {}).get("resourceVersion", "0"))
    return int(value) if value.isascii() and value.isdigit() else 0


def watch_stream(
    request: Request,
    resource: Resource,
    namespace: str | None,
    matches: Callable[[Mapping[str, Any]], bool],
    store: ObjectStore,
    *,
    events: _Docs | None,
    clock: Callable[[], float],
    table: bool,
) -> Response:
    """The streaming answer to a watch request.

    Raises:
        kubelet_sim.errors.APIStatusError: 400 for a ``resourceVersion`` or ``timeoutSeconds``
            that is no number.
    """
    since = request.param("resourceVersion") or ""
    if since not in ("", "0") and not _DIGITS.fullmatch(since):
        raise bad_request(f"resourceVersion must be a number, got {since[:40]!r}")
    timeout_text = request.param("timeoutSeconds")
    timeout = DEFAULT_TIMEOUT
    if timeout_text is not None:
        if not _DIGITS.fullmatch(timeout_text):
            raise bad_request(f"timeoutSeconds must be a number, got {timeout_text[:40]!r}")
        timeout = min(float(timeout_text), DEFAULT_TIMEOUT)
    include = request.param("includeObject") or "Metadata"
    first = True

    def line(kind: str, doc: Mapping[str, Any], shared: bool = False) -> bytes:
        nonlocal first
        obj: Mapping[str, Any] = doc
        if shared and not table:
            return encoded(kind, doc)
        if table:
            rv = str(doc.get("metadata", {}).get("resourceVersion", store.revision))
            obj = make_table(
                resource, [doc], clock(), resource_version=rv, include_object=include, headers=first
            )
            first = False
        return dumps({"type": kind, "object": obj}) + b"\n"

    known: set[tuple[str, str]] = set()
    """Objects whose matching this watch has decided (the rest are decided at their first
    change)."""
    matched: set[tuple[str, str]] = set()
    """What the client has been told matches: an object that stops matching is DELETED for it
    (and ADDED when it comes back), as the API server's watch cache says."""

    def event_type(change: Change) -> ChangeType | None:
        """The event this change is for this watch, or None when it is not for it."""
        if change.kind is not resource.kind or (
            namespace is not None and change.namespace != namespace
        ):
            return None
        key = (change.namespace, change.name)
        if key in known:
            was = key in matched
        else:
            # First seen in a replay, changed since the watch's resourceVersion: it existed
            # then unless this change made it, and matched then if its document matches now
            # (the old document is not kept). Its DELETED is never lost to the client.
            known.add(key)
            was = change.type is not ChangeType.ADDED and matches(change.document)
        if change.type is ChangeType.DELETED:
            matched.discard(key)
            return ChangeType.DELETED if was else None
        if matches(change.document):
            matched.add(key)
            return ChangeType.MODIFIED if was else ChangeType.ADDED
        if was:
            matched.discard(key)
            return ChangeType.DELETED
        return None

    async def send(change: Change, send_chunk: ChunkSender) -> None:
        kind = event_type(change)
        if kind is not None:
            shared = kind is change.type  # the same line for every watcher of this change
            await send_chunk(line(str(kind), change.document, shared=shared))

    async def changes(send_chunk: ChunkSender) -> None:
        queue, receive = anyio.create_memory_object_stream[Change](BUFFER)

        def on_change(change: Change) -> None:
            try:
                queue.send_nowait(change)
            except (anyio.WouldBlock, anyio.ClosedResourceError):
                queue.close()  # too slow: its stream ends with an Expired error

        unsubscribe = store.subscribe(on_change)
        try:
            with anyio.move_on_after(timeout):
                assert resource.kind is not None
                current = store.documents(resource.kind, namespace)
                if since in ("", "0"):
                    last = store.revision
                    for doc in current:
                        known.add(_key(doc))
                        if matches(doc):
                            matched.add(_key(doc))
                            await send_chunk(line(str(ChangeType.ADDED), doc))
                else:
                    last = int(since)
                    replay = store.changes_since(last)
                    if replay is None:
                        await send_chunk(dumps(_expired()) + b"\n")
                        return
                    # What matched at `since`: the objects unchanged since then that match now.
                    unchanged = [d for d in current if _version(d) <= last]
                    known.update(_key(d) for d in unchanged)
                    matched.update(_key(d) for d in unchanged if matches(d))
                    for change in replay:
                        last = change.resource_version
                        await send(change, send_chunk)
                async for change in receive:
                    if change.resource_version <= last:
                        continue
                    last = change.resource_version
                    await send(change, send_chunk)
                await send_chunk(dumps(_expired()) + b"\n")  # ended for falling behind
        finally:
            unsubscribe()
            queue.close()
            receive.close()

    async def recorder_events(send_chunk: ChunkSender) -> None:
        assert events is not None
        seen: dict[str, Any] = {}
        with anyio.move_on_after(timeout):
            initial = True
            while True:
                for doc in events(namespace):
                    key = doc["metadata"]["name"]
                    version = (doc.get("count"), doc.get("lastTimestamp"))
                    if seen.get(key) == version:
                        continue
                    kind = ChangeType.ADDED if key not in seen else ChangeType.MODIFIED
                    seen[key] = version
                    if (not initial or since in ("", "0")) and matches(doc):
                        await send_chunk(line(str(kind), doc))
                initial = False
                await anyio.sleep(EVENT_POLL)

    writer = recorder_events if resource.kind is None else changes
    return Response(200, b"", "application/json", stream=writer)
