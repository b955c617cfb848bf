"""The modelled registry of virtual runs (``sim/model.py``) on trio's MockClock.

Every request goes through a real ``httpx.AsyncClient(transport=ModelTransport(...))`` (and, for
whole pulls, the project's own ``RegistryClient``/``Transport``), so what is checked is what a
node's HTTP client sees: the distribution API answered from a catalogue, the latency, bandwidth
and concurrency model, token auth on the virtual clock, the workload's fault plan, and what the
registry's view counts. The clock jumps whenever every task waits, so times are exact.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import trio.testing

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.errors import DigestMismatchError
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.transport import Transport
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.sim.faults import FaultKind, FaultPlan, FaultWindow
from kubelet_sim.sim.images import Blob, build_image, build_index, random_bytes
from kubelet_sim.sim.model import (
    CHUNK,
    MODEL_HOST,
    STUB_CHUNK,
    Catalogue,
    Latency,
    ModelTransport,
    RegistryModel,
    RegistryView,
)
from kubelet_sim.store import MemoryStore

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
BASE = "http://registry.test"
REPO = "team/app"
MULTI = "team/multi"

IMAGE = build_image("model-test", layer_sizes=(3 * MiB, 5000), compress=False, stub=True)
INDEX = build_index(
    [
        build_image("model-multi", "linux/amd64", (1000,), stub=True),
        build_image("model-multi", "linux/arm64", (2000,), stub=True),
    ]
)
BIG = Blob.stub(mt.OCI_LAYER, "big", 4 * MiB)  # sizes chosen so that rates divide them
SMALL = Blob.stub(mt.OCI_LAYER, "small", 5000)
HUGE = Blob.stub(mt.OCI_LAYER, "huge", 40 * MiB)
REAL = Blob(mt.OCI_LAYER, random_bytes("model-real", 3 * MiB + 17))  # a blob with real bytes
UNKNOWN = "sha256:" + "0" * 64
QUIET = RegistryModel(latency=Latency(0.0))  # no latency, no limits: only what a test adds
LINUX = parse_platform("linux/amd64")


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """Virtual time: every duration below is the model's, exactly."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def catalogue() -> Catalogue:
    cat = Catalogue()
    cat.add(REPO, "v1", IMAGE.manifest, [], [*IMAGE.blobs(), BIG, SMALL, HUGE, REAL])
    children = [image.manifest for image in INDEX.images]
    blobs = [blob for image in INDEX.images for blob in image.blobs()]
    cat.add(MULTI, "v2", INDEX.index, children, blobs)
    return cat


def blob_path(blob: Blob, repo: str = REPO) -> str:
    return f"/v2/{repo}/blobs/{blob.digest}"


def error_code(response: httpx.Response) -> str:
    doc: dict[str, Any] = json.loads(response.content)
    code: str = doc["errors"][0]["code"]
    return code


@asynccontextmanager
async def serving(
    model: RegistryModel = QUIET, *windows: FaultWindow, seed: int = 0
) -> AsyncIterator[tuple[ModelTransport, httpx.AsyncClient]]:
    """A modelled registry (schedule started now) and an HTTP client sending through it."""
    transport = ModelTransport(catalogue(), model, FaultPlan(windows, seed=seed))
    transport.start_schedule()
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield transport, client


async def read_body(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> tuple[bytes, httpx.ReadError | None]:
    """The body of a streamed GET as far as it came, and the read error that cut it, if any."""
    got: list[bytes] = []
    try:
        async with client.stream("GET", path, headers=headers) as response:
            assert response.status_code in (200, 206)
            async for chunk in response.aiter_raw():
                got.append(bytes(chunk))
    except httpx.ReadError as exc:
        return b"".join(got), exc
    return b"".join(got), None


async def timed_get(client: httpx.AsyncClient, path: str, **kw: Any) -> tuple[float, int, bytes]:
    """``(seconds, status, body)`` of one GET read whole."""
    start = anyio.current_time()
    response = await client.get(path, **kw)
    return anyio.current_time() - start, response.status_code, response.content


# -- the distribution API ---------------------------------------------------------------------


async def test_v2_ping_is_an_empty_json_document() -> None:
    async with serving() as (_, client):
        response = await client.get("/v2/")
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("repo", "ref", "blob"),
    [
        pytest.param(REPO, "v1", IMAGE.manifest, id="manifest-by-tag"),
        pytest.param(REPO, str(IMAGE.manifest.digest), IMAGE.manifest, id="manifest-by-digest"),
        pytest.param(MULTI, "v2", INDEX.index, id="index-by-tag"),
        pytest.param(
            MULTI, str(INDEX.images[1].manifest.digest), INDEX.images[1].manifest, id="child"
        ),
    ],
)
async def test_manifest_head_and_get(repo: str, ref: str, blob: Blob) -> None:
    async with serving() as (model, client):
        head = await client.head(f"/v2/{repo}/manifests/{ref}")
        get = await client.get(f"/v2/{repo}/manifests/{ref}")
    for response in (head, get):
        assert response.status_code == 200
        assert response.headers["docker-content-digest"] == str(blob.digest)
        assert response.headers["content-type"] == blob.media_type
        assert response.headers["content-length"] == str(blob.size)
    assert head.content == b""
    assert get.content == blob.data  # the real document, byte for byte
    assert Digest.from_bytes(get.content) == blob.digest
    assert model.view.answers == {"HEAD 200": 1, "GET 200": 1}


