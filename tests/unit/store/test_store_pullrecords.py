"""KEP-2535 pull records: identities, credential hashes and the upstream merge rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_fakes import Clock, blob_bytes, make_image, pull

from kubelet_sim.errors import StoreError
from kubelet_sim.store import CredentialIdentity, CredentialKind, Store, hash_credentials

IMAGE = "sha256:" + "1" * 64
REPO = "docker.io/library/nginx"
H1 = hash_credentials(username="alice", password="one")
H2 = hash_credentials(username="alice", password="two")


def secret(name: str = "pull", uid: str = "uid-1", hash_: str = H1) -> CredentialIdentity:
    return CredentialIdentity(CredentialKind.SECRET, "default", name, uid, hash_)


SA = CredentialIdentity(CredentialKind.SERVICE_ACCOUNT, "default", "builder", "sa-uid")
NODE = CredentialIdentity.node()
ANON = CredentialIdentity.anonymous()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "root", clock=clock) as s:
        yield s


def test_hash_credentials_is_stable_and_hides_the_secret() -> None:
    assert hash_credentials(username="alice", password="one") == H1
    assert H1 != H2
    assert len(H1) == 64
    assert "one" not in H1
    assert hash_credentials(auth="YWxpY2U6b25l") != hash_credentials(username="alice")
    assert H1 not in repr(secret())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            dict(kind="secret", namespace="ns", name="n", uid="u"),
            "64 lowercase hex",
            id="secret-without-hash",
        ),
        pytest.param(
            dict(kind="secret", namespace="ns", name="n", uid="u", credential_hash="XYZ"),
            "64 lowercase hex",
            id="secret-bad-hash",
        ),
        pytest.param(
            dict(kind="secret", name="n", uid="u", credential_hash=H1),
            "needs namespace",
            id="secret-without-namespace",
        ),
        pytest.param(
            dict(kind="serviceaccount", namespace="ns", name="n"), "needs uid", id="sa-without-uid"
        ),
        pytest.param(
            dict(kind="serviceaccount", namespace="ns", name="n", uid="u", credential_hash=H1),
            "carries no hash",
            id="sa-with-hash",
        ),
        pytest.param(dict(kind="node", name="n"), "carries no secret", id="node-with-coordinates"),
        pytest.param(
            dict(kind="anonymous", credential_hash=H1),
            "carries no secret",
            id="anonymous-with-hash",
        ),
    ],
)
def test_identity_validation(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        CredentialIdentity(**kwargs)  # type: ignore[arg-type]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(StoreError, match="unknown credential kind 'robot'"):
        CredentialIdentity("robot")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pulls", "expected"),
    [
        pytest.param([secret()], [secret()], id="one-secret"),
        pytest.param([secret(), secret()], [secret()], id="same-secret-twice"),
        pytest.param(
            [secret(), secret(hash_=H2)], [secret(hash_=H2)], id="same-coordinates-new-hash-wins"
        ),
        pytest.param(
            [secret("b", "uid-b"), secret("a", "uid-a")],
            [secret("a", "uid-a"), secret("b", "uid-b")],
            id="two-secrets-sorted",
        ),
        pytest.param([secret(), SA], [secret(), SA], id="secret-and-service-account"),
        pytest.param([secret(), SA, NODE], [NODE], id="node-replaces-everything"),
        pytest.param([NODE, secret()], [NODE], id="node-absorbs-later-secrets"),
        pytest.param([ANON, NODE, secret()], [ANON], id="anonymous-is-node-accessible"),
    ],
)
@pytest.mark.anyio
async def test_merge_rules(
    store: Store, pulls: list[CredentialIdentity], expected: list[CredentialIdentity]
) -> None:
    for identity in pulls:
        await store.record_pull(IMAGE, identity, repository=REPO)
    assert await store.pull_records(IMAGE, repository=REPO) == expected
    assert [r.credential_hash for r in await store.pull_records(IMAGE, repository=REPO)] == [
        r.credential_hash for r in expected
    ]


@pytest.mark.anyio
async def test_record_pull_says_whether_anything_changed(store: Store) -> None:
    assert await store.record_pull(IMAGE, secret(), repository=REPO)
    assert not await store.record_pull(IMAGE, secret(), repository=REPO)
    assert await store.record_pull(IMAGE, secret(hash_=H2), repository=REPO)
    assert await store.record_pull(IMAGE, NODE, repository=REPO)
    assert not await store.record_pull(IMAGE, secret(), repository=REPO)


@pytest.mark.anyio
async def test_records_are_per_image_and_repository(store: Store) -> None:
    await store.record_pull(IMAGE, secret(), repository=REPO)
    await store.record_pull(IMAGE, NODE, repository="registry.example.com/mirror/nginx")
    assert await store.pull_records(IMAGE, repository=REPO) == [secret()]
    assert await store.pull_records(IMAGE, repository="registry.example.com/mirror/nginx") == [NODE]
    assert await store.pull_records(IMAGE) == [NODE, secret()]
    assert await store.pull_records("sha256:" + "2" * 64) == []


@pytest.mark.anyio
async def test_records_survive_removal_until_pruned(store: Store, clock: Clock) -> None:
    image = make_image("recorded", [blob_bytes("r", 100)])
    kept = make_image("kept", [blob_bytes("k", 100)])
    await pull(store, image, tag="example.com/r:1")
    await pull(store, kept, tag="example.com/k:1")
    await store.record_pull(image.image_id, secret(), repository="example.com/r")
    await store.record_pull(kept.image_id, NODE, repository="example.com/k")
    await store.remove(image.image_id)
    assert await store.pull_records(image.image_id) == [secret()]
    assert await store.prune_pull_records(clock.now) == 0  # recorded at "now", not before
    clock.advance(1)
    assert await store.prune_pull_records(clock.now) == 1
    assert await store.pull_records(image.image_id) == []
    assert await store.pull_records(kept.image_id) == [NODE]


@pytest.mark.anyio
async def test_records_persist_across_reopen(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "root") as store:
        await store.record_pull(IMAGE, secret(), repository=REPO)
    async with await Store.open(tmp_path / "root") as store:
        assert await store.pull_records(IMAGE, repository=REPO) == [secret()]
    # Only the hash is stored: the credentials are nowhere in the database file.
    assert b"alice" not in (tmp_path / "root" / "store.db").read_bytes()


@pytest.mark.anyio
async def test_cached_pull_records_follow_every_write(store: Store, tmp_path: Path) -> None:
    # Read on every cache-hit decision, so cached between writes; a write must show at once.
    assert await store.pull_records(IMAGE) == []
    assert await store.pull_records(IMAGE, repository=REPO) == []
    await store.record_pull(IMAGE, secret(), repository=REPO)
    assert await store.pull_records(IMAGE, repository=REPO) == [secret()]
    assert await store.pull_records(IMAGE) == [secret()]
    await store.record_pull(IMAGE, secret("other", "uid-2", H2), repository=REPO)
    answer = await store.pull_records(IMAGE, repository=REPO)
    assert set(answer) == {secret(), secret("other", "uid-2", H2)}
    answer.clear()  # the caller's list, not the cache's
    assert len(await store.pull_records(IMAGE, repository=REPO)) == 2
    await store.record_pull(IMAGE, NODE, repository=REPO)  # may merge the secrets away
    async with await Store.open(tmp_path / "root", read_only=True) as reader:
        truth = await reader.pull_records(IMAGE, repository=REPO)  # straight from SQLite
    assert NODE in truth
    assert await store.pull_records(IMAGE, repository=REPO) == truth
