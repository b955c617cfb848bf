"""The modelled registry of virtual runs: the distribution API answered from a model, on any clock.

``bench --virtual`` runs every node's real engine and registry client on trio's ``MockClock``;
the only part swapped is the HTTP transport under the client (an ``httpx.AsyncBaseTransport``,
the seam the house style draws), so auth, retries, redirects, error mapping, the QPS bucket and
backoff are the code real runs use. :class:`ModelTransport` answers what the client asks:

- ``GET /v2/``, ``HEAD``/``GET`` of manifests by tag or digest, ``GET`` of blobs; unknown names
  are the registry's 404s (``NAME_UNKNOWN``, ``MANIFEST_UNKNOWN``, ``BLOB_UNKNOWN``);
- with ``auth`` a Bearer challenge, and a token endpoint (``GET /token``) on the same host whose
  tokens expire on the virtual clock;
- every request waits for one of ``concurrency`` slots (the registry's parallelism; a slot is
  held until the body is sent), then for a latency drawn from :class:`Latency`; a body moves at
  ``per_connection`` bytes per second at most, and all bodies take turns, chunk by chunk, on an
  egress of ``total`` bytes per second (:meth:`ModelTransport._transfer`), so a fleet shares the
  registry's egress fairly and never beyond it;
- the workload's fault plan is applied with :class:`~kubelet_sim.sim.faults.FaultDraws` in the
  order the fault proxy applies it (latency, outage, error answer, reset at once or after some
  bytes), and an outage resets bodies in flight. (``afterBytes`` counts body bytes here; the
  proxy counts the raw answer, headers included: a few hundred bytes apart.)

Manifests, configs and indexes are the real documents the workload's seed builds; layers are
stubs (:meth:`~kubelet_sim.sim.images.Blob.stub`): sizes and digests, never bytes (a body is zeros,
counted by the node's store against the size, not hashed). :class:`RegistryView` records what the
registry saw per second of virtual time: requests, bytes, errors, bodies and requests in flight,
tokens issued.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import httpx

from kubelet_sim.sim.faults import FaultDraws, FaultKind, FaultPlan
from kubelet_sim.sim.images import Blob

__all__ = [
    "MODEL_HOST",
    "Catalogue",
    "Latency",
    "ModelTransport",
    "NodeTransport",
    "RegistryModel",
    "RegistryView",
]

MODEL_HOST = "registry.virtual.invalid:5000"
"""The registry's name in a virtual run's image references (``.invalid``: it never resolves)."""

CHUNK = 1024 * 1024
"""Bytes per chunk of a real body (the client's write size: such chunks reach the store uncopied)."""
STUB_CHUNK = 16 * 1024 * 1024
"""Bytes per chunk of a stub layer's zeros, at most (fewer steps per layer; never copied)."""
MAX_CHUNK_SECONDS = 1.0
"""A chunk that would take longer than this at the current rate is split (stall timeouts)."""
Z99 = 2.326347874  # the standard normal's 99th percentile

_ZEROS = memoryview(bytes(STUB_CHUNK))
_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$")
_RESET = "[Errno 104] Connection reset by peer"


@dataclass(frozen=True, slots=True)
class Latency:
    """Time to a response's first byte: log-normal through ``median`` and ``p99`` (fixed at
    ``median`` when ``p99`` is None or equal)."""

    median: float = 0.003
    p99: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.median) and self.median >= 0):
            raise ValueError("latency median must be a non-negative duration")
        if self.p99 is not None and not (math.isfinite(self.p99) and self.p99 >= self.median):
            raise ValueError("latency p99 must not be less than the median")
        if self.p99 is not None and self.p99 > 0 and self.median == 0:
            raise ValueError("a log-normal latency needs a positive median (or give no p99)")

    def sample(self, rng: random.Random) -> float:
        if self.p99 is None or self.p99 == self.median:
            return self.median
        sigma = math.log(self.p99 / self.median) / Z99
        return self.median * math.exp(rng.gauss(0.0, sigma))

    def describe(self) -> str:
        if self.p99 is None or self.p99 == self.median:
            return f"{self.median * 1000:g} ms"
        return f"log-normal, median {self.median * 1000:g} ms, p99 {self.p99 * 1000:g} ms"