async def test_manifest_lists_the_stub_layers_with_their_declared_sizes() -> None:
    async with serving() as (_, client):
        doc = (await client.get(f"/v2/{REPO}/manifests/v1")).json()
    assert [layer["size"] for layer in doc["layers"]] == [layer.size for layer in IMAGE.layers]
    assert [layer["digest"] for layer in doc["layers"]] == [
        str(layer.digest) for layer in IMAGE.layers
    ]
    assert doc["config"]["digest"] == str(IMAGE.config.digest)


async def test_config_blob_is_its_real_bytes() -> None:
    async with serving() as (_, client):
        response = await client.get(blob_path(IMAGE.config))
    assert response.status_code == 200
    assert response.content == IMAGE.config.data
    assert json.loads(response.content)["rootfs"]["type"] == "layers"
    assert response.headers["docker-content-digest"] == str(IMAGE.config.digest)
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == str(IMAGE.config.size)
    assert response.headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize(
    ("blob", "model", "chunks"),
    [
        pytest.param(SMALL, QUIET, [5000], id="small-one-chunk"),
        pytest.param(HUGE, QUIET, [STUB_CHUNK, STUB_CHUNK, 8 * MiB], id="stub-chunks-16MiB"),
        pytest.param(
            BIG,
            RegistryModel(latency=Latency(0.0), per_connection=MiB),
            [MiB] * 4,
            id="split-to-one-second-at-the-rate",
        ),
        pytest.param(REAL, QUIET, [CHUNK, CHUNK, CHUNK, 17], id="real-bytes-in-1MiB-chunks"),
    ],
)
async def test_layer_body_chunks(blob: Blob, model: RegistryModel, chunks: list[int]) -> None:
    async with serving(model) as (transport, client):
        received: list[bytes] = []
        async with client.stream("GET", blob_path(blob)) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(blob.size)
            async for chunk in response.aiter_raw():
                received.append(bytes(chunk))
    assert [len(c) for c in received] == chunks
    body = b"".join(received)
    assert len(body) == blob.size
    if blob.is_stub:
        assert body == bytes(blob.size)  # zeros: a stub layer has no bytes of its own
        assert Digest.from_bytes(body) != blob.digest
    else:
        assert body == blob.data
    assert transport.view.to_dict()["bytes"] == blob.size


