"""ImageService's identical-pull single-flight: one registry pull, shared result, error, take-over."""

from __future__ import annotations

from typing import Any, cast

import anyio
import pytest
import trio.testing

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.pods import PulledImage
from kubelet_sim.core.reference import ImageReference, parse_normalized
from kubelet_sim.engine.ports import ProgressFn, ResolvedHook
from kubelet_sim.errors import RegistryNotFoundError
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.store import Store

pytestmark = pytest.mark.anyio

REF = parse_normalized("registry.test/team/app:v1")
ALICE = Credentials("alice", "alice-pw")


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


class GatedService(ImageService):
    """An ImageService whose registry pull blocks until released (no registry, no store)."""

    def __init__(self) -> None:
        super().__init__(cast(RegistryClient, None), cast(Store, None))
        self.gate = anyio.Event()
        self.started = anyio.Event()
        self.error: Exception | None = None
        self.pulled_with: list[tuple[str, str, str]] = []

    async def _pull(
        self,
        ref: ImageReference,
        runtime_handler: str,
        creds: Credentials | None,
        progress: ProgressFn | None,
        on_resolved: ResolvedHook | None = None,
    ) -> PulledImage:
        self.registry_pulls += 1
        fingerprint = creds.fingerprint() if creds else ""
        self.pulled_with.append((str(ref), runtime_handler, fingerprint))
        self.started.set()
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        if on_resolved is not None:
            await on_resolved("sha256:image", fingerprint)
        return PulledImage(
            image_ref="sha256:image",
            repo_digest=f"{ref.name}@sha256:{'0' * 64}",
            manifest_digest=f"sha256:{'0' * 64}",
            platform="linux/amd64",
            size=1,
            credential_fingerprint=fingerprint,
        )


async def test_identical_pulls_share_one_registry_pull_and_record_every_caller() -> None:
    service = GatedService()
    recorded: list[tuple[str, str, str]] = []
    results: list[PulledImage] = []

    async def one(pod: str) -> None:
        async def on_resolved(image_id: str, fingerprint: str) -> None:
            recorded.append((pod, image_id, fingerprint))

        results.append(await service.pull_image(REF, credentials=[ALICE], on_resolved=on_resolved))

    async with anyio.create_task_group() as tg:
        for pod in ("a", "b", "c"):
            tg.start_soon(one, pod)
        await anyio.wait_all_tasks_blocked()
        service.gate.set()
    assert service.registry_pulls == 1
    assert service.shared_pulls == 2
    assert len({id(r) for r in results}) == 1  # the very same answer
    # KEP-2535: every pod that got the image through these credentials has a record
    assert sorted(recorded) == [(p, "sha256:image", ALICE.fingerprint()) for p in "abc"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("", ALICE), ("kata", ALICE), id="other-runtime-handler"),
        pytest.param(("", ALICE), ("", Credentials("bob", "bob-pw")), id="other-credentials"),
        pytest.param(("", ALICE), ("", None), id="anonymous"),
    ],
)
async def test_pulls_that_differ_in_handler_or_credentials_are_not_shared(
    first: tuple[str, Credentials | None], second: tuple[str, Credentials | None]
) -> None:
    service = GatedService()

    async def pull(handler: str, creds: Credentials | None) -> None:
        await service.pull_image(REF, runtime_handler=handler, credentials=[creds] if creds else [])

    async with anyio.create_task_group() as tg:
        for handler, creds in (first, second):
            tg.start_soon(pull, handler, creds)
        await anyio.wait_all_tasks_blocked()
        service.gate.set()
    assert service.registry_pulls == 2
    assert service.shared_pulls == 0


async def test_waiters_share_the_failure() -> None:
    service = GatedService()
    service.error = RegistryNotFoundError("manifest unknown", code="MANIFEST_UNKNOWN", status=404)
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await service.pull_image(REF)
        except RegistryNotFoundError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        service.gate.set()
    assert service.registry_pulls == 1
    assert len(errors) == 3
    assert all(e is service.error for e in errors)
    # nothing is remembered: the next pull asks the registry again
    service.error = None
    await service.pull_image(REF)
    assert service.registry_pulls == 2


async def test_a_cancelled_pull_is_taken_over_by_an_identical_one() -> None:
    service = GatedService()
    results: list[PulledImage] = []

    async def waiter() -> None:
        results.append(await service.pull_image(REF))

    async with anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                await service.pull_image(REF)

        tg.start_soon(lead)
        await service.started.wait()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        leader.cancel()
        await anyio.wait_all_tasks_blocked()
        service.gate.set()
    assert leader.cancelled_caught
    assert service.registry_pulls == 2  # the waiter pulled itself instead of getting nothing
    assert [r.image_ref for r in results] == ["sha256:image"]
