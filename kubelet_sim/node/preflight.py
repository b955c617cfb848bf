"""``explain image``: would a kubelet with this configuration pull this image, and if not, why.

A preflight that fetches manifests and HEADs blobs but downloads no layer, in the order a pull
takes: the reference and its default policy; the credentials (pull secrets first, then the node's
docker config, as the kubelet's keyring; every key that does not match the image is listed with
the image's registry, because a key for the wrong registry is the usual mistake); each host of
``hosts.toml`` in order (mirrors, then upstream, which alone gets the credentials), with what it
answered and how long it took, for each credential in turn as the kubelet tries them; the
platform (every index entry, chosen or not); each layer's presence and size. The verdict names
the kubelet's reason and what to fix, in plain words. No credential value is ever shown: a
credential is named by where it came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.platforms import Platform, node_matcher
from kubelet_sim.core.policy import default_pull_policy
from kubelet_sim.core.reference import ImageReference, apply_default_image_tag, parse_normalized
from kubelet_sim.core.trace import CURRENT, PullTrace
from kubelet_sim.credentials.dockerconfig import DockerConfigEntry, redact_userinfo
from kubelet_sim.credentials.keyring import BasicKeyring, SecretSource, keyring_key
from kubelet_sim.errors import (
    BlobNotFoundError,
    InvalidImageNameError,
    NoMatchingPlatformError,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTransportError,
)
from kubelet_sim.registry.client import HostOutcome, RegistryClient, ResolvedImage
from kubelet_sim.registry.hosts import hosts_for, registry_hosts
from kubelet_sim.registry.transport import Transport, TransportSettings

__all__ = [
    "CredentialSource",
    "HostAttempt",
    "KeyMatch",
    "Preflight",
    "host_lines",
    "key_matches",
    "key_text",
    "matched_credentials",
    "preflight",
]


@dataclass(frozen=True, slots=True)
class CredentialSource:
    """A set of registry credentials: a pull secret (``secret NS/NAME``) or the node's docker
    config (``docker config FILE``)."""

    label: str
    entries: dict[str, DockerConfigEntry] = field(repr=False)
    secret: SecretSource | None = None


@dataclass(frozen=True, slots=True)
class HostAttempt:
    """One request on one host: what it was for, with which credential, what came back."""

    step: str
    host: str
    role: str
    credential: str
    outcome: str
    seconds: float


@dataclass(slots=True)
class Preflight:
    """The account of one image: steps in order, host attempts, and the verdict."""

    image: str
    steps: list[tuple[str, str]] = field(default_factory=list)
    attempts: list[HostAttempt] = field(default_factory=list)
    pulls: bool = False
    reason: str = ""
    verdict: str = ""
    fix: str = ""
    bytes: int = 0
    requests: int = 0

    def step(self, name: str, text: str) -> None:
        self.steps.append((name, text))

    def fail(self, reason: str, verdict: str, fix: str) -> Preflight:
        self.pulls, self.reason, self.verdict, self.fix = False, reason, verdict, fix
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "pulls": self.pulls,
            "reason": self.reason,
            "verdict": self.verdict,
            "fix": self.fix,
            "bytes": self.bytes,
            "requests": self.requests,
            "steps": [{"step": name, "text": text} for name, text in self.steps],
            "attempts": [
                {
                    "step": a.step,
                    "host": a.host,
                    "role": a.role,
                    "credential": a.credential,
                    "outcome": a.outcome,
                    "seconds": round(a.seconds, 3),
                }
                for a in self.attempts
            ],
        }


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """One registry key of a credential source and whether it matches the image."""

    source: str
    location: str
    key: str | None
    """The keyring key the location becomes; None when it is not a registry key at all."""
    matches: bool


def key_matches(ref: ImageReference, sources: Sequence[CredentialSource]) -> list[KeyMatch]:
    """Every key of every source, in the kubelet's order, and whether it matches ``ref``."""
    out: list[KeyMatch] = []
    for source in sources:
        for location, entry in source.entries.items():
            key = keyring_key(location)
            single = BasicKeyring()
            single.add(source.secret, {location: entry})
            matches = key is not None and bool(single.lookup(ref.name))
            out.append(KeyMatch(source.label, location, key, matches))
    return out


def matched_credentials(
    ref: ImageReference, sources: Sequence[CredentialSource]
) -> list[tuple[str, Credentials]]:
    """The credentials the kubelet would try for ``ref``, in its order, each named by source."""
    out: list[tuple[str, Credentials]] = []
    for source in sources:
        keyring = BasicKeyring()
        keyring.add(source.secret, source.entries)
        out.extend((f"{source.label} ({ref.domain})", creds) for creds in keyring.lookup(ref.name))
    return out