@pytest.mark.parametrize(
    ("header", "status", "content_range", "start"),
    [
        pytest.param("bytes=1000-", 206, "bytes 1000-4999/5000", 1000, id="open-range"),
        pytest.param("bytes=1000-4999", 206, "bytes 1000-4999/5000", 1000, id="closed-range"),
        pytest.param("bytes=4999-4999", 206, "bytes 4999-4999/5000", 4999, id="last-byte"),
        pytest.param("bytes=0-", 200, None, 0, id="from-zero-is-the-whole-blob"),
        pytest.param("bytes=5000-", 200, None, 0, id="past-the-end-is-the-whole-blob"),
        pytest.param("items=10-", 200, None, 0, id="other-unit-ignored"),
        pytest.param(None, 200, None, 0, id="no-range"),
    ],
)
@pytest.mark.parametrize("blob", [pytest.param(SMALL, id="stub"), pytest.param(None, id="real")])
async def test_range_requests(
    header: str | None, status: int, content_range: str | None, start: int, blob: Blob | None
) -> None:
    target = blob or Blob(mt.OCI_LAYER, random_bytes("ranged", 5000))
    cat = catalogue()
    cat.blobs[(REPO, str(target.digest))] = target
    model = ModelTransport(cat, QUIET)
    headers = {"Range": header} if header else {}
    async with httpx.AsyncClient(transport=model, base_url=BASE) as client:
        response = await client.get(blob_path(target), headers=headers)
    assert response.status_code == status
    assert response.headers.get("content-range") == content_range
    assert response.headers["content-length"] == str(5000 - start)
    expected = bytes(5000) if target.is_stub else target.data
    assert response.content == expected[start:]


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        pytest.param("GET", "/v2/team/nope/manifests/v1", "NAME_UNKNOWN", id="unknown-repo"),
        pytest.param("GET", f"/v2/{REPO}/manifests/v9", "MANIFEST_UNKNOWN", id="unknown-tag"),
        pytest.param(
            "GET", f"/v2/{REPO}/manifests/{UNKNOWN}", "MANIFEST_UNKNOWN", id="unknown-digest"
        ),
        pytest.param(
            "GET", f"/v2/{MULTI}/manifests/{IMAGE.manifest.digest}", "MANIFEST_UNKNOWN",
            id="manifest-of-another-repo",
        ),
        pytest.param("GET", f"/v2/{REPO}/blobs/{UNKNOWN}", "BLOB_UNKNOWN", id="unknown-blob"),
        pytest.param(
            "GET", blob_path(BIG, MULTI), "BLOB_UNKNOWN", id="blob-of-another-repo"
        ),
        pytest.param("GET", f"/v2/{REPO}/tags/list", "NOT_FOUND", id="unknown-route"),
        pytest.param("HEAD", f"/v2/{REPO}/manifests/v9", None, id="head-has-no-body"),
    ],
)  # fmt: skip
async def test_unknown_names_are_404_with_the_registry_error_code(
    method: str, path: str, code: str | None
) -> None:
    async with serving() as (model, client):
        response = await client.request(method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    if code is None:
        assert response.content == b""
        assert int(response.headers["content-length"]) > 0  # the body a GET would have had
    else:
        assert error_code(response) == code
        assert response.headers["content-length"] == str(len(response.content))
    assert model.view.answers == {f"{method} 404": 1}
    assert sum(model.view.errors.values()) == 0  # a 404 is an answer, not a registry error


# -- latency ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latency", "windows", "seconds"),
    [
        pytest.param(Latency(0.25), (), 0.25, id="fixed"),
        pytest.param(Latency(0.5, 0.5), (), 0.5, id="p99-equal-to-median-is-fixed"),
        pytest.param(Latency(0.0), (), 0.0, id="none"),
        pytest.param(
            Latency(0.25), (FaultWindow(FaultKind.LATENCY, delay=0.5),), 0.75, id="plus-fault"
        ),
        pytest.param(
            Latency(0.125),
            (
                FaultWindow(FaultKind.LATENCY, delay=0.5),
                FaultWindow(FaultKind.LATENCY, delay=1.0),
            ),
            1.625,
            id="fault-windows-add-up",
        ),
        pytest.param(
            Latency(0.25), (FaultWindow(FaultKind.LATENCY, start=10, delay=5),), 0.25,
            id="fault-not-yet-active",
        ),
    ],
)  # fmt: skip
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_latency_is_exact_in_virtual_time(
    latency: Latency, windows: tuple[FaultWindow, ...], seconds: float, method: str
) -> None:
    async with serving(RegistryModel(latency=latency), *windows) as (_, client):
        start = anyio.current_time()
        response = await client.request(method, f"/v2/{REPO}/manifests/v1")
        elapsed = anyio.current_time() - start
    assert response.status_code == 200
    assert elapsed == seconds


def test_lognormal_latency_goes_through_median_and_p99() -> None:
    latency = Latency(0.004, 0.040)
    rng = random.Random(5)
    samples = sorted(latency.sample(rng) for _ in range(40_000))
    assert statistics.median(samples) == pytest.approx(0.004, rel=0.03)
    assert samples[int(0.99 * len(samples))] == pytest.approx(0.040, rel=0.08)
    assert min(samples) > 0
    assert latency.describe() == "log-normal, median 4 ms, p99 40 ms"
    assert Latency(0.25).describe() == "250 ms"
    with pytest.raises(ValueError, match="positive median"):
        Latency(0.0, 0.1)  # a log-normal through a zero median has no spread to draw


