"""The pull trace (what a pull does now) and the failure causes ``explain`` reads verdicts from."""

from __future__ import annotations

import pytest

from kubelet_sim.core.trace import HOST_TRIES, HostTry, PullTrace, Step
from kubelet_sim.errors import (
    BlobNotFoundError,
    Cause,
    NoMatchingPlatformError,
    NotAnImageError,
    PullError,
    PullReason,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTransportError,
    StoreError,
    failure_cause,
)


def test_a_trace_goes_from_waiting_to_layers_with_their_bytes() -> None:
    trace = PullTrace(10.0, credentials=2)
    assert trace.describe() == "waiting for a pull slot"
    trace.started(12.0)
    trace.credential = 2
    assert trace.pulling == 12.0
    assert trace.describe() == "resolving (credential 2 of 2)"
    trace.downloading({"sha256:a": 3_000_000, "sha256:b": 1_000_000})
    assert trace.describe() == "downloading layer 1/2 (0 B of 4.0 MB)"
    trace.received("sha256:a", 1_000_000, 13.0)
    trace.received("sha256:a", 2_500_000, 14.0)  # cumulative per layer, not added twice
    assert trace.bytes_done == 2_500_000
    assert trace.last_byte == 14.0
    trace.received("sha256:a", 3_000_000, 15.0)
    trace.layer_done()
    assert trace.describe() == "downloading layer 2/2 (3.0 MB of 4.0 MB)"
    trace.received("sha256:b", 1_000_000, 16.0)
    trace.layer_done()
    assert trace.describe() == "downloading layer 2/2 (4.0 MB of 4.0 MB)"
    trace.committing()
    assert trace.describe() == Step.COMMITTING


def test_a_trace_keeps_the_request_it_waits_on_and_a_bounded_list_of_tries() -> None:
    trace = PullTrace(0.0)
    key = trace.trying("resolve", "mirror.test", 1.0)
    assert trace.request == ("resolve", "mirror.test", 1.0)
    trace.tried(HostTry("resolve", "mirror.test", "mirror", False, 0.1, None, "refused"), key)
    for _ in range(HOST_TRIES + 5):
        key = trace.trying("layer", "mirror.test", 2.0)
        trace.tried(HostTry("layer", "mirror.test", "mirror", False, 0.1, None, "refused"), key)
    assert trace.request is None
    assert len(trace.hosts) == HOST_TRIES
    assert not trace.hosts[0].ok


def test_requests_side_by_side_each_close_their_own_and_the_oldest_is_waited_on() -> None:
    """The config and the layers go out at once: a layer's answer must not hide the config's
    open request, and the one waited on longest is the one a stall is counted from."""
    trace = PullTrace(0.0)
    trace.downloading({"sha256:a": 1000, "sha256:b": 1000}, config=True)
    config = trace.trying("config", "registry.test", 2.0)
    layer = trace.trying("layer", "registry.test", 2.5)
    assert trace.request == ("config", "registry.test", 2.0)
    trace.tried(HostTry("layer", "registry.test", "upstream", False, 0.1), layer)
    assert trace.request == ("config", "registry.test", 2.0)
    assert trace.describe() == "fetching the image config, downloading layer 1/2 (0 B of 2.0 kB)"
    trace.tried(HostTry("config", "registry.test", "upstream", False, 0.1), config)
    trace.config_checked()
    assert trace.request is None
    assert trace.describe() == "downloading layer 1/2 (0 B of 2.0 kB)"


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (RegistryAuthError("denied", status=401), Cause.AUTH),
        (RegistryNotFoundError("no tag", status=404), Cause.NOT_FOUND),
        (BlobNotFoundError("blob sha256:ab: gone", status=404), Cause.BLOB_MISSING),
        (NoMatchingPlatformError("linux/s390x", ["linux/amd64"]), Cause.PLATFORM),
        (RegistryTransportError("dial tcp: refused"), Cause.UNREACHABLE),
        (ConnectionResetError(), Cause.UNREACHABLE),
        (NotAnImageError("sha256:ab", "an artifact"), Cause.NOT_AN_IMAGE),
        (StoreError("disk"), Cause.STORE),
        (RegistryError("teapot", status=418), Cause.OTHER),
        (RegistryError("slow down", status=429), Cause.RATE_LIMITED),
        (RegistryError("unavailable", status=503), Cause.SERVER_ERROR),
        (RegistryError("bad gateway", status=502), Cause.SERVER_ERROR),
        (PullError(PullReason.ERR_IMAGE_PULL, "pull QPS exceeded", cause=Cause.QPS), Cause.QPS),
    ],
)
def test_each_error_has_its_cause(error: BaseException, cause: Cause) -> None:
    assert failure_cause(error) is cause


def test_an_aggregate_is_auth_when_any_credential_was_refused() -> None:
    class Aggregate(PullError):
        def __init__(self, errors: list[RegistryError]) -> None:
            super().__init__(PullReason.ERR_IMAGE_PULL, "[a, b]")
            self.errors = tuple(errors)

    refused = RegistryAuthError("denied", status=401)
    missing = RegistryNotFoundError("no tag", status=404)
    assert failure_cause(Aggregate([missing, refused])) is Cause.AUTH
    assert failure_cause(Aggregate([missing, missing])) is Cause.NOT_FOUND