@dataclass(frozen=True, slots=True)
class RegistryModel:
    """How the modelled registry behaves (a workload's ``virtual.registry``)."""

    latency: Latency = field(default_factory=Latency)
    per_connection: float = 0.0
    """Bytes per second one body moves at, at most (0: no limit)."""
    total: float = 0.0
    """Bytes per second of the registry's egress, shared by every body in flight (0: no limit)."""
    concurrency: int = 0
    """Requests served at once; more wait for a slot (0: no limit)."""
    auth: bool = False
    """Answer ``/v2/`` requests without a token with a Bearer challenge (token auth)."""
    token_lifetime: float = 300.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.token_lifetime) and self.token_lifetime > 0):
            raise ValueError("tokenLifetime must be a positive, finite duration")

    def to_dict(self) -> dict[str, object]:
        return {
            "latency": self.latency.describe(),
            "per_connection_bytes_per_second": self.per_connection,
            "total_bytes_per_second": self.total,
            "concurrency": self.concurrency,
            "auth": "token" if self.auth else "none",
            "token_lifetime": self.token_lifetime,
        }


@dataclass(slots=True)
class Catalogue:
    """What the modelled registry holds: real manifests and configs, stub layers."""

    tags: dict[tuple[str, str], Blob] = field(default_factory=dict)  # (repo, tag) -> manifest
    manifests: dict[tuple[str, str], Blob] = field(default_factory=dict)  # (repo, digest)
    blobs: dict[tuple[str, str], Blob] = field(default_factory=dict)  # (repo, digest)

    @property
    def repositories(self) -> set[str]:
        return {repo for repo, _ in self.tags} | {repo for repo, _ in self.blobs}

    def add(self, repository: str, tag: str, top: Blob, manifests: Iterable[Blob],
            blobs: Iterable[Blob]) -> None:  # fmt: skip
        """``top`` (a manifest or an index) under ``tag``; its manifests and blobs by digest."""
        self.tags[(repository, tag)] = top
        for blob in (top, *manifests):
            self.manifests[(repository, str(blob.digest))] = blob
        for blob in blobs:
            self.blobs[(repository, str(blob.digest))] = blob


@dataclass(slots=True)
class RegistryView:
    """What the registry saw, per whole second of the schedule's time (virtual seconds)."""

    requests: Counter[int] = field(default_factory=Counter)
    bytes: Counter[int] = field(default_factory=Counter)
    errors: Counter[int] = field(default_factory=Counter)  # error answers and resets
    tokens: Counter[int] = field(default_factory=Counter)
    peak_in_flight: dict[int, int] = field(default_factory=dict)  # served or waiting for a slot
    peak_bodies: dict[int, int] = field(default_factory=dict)  # bodies sharing the egress
    answers: Counter[str] = field(default_factory=Counter)  # "GET 200", "HEAD reset", ...
    queued: int = 0  # requests that waited for a concurrency slot
    in_flight: int = 0
    bodies: int = 0

    def add_bytes(self, start: float, end: float, n: int) -> None:
        """``n`` bytes that moved from ``start`` to ``end`` (schedule seconds), spread over the
        seconds they moved in."""
        first, last = max(0, int(start)), max(0, int(end))
        if first == last or end <= start:
            self.bytes[last] += n
            return
        left = n
        for slot in range(first, last + 1):
            share = min(end, slot + 1) - max(start, slot)
            part = left if slot == last else min(left, round(n * share / (end - start)))
            if part > 0:
                self.bytes[slot] += part
                left -= part

    def peak(self, slot: int) -> None:
        if self.in_flight > self.peak_in_flight.get(slot, 0):
            self.peak_in_flight[slot] = self.in_flight
        if self.bodies > self.peak_bodies.get(slot, 0):
            self.peak_bodies[slot] = self.bodies

    def raw(self) -> dict[str, Any]:
        """The counts as a shard record keeps them: per-second dense lists (index = second,
        up to the last second with anything counted), the answers, the requests queued."""
        counters: dict[str, Counter[int] | dict[int, int]] = {
            "requests": self.requests, "bytes": self.bytes, "errors": self.errors,
            "tokens": self.tokens, "peak_in_flight": self.peak_in_flight,
            "peak_bodies": self.peak_bodies,
        }  # fmt: skip
        last = max((s for c in counters.values() for s in c), default=-1)
        return {
            "seconds": {k: [c.get(i, 0) for i in range(last + 1)] for k, c in counters.items()},
            "answers": dict(sorted(self.answers.items())),
            "queued": self.queued,
        }

    def series(self, step: int = 1) -> list[list[int]]:
        """:func:`series` of these counts."""
        return series(self.raw()["seconds"], step)

    def to_dict(self) -> dict[str, Any]:
        """:func:`totals` of these counts."""
        return totals(self.raw())


SERIES_COLUMNS = ("t", "requests", "bytes", "errors", "tokens", "peak_in_flight", "peak_bodies")