@pytest.mark.parametrize(
    ("median", "p99", "message"),
    [
        pytest.param(-0.001, None, "non-negative", id="negative-median"),
        pytest.param(float("nan"), None, "non-negative", id="nan-median"),
        pytest.param(float("inf"), None, "non-negative", id="infinite-median"),
        pytest.param(0.1, 0.05, "p99 must not be less than the median", id="p99-below-median"),
        pytest.param(0.1, float("inf"), "p99", id="infinite-p99"),
    ],
)
def test_latency_validation(median: float, p99: float | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Latency(median, p99)


async def test_same_seed_draws_the_same_latencies() -> None:
    model = RegistryModel(latency=Latency(0.01, 0.2))

    async def run(seed: int) -> list[float]:
        transport = ModelTransport(catalogue(), model, seed=seed)
        times = []
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            for _ in range(5):
                elapsed, status, _body = await timed_get(client, f"/v2/{REPO}/manifests/v1")
                assert status == 200
                times.append(elapsed)
        return times

    first, again, other = await run(3), await run(3), await run(4)
    assert first == pytest.approx(again, abs=1e-9)
    assert first != pytest.approx(other, abs=1e-6)
    assert len(set(first)) == 5  # drawn per request, not once


# -- bandwidth and concurrency ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("blob", "per_connection", "total", "seconds"),
    [
        pytest.param(BIG, MiB, 0, 4.0, id="4MiB-at-1MiB/s"),
        pytest.param(BIG, 2 * MiB, 0, 2.0, id="4MiB-at-2MiB/s"),
        pytest.param(BIG, 8 * MiB, 0, 0.5, id="4MiB-at-8MiB/s"),
        pytest.param(BIG, 0, 2 * MiB, 2.0, id="total-only"),
        pytest.param(BIG, MiB, 4 * MiB, 4.0, id="per-connection-below-total"),
        pytest.param(BIG, 4 * MiB, MiB, 4.0, id="total-below-per-connection"),
        pytest.param(HUGE, 0, 0, 0.0, id="no-limit"),
        pytest.param(REAL, MiB, 0, (3 * MiB + 17) / MiB, id="real-bytes"),
    ],
)
async def test_body_takes_size_over_rate(
    blob: Blob, per_connection: int, total: int, seconds: float
) -> None:
    model = RegistryModel(latency=Latency(0.0), per_connection=per_connection, total=total)
    async with serving(model) as (_, client):
        elapsed, status, body = await timed_get(client, blob_path(blob))
    assert status == 200
    assert len(body) == blob.size
    assert elapsed == pytest.approx(seconds, abs=1e-9)


async def test_latency_and_bandwidth_add_up() -> None:
    model = RegistryModel(latency=Latency(0.25), per_connection=2 * MiB)
    async with serving(model) as (_, client):
        elapsed, _status, _body = await timed_get(client, blob_path(BIG))
    assert elapsed == 2.25


async def concurrent_gets(client: httpx.AsyncClient, paths: list[str]) -> list[float]:
    """The seconds each of ``paths`` took when all are asked at once, in the order given."""
    done: dict[int, float] = {}
    start = anyio.current_time()

    async def one(i: int, path: str) -> None:
        response = await client.get(path)
        assert response.status_code == 200
        done[i] = anyio.current_time() - start

    async with anyio.create_task_group() as tg:
        for i, path in enumerate(paths):
            tg.start_soon(one, i, path)
    return [done[i] for i in range(len(paths))]


async def test_two_bodies_share_the_total_egress() -> None:
    model = RegistryModel(latency=Latency(0.0), total=MiB)
    async with serving(model) as (_, client):
        alone = (await concurrent_gets(client, [blob_path(BIG)]))[0]
    async with serving(model) as (transport, client):
        shared = await concurrent_gets(client, [blob_path(BIG)] * 2)
    assert alone == 4.0
    for seconds in shared:
        assert seconds == pytest.approx(2 * alone, rel=0.15)  # each about twice as long
    assert transport.view.to_dict()["peak_bodies"] == 2
    assert transport.view.to_dict()["bytes"] == 2 * BIG.size


async def test_per_connection_limit_is_not_shared() -> None:
    model = RegistryModel(latency=Latency(0.0), per_connection=MiB)
    async with serving(model) as (_, client):
        times = await concurrent_gets(client, [blob_path(BIG)] * 3)
    assert times == [4.0, 4.0, 4.0]


async def test_shared_egress_never_exceeds_the_total() -> None:
    model = RegistryModel(latency=Latency(0.0), total=MiB)
    async with serving(model) as (transport, client):
        times = await concurrent_gets(client, [blob_path(BIG)] * 2)
    assert max(transport.view.bytes.values()) <= MiB
    # 8 MiB through 1 MiB/s: the first body moves 1 MiB alone, then both take turns in half-MiB
    # chunks; the second ends when all 8 MiB are through.
    assert sorted(times) == [7.0, 2 * BIG.size / MiB]


@pytest.mark.parametrize(
    ("concurrency", "times", "queued"),
    [
        pytest.param(1, [4.0, 8.0], 1, id="one-slot-second-waits"),
        pytest.param(2, [4.0, 4.0], 0, id="two-slots"),
        pytest.param(0, [4.0, 4.0], 0, id="no-limit"),
    ],
)
async def test_concurrency_slots(concurrency: int, times: list[float], queued: int) -> None:
    model = RegistryModel(latency=Latency(0.0), per_connection=MiB, concurrency=concurrency)
    async with serving(model) as (transport, client):
        got = await concurrent_gets(client, [blob_path(BIG)] * 2)
    assert sorted(got) == times
    assert transport.view.queued == queued
    assert transport.view.in_flight == 0
    assert transport.view.bodies == 0


async def test_three_requests_on_one_slot_run_one_after_another() -> None:
    model = RegistryModel(latency=Latency(0.5), per_connection=MiB, concurrency=1)
    async with serving(model) as (transport, client):
        got = await concurrent_gets(client, [blob_path(BIG)] * 3)
    assert sorted(got) == [4.5, 9.0, 13.5]  # the slot is held until the body is sent
    assert transport.view.queued == 2


