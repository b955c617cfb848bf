"""KEP-2535's answer without waiting agrees with the awaited one, and never outlives a store write.

``must_attempt_pull_now`` answers every cache-hit decision from the store's in-memory answers and
a memo of its own; each step below writes a pull record (or prunes them) and then asks, for every
policy and allowlist, for two repositories, both ways.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from kubelet_sim.config.kubelet import ImagePullCredentialsVerificationPolicy as Policy
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.pods import PodRef, PullRequest
from kubelet_sim.core.policy import PullPolicy
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.credentials.metrics import CredentialMetrics
from kubelet_sim.credentials.verify import ImageAccessVerifier, MustPullResult
from kubelet_sim.store import (
    CredentialIdentity,
    CredentialKind,
    MemoryStore,
    Store,
    hash_credentials,
)

pytestmark = pytest.mark.anyio

IMAGE_ID = "sha256:" + "7" * 64
APP = "example.com/team/app"
MIRROR = "example.com/mirror/app"
SECRET = CredentialIdentity(
    CredentialKind.SECRET, "default", "regcred", "uid-regcred", hash_credentials(password="pw")
)
MUST = {MustPullResult.MUST_AUTHENTICATE, MustPullResult.ERROR}

AnyStore = Store | MemoryStore


@pytest.fixture(params=["durable", "memory"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], AbstractAsyncContextManager[AnyStore]]:
    @asynccontextmanager
    async def open_() -> AsyncIterator[AnyStore]:
        if request.param == "durable":
            async with await Store.open(tmp_path / "store") as durable:
                yield durable
        else:
            async with MemoryStore() as memory:
                yield memory

    return open_


async def no_credentials() -> Sequence[Credentials]:
    return ()


def request_for(image: str) -> PullRequest:
    return PullRequest(PodRef("default", "pod", "uid-pod"), "app", image, PullPolicy.IF_NOT_PRESENT)


async def test_the_answer_without_waiting_is_the_awaited_one_after_every_write(
    open_store: Callable[[], AbstractAsyncContextManager[AnyStore]],
) -> None:
    async with open_store() as store:
        verifiers = {
            (policy, allowlist): ImageAccessVerifier(
                store, policy, allowlist, metrics=CredentialMetrics(CollectorRegistry())
            )
            for policy in Policy
            for allowlist in ((), (APP,), ("example.com/mirror/*",))
        }

        async def writes() -> AsyncIterator[str]:
            yield "no records"
            await store.record_pull(IMAGE_ID, SECRET, repository=APP)
            yield "a secret's record for the app"
            await store.record_pull(IMAGE_ID, CredentialIdentity.node(), repository=MIRROR)
            yield "a node record for the mirror"
            await store.record_pull(IMAGE_ID, CredentialIdentity.anonymous(), repository=APP)
            yield "an anonymous pull of the app"
            await store.prune_pull_records(before=float("inf"))  # the image is not in the store
            yield "records pruned"

        answered = 0
        async for step in writes():
            for (policy, allowlist), verifier in verifiers.items():
                for image in (f"{APP}:v1", f"{MIRROR}:v1"):
                    ref, request = parse_normalized(image), request_for(image)
                    where = f"{step}: {policy} {allowlist} {image}"
                    before = verifier.must_attempt_pull_now(request, ref, IMAGE_ID)
                    awaited = await verifier.check(ref, IMAGE_ID, no_credentials)
                    after = verifier.must_attempt_pull_now(request, ref, IMAGE_ID)
                    secrets_decide = awaited is MustPullResult.MUST_AUTHENTICATE and any(
                        r.kind is CredentialKind.SECRET
                        for r in await store.pull_records(IMAGE_ID, repository=ref.name)
                    )
                    if secrets_decide:  # the pod's own credentials are needed: always awaited
                        assert (before, after) == (None, None), where
                        continue
                    assert after is (awaited in MUST), where  # read once: in memory now
                    assert before in (None, after), where  # None only before the first read
                    answered += 1
        assert answered > 100


async def test_an_answer_without_waiting_is_counted_once_none_is_not_counted(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    async with await Store.open(tmp_path / "store") as store:
        verifier = ImageAccessVerifier(store, metrics=CredentialMetrics(registry))
        ref, request = parse_normalized(f"{APP}:v1"), request_for(f"{APP}:v1")
        await store.record_pull(IMAGE_ID, CredentialIdentity.node(), repository=APP)
        assert verifier.must_attempt_pull_now(request, ref, IMAGE_ID) is None  # not read yet

        def found() -> float | None:
            return registry.get_sample_value(
                "kubelet_imagemanager_image_mustpull_checks_total",
                {"result": "credentialRecordFound"},
            )

        assert found() is None
        assert await verifier.must_attempt_pull(request, ref, IMAGE_ID, no_credentials) is False
        assert found() == 1.0
        for _ in range(3):
            assert verifier.must_attempt_pull_now(request, ref, IMAGE_ID) is False
        assert found() == 4.0
        assert verifier.must_attempt_pull_now(request, ref, "") is True  # no image ID: pull