def series(seconds: dict[str, list[int]], step: int = 1, last: int = 0) -> list[list[int]]:
    """``[second, requests, bytes, errors, tokens, peak in flight, peak bodies]`` per ``step``
    seconds (sums; peaks are the step's maximum) of per-second counts (:meth:`RegistryView.raw`,
    or several shards' summed), every step up to the last second counted or ``last``."""
    end = max(last, len(seconds["requests"]) - 1)

    def at(key: str, i: int) -> int:
        values = seconds[key]
        return values[i] if i < len(values) else 0

    out = []
    for start in range(0, end + 1, step):
        slots = range(start, start + step)
        out.append(
            [start]
            + [sum(at(k, i) for i in slots) for k in ("requests", "bytes", "errors", "tokens")]
            + [max(at(k, i) for i in slots) for k in ("peak_in_flight", "peak_bodies")]
        )
    return out


def totals(raw: dict[str, Any]) -> dict[str, Any]:
    """The whole run's figures of a raw view (:meth:`RegistryView.raw`)."""
    sec = raw["seconds"]
    return {
        "requests": sum(sec["requests"]),
        "bytes": sum(sec["bytes"]),
        "errors": sum(sec["errors"]),
        "tokens_issued": sum(sec["tokens"]),
        "queued_for_a_slot": raw["queued"],
        "answers": raw["answers"],
        "peak_in_flight": max(sec["peak_in_flight"], default=0),
        "peak_bodies": max(sec["peak_bodies"], default=0),
    }