@pytest.mark.parametrize(
    "first",
    [
        pytest.param("closed-unread", id="body-closed-unread"),
        pytest.param("404", id="error-answer"),
        pytest.param("reset", id="reset-at-once"),
    ],
)
async def test_a_slot_is_given_back_however_a_request_ends(first: str) -> None:
    model = RegistryModel(latency=Latency(0.0), per_connection=MiB, concurrency=1)
    windows = (FaultWindow(FaultKind.RESETS, end=1.0),) if first == "reset" else ()
    async with serving(model, *windows) as (transport, client):
        if first == "closed-unread":
            async with client.stream("GET", blob_path(BIG)) as response:
                assert response.status_code == 200
        elif first == "404":
            assert (await client.get(blob_path(BIG, MULTI))).status_code == 404
        else:
            with pytest.raises(httpx.ReadError):
                await client.get(blob_path(BIG))
            await anyio.sleep(1.0)  # out of the resets window, on the virtual clock
        with anyio.fail_after(60):
            elapsed, status, _body = await timed_get(client, blob_path(BIG))
    assert (status, elapsed) == (200, 4.0)
    assert transport.view.queued == 0
    assert transport.view.in_flight == 0


# -- token auth -------------------------------------------------------------------------------

AUTH = RegistryModel(latency=Latency(0.0), auth=True, token_lifetime=60.0)


async def get_token(client: httpx.AsyncClient) -> str:
    response = await client.get("/token", params={"service": "kubelet-sim-model"})
    assert response.status_code == 200
    doc = response.json()
    assert doc["expires_in"] == 60
    token: str = doc["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("path", "challenge"),
    [
        pytest.param(
            f"/v2/{REPO}/manifests/v1",
            'Bearer realm="http://registry.test/token",service="kubelet-sim-model",'
            'scope="repository:team/app:pull"',
            id="manifest",
        ),
        pytest.param(
            blob_path(BIG, MULTI),
            'Bearer realm="http://registry.test/token",service="kubelet-sim-model",'
            'scope="repository:team/multi:pull"',
            id="blob",
        ),
        pytest.param(
            "/v2/",
            'Bearer realm="http://registry.test/token",service="kubelet-sim-model"',
            id="ping-has-no-scope",
        ),
    ],
)
async def test_without_a_token_the_answer_is_a_bearer_challenge(path: str, challenge: str) -> None:
    async with serving(AUTH) as (model, client):
        response = await client.get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge
    assert error_code(response) == "UNAUTHORIZED"
    assert model.view.to_dict()["tokens_issued"] == 0


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer model-1-0000000000000000", id="unknown-token"),
        pytest.param("Basic dTpw", id="basic"),
        pytest.param("Bearer", id="empty-bearer"),
    ],
)
async def test_only_an_issued_token_is_accepted(authorization: str) -> None:
    async with serving(AUTH) as (_, client):
        response = await client.get(
            f"/v2/{REPO}/manifests/v1", headers={"Authorization": authorization}
        )
    assert response.status_code == 401


async def test_a_token_works_until_its_lifetime_on_the_virtual_clock() -> None:
    async with serving(AUTH) as (model, client):
        issued_at = anyio.current_time()
        token = await get_token(client)
        path = f"/v2/{REPO}/manifests/v1"
        assert (await client.get(path, headers=bearer(token))).status_code == 200
        await anyio.sleep(59.5)
        assert (await client.head(path, headers=bearer(token))).status_code == 200
        await anyio.sleep(issued_at + 60.0 - anyio.current_time())
        expired = await client.get(path, headers=bearer(token))
        assert expired.status_code == 401
        assert "scope=" in expired.headers["www-authenticate"]
        fresh = await get_token(client)
        assert fresh != token
        assert (await client.get(path, headers=bearer(fresh))).status_code == 200
    totals = model.view.to_dict()
    assert totals["tokens_issued"] == 2
    assert totals["answers"] == {"GET 200": 4, "HEAD 200": 1, "GET 401": 1}


async def test_registry_client_answers_the_challenge_and_pulls() -> None:
    image = build_image("auth-pull", layer_sizes=(MiB, 2000), compress=False, stub=True)
    cat = Catalogue()
    cat.add(REPO, "v1", image.manifest, [], image.blobs())
    model = ModelTransport(cat, AUTH)
    async with httpx.AsyncClient(transport=model) as http:
        client = RegistryClient(Transport(http=http))
        service = ImageService(client, MemoryStore(hash_layers=False), platform=LINUX)
        pulled = await service.pull_image(parse_normalized(f"{MODEL_HOST}/{REPO}:v1"))
    assert pulled.manifest_digest == str(image.manifest.digest)
    totals = model.view.to_dict()
    assert totals["tokens_issued"] == 1  # one token for the repository, reused
    assert totals["answers"]["HEAD 401"] == 1  # the first request met the challenge
    assert "GET 401" not in totals["answers"]