def key_text(match: KeyMatch, ref: ImageReference) -> str:
    """A key's line in an account: matches, does not (with the image's registry), or invalid."""
    if match.key is None:
        return f"{match.source}: {redact_userinfo(match.location)!r} is not a registry key"
    if match.matches:
        return f"{match.source}: key {match.key} matches {ref.name}"
    return f"{match.source}: key {match.key} does not match {ref.name} (registry {ref.domain})"


def _credentials(
    report: Preflight, ref: ImageReference, sources: Sequence[CredentialSource]
) -> list[tuple[str, Credentials]]:
    """The credentials to try, each key reported (a key for the wrong registry is the usual
    mistake)."""
    for match in key_matches(ref, sources):
        report.step("credentials", key_text(match, ref))
    out = matched_credentials(ref, sources)
    if not sources:
        report.step("credentials", "no pull secrets and no docker config given: anonymous")
    elif not out:
        report.step("credentials", f"no credential matches {ref.domain}: the pull is anonymous")
    return out


def host_lines(domain: str, hosts_dir: Path | None) -> list[str]:
    """The hosts a pull of ``domain`` asks, in order: ``mirror https://...``, then the upstream.

    Raises:
        ConfigError: a ``hosts.toml`` is refused.
    """
    hosts = registry_hosts(domain, hosts_dir)
    upstream = hosts[-1].host
    return [
        f"{'upstream' if host.host == upstream else 'mirror'} {host.scheme}://{host.host}"
        for host in hosts_for("pull", hosts)
    ]


def _outcome(error: RegistryError | None) -> str:
    if error is None:
        return "ok"
    status = f"HTTP {error.status}: " if error.status else ""
    return f"{status}{error}"


async def preflight(
    image: str,
    *,
    platform: Platform,
    hosts_dir: Path | None = None,
    sources: Sequence[CredentialSource] = (),
    client: RegistryClient | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - also each request's transport timeouts
    config: KubeletConfiguration | None = None,
) -> Preflight:
    """Everything a pull of ``image`` would do, short of downloading layers.

    ``timeout`` bounds the whole preflight and each request's connect, headers and body waits
    (a registry that never answers gets a verdict naming it, not minutes of retries); with a
    node's ``config``, its pull settings are reported too.
    """
    report = Preflight(image)
    if config is not None:
        _node_settings(report, config)
    try:
        ref = parse_normalized(apply_default_image_tag(image))
    except InvalidImageNameError as exc:
        report.step("reference", f"{image!r} does not parse: {exc.message}")
        return report.fail(
            "InvalidImageName",
            f'Failed to apply default image tag "{image}": {exc.message}',
            "fix the image name in the pod spec (a reference is [host[:port]/]path[:tag][@digest])",
        )
    report.step(
        "reference",
        f"{image} is {ref}: registry {ref.domain}, repository {ref.repository}; "
        f"default imagePullPolicy {default_pull_policy(image)}",
    )
    for line in host_lines(ref.domain, hosts_dir):
        report.step("hosts", line)
    credentials = _credentials(report, ref, sources)
    credential = ["anonymous"]

    def observe(outcome: HostOutcome) -> None:
        report.requests += 1
        report.attempts.append(
            HostAttempt(
                outcome.what,
                outcome.host.host,
                "upstream" if outcome.upstream else "mirror",
                credential[0] if outcome.with_credentials else "anonymous",
                _outcome(outcome.error),
                outcome.seconds,
            )
        )

    own = client is None
    if client is None:
        settings = TransportSettings()
        if timeout is not None:
            settings = replace(
                settings,
                connect_timeout=timeout,
                header_timeout=timeout,
                stall_timeout=timeout,
                request_deadline=timeout,
            )
        client = RegistryClient(Transport(settings=settings), hosts_dir=hosts_dir)
    client.observer = observe
    trace = PullTrace(anyio.current_time())  # which request is open when the time is up
    token = CURRENT.set(trace)
    try:
        with anyio.move_on_after(timeout if timeout is not None else math.inf) as scope:
            return await _pull_plan(report, client, ref, platform, credentials, credential)
        assert scope.cancelled_caught
        return _timed_out(report, trace, timeout or 0.0)
    finally:
        CURRENT.reset(token)
        client.observer = None
        if own:
            await client.aclose()


def _timed_out(report: Preflight, trace: PullTrace, timeout: float) -> Preflight:
    if trace.request is not None:
        what, host, _ = trace.request
        waiting = f"{host} had not answered its {what} request"
    else:
        waiting = "the registry requests had not finished"
    return report.fail(
        "ErrImagePull",
        f"no verdict within --timeout {timeout:g}s: {waiting}",
        "the registry (or a mirror) stalls: a kubelet's pull would hold a pull slot until the "
        "transport's timeouts expire; check the host, or take it out of hosts.toml",
    )