class ModelTransport(httpx.AsyncBaseTransport):
    """The registry as an httpx transport (see the module docstring); one for the whole fleet."""

    def __init__(
        self,
        catalogue: Catalogue,
        model: RegistryModel | None = None,
        faults: FaultPlan | None = None,
        *,
        seed: int = 0,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self.catalogue = catalogue
        self.model = model or RegistryModel()
        self.draws = FaultDraws(faults or FaultPlan(), clock)
        # Until the schedule starts (pre-pulls before time zero), no fault applies.
        self._scheduled = False
        self._no_faults = FaultDraws(FaultPlan(), clock)
        self.view = RegistryView()
        self.clock = clock
        self._random = random.Random(f"kubelet-sim-model:{seed}")  # noqa: S311 - not security
        self._seed = f"kubelet-sim-model:{seed}"
        self._asked: Counter[tuple[str, str, str]] = Counter()
        self._slots = anyio.Semaphore(self.model.concurrency) if self.model.concurrency else None
        self._tokens: dict[str, float] = {}  # token -> expiry (clock time)
        self._egress_free = -math.inf  # when the egress has sent every chunk reserved so far
        self._issued = 0

    def start_schedule(self, t0: float | None = None) -> None:
        """Make ``t0`` (default: now) time zero of the fault schedule and of the view; faults
        apply from then on."""
        self.draws.start_schedule(t0)
        self._scheduled = True

    @property
    def _dice(self) -> FaultDraws:
        return self.draws if self._scheduled else self._no_faults

    def _slot(self) -> int:
        return max(0, int(self.draws.elapsed()))

    # -- bandwidth ---------------------------------------------------------------------------

    def _chunk_bytes(self, n: int, bodies: int) -> int:
        """At most ``n`` bytes, and no more than one body moves in :data:`MAX_CHUNK_SECONDS`
        alone or, sharing the egress with ``bodies`` bodies, in one round of them all."""
        model = self.model
        if model.per_connection:
            n = min(n, max(1, int(model.per_connection * MAX_CHUNK_SECONDS)))
        if model.total:
            n = min(n, max(1, int(model.total * MAX_CHUNK_SECONDS / bodies)))
        return n

    def _transfer(self, n: int) -> tuple[float, float]:
        """Seconds until ``n`` more bytes of a body have gone out, and how long they moved.

        The egress is a link of ``total`` bytes per second that chunks reserve in turn (bodies
        take turns chunk by chunk, so they share it fairly and the total is never exceeded);
        one body moves no faster than ``per_connection``.
        """
        model = self.model
        now = self.clock()
        moving = n / model.per_connection if model.per_connection else 0.0
        done = now + moving
        if model.total:
            start = max(now, self._egress_free)
            self._egress_free = start + n / model.total
            moving = max(moving, n / model.total)
            done = max(done, self._egress_free)
        return done - now, moving

    def for_node(self, node: str) -> NodeTransport:
        """The transport one node's HTTP client sends through: this registry, with the node's
        name, so that each request's draws (latency, faults) come from a generator of its own,
        seeded from the node, the request and its repeat count: a run is repeatable whatever
        order the scheduler runs the fleet's requests in."""
        return NodeTransport(self, node)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.handle(request, "")

    async def handle(self, request: httpx.Request, node: str) -> httpx.Response:
        """Answer ``request`` from ``node`` (see the module docstring)."""
        view = self.view
        slot = self._slot()
        view.requests[slot] += 1
        view.in_flight += 1
        view.peak(slot)
        release = _Release(self)
        try:
            if self._slots is not None:
                if self._slots.value == 0:
                    view.queued += 1
                await self._slots.acquire()
                release.slot = True
            response = await self._answer(request, self._generator(request, node))
        except anyio.get_cancelled_exc_class():
            view.answers[f"{request.method} cancelled"] += 1  # the client gave up waiting
            release()
            raise
        except BaseException:
            release()
            raise
        if isinstance(response.stream, _Body):
            response.stream.release = release
        else:
            release()
        return response

    def _generator(self, request: httpx.Request, node: str) -> random.Random:
        """The request's own generator: the model's and the fault plan's seeds, node, method,
        URL and how many times this node asked for this URL (a retry draws anew)."""
        key = (node, request.method, str(request.url))
        self._asked[key] += 1
        seed = f"{self._seed}:{self.draws.plan.seed}:{node}:{key[1]}:{key[2]}:{self._asked[key]}"
        return random.Random(seed)  # noqa: S311 - fault and latency draws, not security

    async def _answer(self, request: httpx.Request, rng: random.Random) -> httpx.Response:
        method = request.method
        dice = self._dice
        delay = dice.latency(rng)
        if delay > 0:
            await anyio.sleep(delay)
        self._check_outage(method, request)
        error = dice.draw(FaultKind.ERRORS, rng)
        if error is not None:
            await anyio.sleep(self.model.latency.sample(rng))
            self._count(method, str(error.status), error=True)
            headers = {"Content-Type": "application/json"}
            if error.retry_after is not None:
                headers["Retry-After"] = str(round(error.retry_after))
            return _error(request, error.status, "UNAVAILABLE", "service unavailable", headers)
        reset = dice.draw(FaultKind.RESETS, rng)
        if reset is not None and reset.after_bytes == 0:
            self._count(method, "reset", error=True)
            raise httpx.ReadError(_RESET, request=request)
        await anyio.sleep(self.model.latency.sample(rng))
        self._check_outage(method, request)
        response = self._route(request)
        self._count(method, str(response.status_code), error=response.status_code >= 500)
        if isinstance(response.stream, _Body) and reset is not None:
            response.stream.reset_after = reset.after_bytes
        return response

    def _check_outage(self, method: str, request: httpx.Request) -> None:
        if self._dice.outage():
            self._count(method, "reset", error=True)
            raise httpx.ReadError(_RESET, request=request)

    def _count(self, method: str, answer: str, *, error: bool) -> None:
        self.view.answers[f"{method} {answer}"] += 1
        if error:
            self.view.errors[self._slot()] += 1

    # -- the distribution API ---------------------------------------------------------------

    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/token":
            return self._token(request)
        if self.model.auth and not self._authorized(request):
            return self._challenge(request, path)
        if path in ("/v2/", "/v2"):
            return _json(request, 200, {})
        if match := _MANIFEST.match(path):
            return self._manifest(request, match["name"], match["ref"])
        if match := _BLOB.match(path):
            return self._blob(request, match["name"], match["digest"])
        return _error(request, 404, "NOT_FOUND", "not found")

    def _manifest(self, request: httpx.Request, name: str, ref: str) -> httpx.Response:
        found = self.catalogue.manifests.get((name, ref)) or self.catalogue.tags.get((name, ref))
        if found is None:
            if name not in self.catalogue.repositories:
                return _error(request, 404, "NAME_UNKNOWN", "repository name not known")
            return _error(request, 404, "MANIFEST_UNKNOWN", "manifest unknown")
        headers = {
            "Content-Type": found.media_type,
            "Docker-Content-Digest": str(found.digest),
            "Content-Length": str(found.size),
        }
        return self._body(request, found, headers)

    def _blob(self, request: httpx.Request, name: str, digest: str) -> httpx.Response:
        found = self.catalogue.blobs.get((name, digest))
        if found is None:
            return _error(request, 404, "BLOB_UNKNOWN", "blob unknown to registry")
        headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "Content-Length": str(found.size),
            "Accept-Ranges": "bytes",
        }
        start = _range_start(request.headers.get("range", ""), found.size)
        if start:
            headers["Content-Length"] = str(found.size - start)
            headers["Content-Range"] = f"bytes {start}-{found.size - 1}/{found.size}"
            return self._body(request, found, headers, status=206, start=start)
        return self._body(request, found, headers)

    def _body(
        self,
        request: httpx.Request,
        blob: Blob,
        headers: dict[str, str],
        *,
        status: int = 200,
        start: int = 0,
    ) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(status, headers=headers, request=request)
        data = None if blob.is_stub else blob.data
        body = _Body(self, data, start, blob.size)
        return httpx.Response(status, headers=headers, stream=body, request=request)

    # -- token auth --------------------------------------------------------------------------

    def _authorized(self, request: httpx.Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expiry = self._tokens.get(token) if scheme.lower() == "bearer" else None
        return expiry is not None and self.clock() < expiry

    def _challenge(self, request: httpx.Request, path: str) -> httpx.Response:
        realm = f"{request.url.scheme}://{request.url.netloc.decode()}/token"
        parts = [f'realm="{realm}"', 'service="kubelet-sim-model"']
        match = _MANIFEST.match(path) or _BLOB.match(path)
        if match:
            parts.append(f'scope="repository:{match["name"]}:pull"')
        headers = {"WWW-Authenticate": "Bearer " + ",".join(parts)}
        return _error(request, 401, "UNAUTHORIZED", "authentication required", headers)

    def _token(self, request: httpx.Request) -> httpx.Response:
        self._issued += 1
        token = f"model-{self._issued}-{self._random.getrandbits(64):016x}"
        self._tokens[token] = self.clock() + self.model.token_lifetime
        self.view.tokens[self._slot()] += 1
        lifetime = round(self.model.token_lifetime)
        return _json(request, 200, {"token": token, "expires_in": lifetime})


class NodeTransport(httpx.AsyncBaseTransport):
    """One node's way into the shared modelled registry (:meth:`ModelTransport.for_node`)."""

    def __init__(self, model: ModelTransport, node: str) -> None:
        self.model = model
        self.node = node

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.model.handle(request, self.node)


class _Release:
    """Gives back what a request holds (its concurrency slot, its place in flight), once."""

    __slots__ = ("done", "model", "slot")

    def __init__(self, model: ModelTransport) -> None:
        self.model = model
        self.slot = False
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        self.model.view.in_flight -= 1
        if self.slot and self.model._slots is not None:
            self.model._slots.release()


class _Body(httpx.AsyncByteStream):
    """A body sent at the modelled rate: real bytes (``data``) or zeros, cut by resets and
    outages."""

    def __init__(self, model: ModelTransport, data: bytes | None, start: int, end: int) -> None:
        self.model = model
        self.data = data
        self.start = start
        self.end = end
        self.reset_after: int | None = None
        self.release: Callable[[], None] = lambda: None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        model = self.model
        view = model.view
        view.bodies += 1
        try:
            sent = 0
            offset = self.start
            step = CHUNK if self.data is not None else STUB_CHUNK
            while offset < self.end:
                view.peak(model._slot())
                n = model._chunk_bytes(min(step, self.end - offset), view.bodies)
                wait, moving = model._transfer(n)
                if wait > 0:
                    await anyio.sleep(wait)
                if model._dice.outage():
                    view.errors[model._slot()] += 1
                    raise httpx.ReadError(_RESET)
                end = model.draws.elapsed()
                if self.reset_after is not None and sent + n > self.reset_after:
                    n = self.reset_after - sent
                    if n:
                        view.add_bytes(end - moving, end, n)
                        yield self._chunk(offset, n)
                    view.errors[model._slot()] += 1
                    raise httpx.ReadError(_RESET)
                view.add_bytes(end - moving, end, n)
                yield self._chunk(offset, n)
                offset += n
                sent += n
        finally:
            view.bodies -= 1
            self.release()

    def _chunk(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + n]
        # A view of shared zeros: every consumer (httpx, the layer streamer, a counting sink)
        # takes only its length, and nothing is allocated or copied per chunk.
        return cast("bytes", _ZEROS[:n])

    async def aclose(self) -> None:
        self.release()


def _range_start(header: str, size: int) -> int:
    """The first byte of a ``bytes=N-`` or ``bytes=N-M`` range inside the blob (0: none)."""
    if not header.startswith("bytes="):
        return 0
    first = header[6:].split("-", 1)[0]
    if first.isdigit() and 0 < int(first) < size:
        return int(first)
    return 0


def _json(request: httpx.Request, status: int, doc: object,
          headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    body = json.dumps(doc).encode()
    head = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if request.method == "HEAD":
        return httpx.Response(status, headers=head | (headers or {}), request=request)
    return httpx.Response(status, headers=head | (headers or {}), content=body, request=request)


def _error(request: httpx.Request, status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    return _json(request, status, {"errors": [{"code": code, "message": message}]}, headers)