# -- faults -----------------------------------------------------------------------------------


async def test_outage_resets_requests_until_the_window_ends() -> None:
    outage = FaultWindow(FaultKind.OUTAGE, start=1.0, end=3.0)
    path = f"/v2/{REPO}/manifests/v1"
    async with serving(QUIET, outage) as (model, client):
        assert (await client.get(path)).status_code == 200
        await anyio.sleep(1.0)
        with pytest.raises(httpx.ReadError, match="Connection reset by peer"):
            await client.get(path)
        await anyio.sleep(1.5)
        with pytest.raises(httpx.ReadError):
            await client.head(path)
        await anyio.sleep(0.5)
        assert (await client.get(path)).status_code == 200
    assert model.view.answers == {"GET 200": 2, "GET reset": 1, "HEAD reset": 1}
    assert dict(model.view.errors) == {1: 1, 2: 1}
    assert dict(model.view.requests) == {0: 1, 1: 1, 2: 1, 3: 1}


async def test_an_outage_that_starts_after_the_latency_resets_the_request() -> None:
    outage = FaultWindow(FaultKind.OUTAGE, start=0.5, end=2.0)
    async with serving(RegistryModel(latency=Latency(1.0)), outage) as (model, client):
        start = anyio.current_time()
        with pytest.raises(httpx.ReadError):
            await client.get(f"/v2/{REPO}/manifests/v1")
        assert anyio.current_time() - start == 1.0  # checked again after the latency
    assert model.view.answers == {"GET reset": 1}


async def test_outage_cuts_a_body_in_flight() -> None:
    outage = FaultWindow(FaultKind.OUTAGE, start=2.0, end=10.0)
    model = RegistryModel(latency=Latency(0.0), per_connection=MiB)
    async with serving(model, outage) as (transport, client):
        start = anyio.current_time()
        body, error = await read_body(client, blob_path(BIG))
        assert anyio.current_time() - start == 2.0
    assert isinstance(error, httpx.ReadError)
    assert len(body) == MiB  # the chunk due at t=2 never left
    assert transport.view.errors[2] == 1
    assert (transport.view.in_flight, transport.view.bodies) == (0, 0)


@pytest.mark.parametrize(
    ("status", "retry_after", "header"),
    [
        pytest.param(429, 7.0, "7", id="429-retry-after"),
        pytest.param(503, 2.6, "3", id="503-rounded"),
        pytest.param(503, None, None, id="503-no-header"),
        pytest.param(500, 0.0, "0", id="zero"),
    ],
)
async def test_errors_window_answers_with_its_status(
    status: int, retry_after: float | None, header: str | None
) -> None:
    window = FaultWindow(FaultKind.ERRORS, end=5.0, status=status, retry_after=retry_after)
    model = RegistryModel(latency=Latency(0.25))
    async with serving(model, window) as (transport, client):
        start = anyio.current_time()
        response = await client.get(f"/v2/{REPO}/manifests/v1")
        assert anyio.current_time() - start == 0.25  # an error answer takes the latency too
        await anyio.sleep(5.0)
        after = await client.get(f"/v2/{REPO}/manifests/v1")
    assert response.status_code == status
    assert response.headers.get("retry-after") == header
    assert error_code(response) == "UNAVAILABLE"
    assert after.status_code == 200
    assert transport.view.answers == {f"GET {status}": 1, "GET 200": 1}
    assert transport.view.to_dict()["errors"] == 1


async def test_errors_share_is_drawn_per_request_and_repeatable() -> None:
    window = FaultWindow(FaultKind.ERRORS, share=0.25, status=429)

    async def statuses(seed: int) -> list[int]:
        async with serving(QUIET, window, seed=seed) as (_, client):
            return [(await client.head(f"/v2/{REPO}/manifests/v1")).status_code for _ in range(400)]

    first, again = await statuses(1), await statuses(1)
    assert first == again
    assert set(first) == {200, 429}
    assert 60 < first.count(429) < 140  # about a quarter of 400
    assert await statuses(2) != first


async def test_reset_at_once_raises_before_any_answer() -> None:
    window = FaultWindow(FaultKind.RESETS, end=1.0)
    async with serving(QUIET, window) as (model, client):
        with pytest.raises(httpx.ReadError, match="Connection reset by peer"):
            await client.get(blob_path(BIG))
    assert model.view.answers == {"GET reset": 1}
    assert model.view.to_dict()["errors"] == 1