def _node_settings(report: Preflight, config: KubeletConfiguration) -> None:
    """The node's pull settings that decide how this pull would queue (``--config``)."""
    if config.serialize_image_pulls:
        report.step("node", "serializeImagePulls: one pull at a time, behind the node's others")
    else:
        slots = config.max_parallel_image_pulls
        report.step("node", f"parallel pulls, maxParallelImagePulls {slots or 'unlimited'}")
    if config.registry_pull_qps > 0:
        report.step(
            "node",
            f"registryPullQPS {config.registry_pull_qps:g}, registryBurst "
            f"{config.registry_burst}: more than {config.registry_burst} pulls starting at "
            "once fail with 'pull QPS exceeded' and back off",
        )
    else:
        report.step("node", "registryPullQPS 0: no pull throttle")


async def _pull_plan(
    report: Preflight,
    client: RegistryClient,
    ref: ImageReference,
    platform: Platform,
    credentials: list[tuple[str, Credentials]],
    credential: list[str],
) -> Preflight:
    """The kubelet's loop over credentials (each tried until one works), then the layers."""
    tries: list[tuple[str, Credentials | None]] = list(credentials) or [("anonymous", None)]
    errors: list[RegistryError] = []
    resolved: ResolvedImage | None = None
    chosen: Credentials | None = None
    for label, creds in tries:
        credential[0] = label
        try:
            resolved = await client.resolve_image(ref, platform, creds)
        except NoMatchingPlatformError as exc:
            for offered in exc.offered:
                report.step("platform", f"index entry {offered}: not {platform}")
            return report.fail(
                "ErrImagePull",
                f"no manifest for platform {exc.wanted}: the index offers "
                f"{', '.join(exc.offered) or 'nothing'}",
                f"build and push the image for {exc.wanted}, or run the pod on a node of an "
                "offered platform",
            )
        except RegistryError as exc:
            errors.append(exc)
            report.step("resolve", f"with {label}: {exc}")
            continue
        chosen = creds
        report.step("resolve", f"with {label}: {ref} is {resolved.descriptor.digest}")
        break
    if resolved is None:
        # As the kubelet: the last credential's error is the one reported.
        return _resolve_failed(report, ref, errors[-1], bool(credentials))
    if resolved.index is not None:
        matcher = node_matcher(platform)
        for entry in resolved.index.manifests:
            shown = str(entry.platform) if entry.platform is not None else "no platform"
            fits = entry.platform is not None and matcher.match(entry.platform)
            chosen_one = entry.digest == resolved.manifest_descriptor.digest
            what = "chosen" if chosen_one else "runs here" if fits else f"not {platform}"
            report.step("platform", f"index entry {shown} {entry.digest}: {what}")
    else:
        report.step("platform", f"a single manifest for {resolved.platform}")
    total = resolved.manifest.config.size
    layers = resolved.manifest.layers
    for number, layer in enumerate(layers, start=1):
        try:
            size = await client.blob_size(ref, layer, chosen)
        except BlobNotFoundError:
            return report.fail(
                "ErrImagePull",
                f"layer {number} ({layer.digest}) is missing from {ref.repository}",
                "push the image again: the registry lost a blob its manifest names",
            )
        except RegistryError as exc:
            return report.fail("ErrImagePull", f"layer {number}: {exc}", _fix(exc))
        total += size
        report.step("layers", f"layer {number}/{len(layers)} {layer.digest}: {size} bytes")
    report.bytes = total
    report.pulls = True
    report.verdict = (
        f"a kubelet on {platform} would pull {ref} with {credential[0]}: {total} bytes in "
        f"{len(layers)} layers and a config"
    )
    return report


def _resolve_failed(
    report: Preflight, ref: ImageReference, exc: RegistryError, had_credentials: bool
) -> Preflight:
    if isinstance(exc, RegistryAuthError):
        if had_credentials:
            return report.fail(
                "ErrImagePull",
                f"{ref.domain} refused every matching credential ({exc})",
                "the user name or password in the pull secret or docker config is wrong, or the "
                "user may not pull this repository: recreate the secret with the right login",
            )
        return report.fail(
            "ErrImagePull",
            f"{ref.domain} wants credentials and none match it ({exc})",
            f"create a docker-registry secret whose server is {ref.domain}, name it in the pod's "
            "imagePullSecrets (or its ServiceAccount's), in the pod's own namespace",
        )
    if isinstance(exc, RegistryNotFoundError):
        return report.fail(
            "ErrImagePull",
            f"{ref} does not exist: {exc}",
            f"check the tag or digest: {ref.repository} has no {ref.identifier}",
        )
    return report.fail("ErrImagePull", f"no host answered for {ref}: {exc}", _fix(exc))


def _fix(exc: RegistryError) -> str:
    if isinstance(exc, RegistryTransportError):
        return "the registry (or every mirror and the upstream) is unreachable or stalls: check it"
    if isinstance(exc, RegistryAuthError):
        return "check the credentials"
    return "see the error"