@pytest.mark.parametrize(
    ("blob", "after_bytes", "headers", "received"),
    [
        pytest.param(BIG, 1000, {}, 1000, id="inside-the-first-chunk"),
        pytest.param(BIG, MiB, {}, MiB, id="on-a-chunk-boundary"),
        pytest.param(BIG, MiB + MiB // 2, {}, MiB + MiB // 2, id="inside-a-later-chunk"),
        pytest.param(REAL, 1000, {}, 1000, id="real-bytes"),
        pytest.param(BIG, 1000, {"Range": f"bytes={MiB}-"}, 1000, id="counted-from-the-range"),
    ],
)
async def test_reset_after_bytes_cuts_the_body_exactly(
    blob: Blob, after_bytes: int, headers: dict[str, str], received: int
) -> None:
    window = FaultWindow(FaultKind.RESETS, after_bytes=after_bytes)
    model = RegistryModel(latency=Latency(0.0), per_connection=MiB)
    async with serving(model, window) as (transport, client):
        body, error = await read_body(client, blob_path(blob), headers)
    assert isinstance(error, httpx.ReadError)
    assert "Connection reset by peer" in str(error)
    assert len(body) == received
    start = MiB if headers else 0
    if not blob.is_stub:
        assert body == blob.data[start : start + received]
    assert transport.view.to_dict()["errors"] == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", blob_path(SMALL), id="body-shorter-than-after-bytes"),
        pytest.param("HEAD", f"/v2/{REPO}/manifests/v1", id="head-has-no-body"),
        pytest.param("GET", "/v2/", id="json-answer"),
    ],
)
async def test_reset_after_more_bytes_than_the_answer_has_changes_nothing(
    method: str, path: str
) -> None:
    window = FaultWindow(FaultKind.RESETS, after_bytes=64 * 1024)
    async with serving(QUIET, window) as (model, client):
        response = await client.request(method, path)
    assert response.status_code == 200
    assert model.view.to_dict()["errors"] == 0


async def test_view_counts_the_bytes_sent_before_a_reset() -> None:
    window = FaultWindow(FaultKind.RESETS, after_bytes=1000)
    async with serving(QUIET, window) as (model, client):
        with pytest.raises(httpx.ReadError):
            await client.get(blob_path(BIG))
    assert model.view.to_dict()["bytes"] == 1000


# -- the registry's view ----------------------------------------------------------------------


async def test_view_counts_requests_bytes_errors_and_tokens_per_second() -> None:
    model = RegistryModel(latency=Latency(0.0), per_connection=MiB, auth=True)
    windows = (FaultWindow(FaultKind.ERRORS, start=5.0, end=6.0, status=503),)
    async with serving(model, *windows) as (transport, client):
        assert (await client.head(f"/v2/{REPO}/manifests/v1")).status_code == 401
        token = await client.get("/token")
        headers = bearer(token.json()["token"])
        assert (await client.get(blob_path(BIG), headers=headers)).status_code == 200  # 0-4 s
        assert (await client.get(f"/v2/{REPO}/manifests/v9", headers=headers)).status_code == 404
        await anyio.sleep(1.0)  # t=5: inside the errors window
        assert (await client.get(blob_path(SMALL), headers=headers)).status_code == 503
        await anyio.sleep(1.0)
        assert (await client.get(blob_path(SMALL), headers=headers)).status_code == 200
    view = transport.view
    assert view.to_dict() == {
        "requests": 6,
        "bytes": BIG.size + SMALL.size,
        "errors": 1,
        "tokens_issued": 1,
        "queued_for_a_slot": 0,
        "answers": {"GET 200": 3, "GET 404": 1, "GET 503": 1, "HEAD 401": 1},
        "peak_in_flight": 1,
        "peak_bodies": 1,
    }
    # [second, requests, bytes, errors, tokens, peak in flight, peak bodies]
    assert view.series() == [
        [0, 3, MiB, 0, 1, 1, 1],
        [1, 0, MiB, 0, 0, 1, 1],
        [2, 0, MiB, 0, 0, 1, 1],
        [3, 0, MiB, 0, 0, 1, 1],
        [4, 1, 0, 0, 0, 1, 0],
        [5, 1, 0, 1, 0, 1, 0],
        [6, 1, SMALL.size, 0, 0, 1, 1],
    ]
    assert view.series(step=4) == [
        [0, 3, 4 * MiB, 0, 1, 1, 1],
        [4, 3, SMALL.size, 1, 0, 1, 1],
    ]
    assert (view.in_flight, view.bodies) == (0, 0)


def test_an_empty_view() -> None:
    view = RegistryView()
    assert view.series() == [[0, 0, 0, 0, 0, 0, 0]]
    assert view.to_dict() == {
        "requests": 0,
        "bytes": 0,
        "errors": 0,
        "tokens_issued": 0,
        "queued_for_a_slot": 0,
        "answers": {},
        "peak_in_flight": 0,
        "peak_bodies": 0,
    }


async def test_view_seconds_count_from_the_schedule_start() -> None:
    transport = ModelTransport(catalogue(), QUIET)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        await anyio.sleep(100.0)
        transport.start_schedule(anyio.current_time() - 7.0)  # time zero was 7 s ago
        await client.get("/v2/")
    assert dict(transport.view.requests) == {7: 1}


async def test_series_keeps_every_error_to_dict_counts() -> None:
    window = FaultWindow(FaultKind.RESETS, after_bytes=1000)
    model = RegistryModel(latency=Latency(0.0), per_connection=MiB)
    async with serving(model, window) as (transport, client):
        with pytest.raises(httpx.ReadError):
            await client.get(blob_path(BIG))
    errors = sum(row[3] for row in transport.view.series())
    assert errors == transport.view.to_dict()["errors"] == 1


async def test_series_peaks_cover_every_second_a_body_is_in_flight() -> None:
    model = RegistryModel(latency=Latency(0.0), per_connection=MiB)
    async with serving(model) as (transport, client):
        await client.get(blob_path(BIG))  # streams from 0 to 4 s
    rows = transport.view.series()
    assert [row[2] for row in rows] == [MiB, MiB, MiB, MiB]  # each second's bytes in it
    assert all(row[6] >= 1 for row in rows[:4]), rows  # a body was in flight in 0-1 ... 3-4


def test_model_to_dict() -> None:
    model = RegistryModel(
        latency=Latency(0.004, 0.04),
        per_connection=100 * MiB,
        total=10 * 1024 * MiB,
        concurrency=2000,
        auth=True,
    )
    assert model.to_dict() == {
        "latency": "log-normal, median 4 ms, p99 40 ms",
        "per_connection_bytes_per_second": 100 * MiB,
        "total_bytes_per_second": 10 * 1024 * MiB,
        "concurrency": 2000,
        "auth": "token",
        "token_lifetime": 300.0,
    }
    assert RegistryModel().to_dict()["latency"] == "3 ms"
    assert RegistryModel().to_dict()["auth"] == "none"


# -- whole pulls through the project's client -------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "tag"),
    [pytest.param(REPO, "v1", id="image"), pytest.param(MULTI, "v2", id="index")],
)
async def test_pull_into_a_counting_store_succeeds(repo: str, tag: str) -> None:
    model = ModelTransport(catalogue(), RegistryModel(latency=Latency(0.0), per_connection=MiB))
    store = MemoryStore(hash_layers=False)
    async with httpx.AsyncClient(transport=model) as http:
        client = RegistryClient(Transport(http=http))
        service = ImageService(client, store, platform=LINUX)
        start = anyio.current_time()
        pulled = await service.pull_image(parse_normalized(f"{MODEL_HOST}/{repo}:{tag}"))
        elapsed = anyio.current_time() - start
    image = IMAGE if repo == REPO else INDEX.image_for("linux/amd64")
    assert pulled.image_ref == str(image.config.digest)
    assert pulled.manifest_digest == str(image.manifest.digest)
    assert pulled.layers == tuple(str(layer.digest) for layer in image.layers)
    assert pulled.bytes_downloaded == sum(layer.size for layer in image.layers)
    for layer in image.layers:
        assert await store.blob_size(layer.digest) == layer.size  # sized, not hashed
    assert await store.read_blob(image.config.digest) == image.config.data  # real and verified
    record = await store.lookup(f"{MODEL_HOST}/{repo}:{tag}")
    assert record is not None
    assert record.image_id == str(image.config.digest)
    served = model.view.to_dict()
    assert served["errors"] == 0
    assert served["bytes"] >= pulled.bytes_downloaded + image.config.size
    # Layers download concurrently at 1 MiB/s each: the largest one sets the time.
    largest = max(layer.size for layer in image.layers)
    assert elapsed >= largest / MiB


async def test_pull_into_a_hashing_store_fails_on_the_stub_zeros() -> None:
    """Why virtual runs turn hashing off: a stub layer's body is zeros, not its digest's bytes."""
    model = ModelTransport(catalogue(), QUIET)
    store = MemoryStore()
    async with httpx.AsyncClient(transport=model) as http:
        client = RegistryClient(Transport(http=http))
        service = ImageService(client, store, platform=LINUX)
        with pytest.raises(DigestMismatchError) as caught:
            await service.pull_image(parse_normalized(f"{MODEL_HOST}/{REPO}:v1"))
    layer_digests = {str(layer.digest) for layer in IMAGE.layers}
    assert caught.value.expected in layer_digests
    assert caught.value.actual in {
        str(Digest.from_bytes(bytes(layer.size))) for layer in IMAGE.layers
    }
    for layer in IMAGE.layers:
        assert await store.blob_size(layer.digest) is None  # a mismatch keeps nothing
    assert await store.lookup(f"{MODEL_HOST}/{REPO}:v1") is None
