"""``explain pod``: why a pod's containers have or have not got their images, step by step.

For each container, from what the running node knows (nothing is pulled or asked of a
registry), in the order the kubelet's ``EnsureImageExists`` goes:

1. the reference and its policy (set, or defaulted from the tag);
2. presence in the node's store and the policy's decision, with KEP-2535's when the node
   verifies pull credentials;
3. the credentials: each pull secret (found, missing, in another namespace, not a
   docker-registry one), each key of each source (the pod's secrets, the node's docker config)
   and whether it matches the image's registry, the plugins whose ``matchImages`` cover it,
   and which credential is tried first. No credential value is ever shown;
4. the puller: serial or parallel with its slots, what holds them and what waits, this pull's
   place in the queue, and the pull QPS throttle's tokens;
5. the last pulls: when, how long each waited and took, where it ended, every host it asked
   with the answer (containerd's wording for network errors);
6. the image pull backoff window;

then a verdict in plain words with the kubelet's reason and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.pods import ContainerState, PodSpec, PullAttempt, PullRequest
from kubelet_sim.core.policy import PullPolicy, default_pull_policy, should_pull_image
from kubelet_sim.core.ratelimit import TokenBucket
from kubelet_sim.core.reference import ImageReference, apply_default_image_tag, parse_normalized
from kubelet_sim.core.trace import PullTrace, Step
from kubelet_sim.credentials.dockerconfig import NodeDockerConfig
from kubelet_sim.credentials.keyring import SecretSource
from kubelet_sim.credentials.plugins import PluginProvider
from kubelet_sim.credentials.secrets import docker_config_of
from kubelet_sim.credentials.verify import ImageAccessVerifier, MustPullResult
from kubelet_sim.engine.manager import ImageManager
from kubelet_sim.engine.ports import CredentialLookup, RuntimeImageService
from kubelet_sim.engine.pullers import MAX_IMAGE_PULL_REQUESTS
from kubelet_sim.errors import Cause, ConfigError, InvalidImageNameError
from kubelet_sim.k8s.objects import Secret
from kubelet_sim.node.preflight import CredentialSource, host_lines, key_matches, key_text
from kubelet_sim.node.views import pull_attempt, pull_in_progress

__all__ = ["NodeFacts", "SecretsView", "explain_pod"]

_PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff"})

STALLED = 10.0
"""Seconds without an answer (or a layer byte) after which a pull is called stuck."""


class SecretsView(Protocol):
    """The node's copy of the API objects (:class:`~kubelet_sim.k8s.store.ObjectStore`)."""

    def get_secret(self, namespace: str, name: str) -> Secret | None: ...

    def secret_namespaces(self, name: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What of the running node an explanation reads."""

    config: KubeletConfiguration
    manager: ImageManager
    images: RuntimeImageService
    throttle: TokenBucket | None
    secrets: SecretsView
    node_config: NodeDockerConfig | None = None
    plugins: Sequence[PluginProvider] = ()
    verifier: ImageAccessVerifier | None = None
    credentials: CredentialLookup | None = None
    """The node's credential lookup for a request (what KEP-2535's check is given)."""
    hosts_dir: Path | None = None
    pod_name: Callable[[str], str] = str
    """A pod's ``NAMESPACE/NAME`` from its UID (for what holds the pull slots)."""
    now: float = 0.0
    wall: Callable[[float], float | None] = lambda t: t


@dataclass(slots=True)
class _Account:
    """One container's explanation as it is built."""

    request: PullRequest
    steps: list[dict[str, str]] = field(default_factory=list)
    reason: str = ""
    verdict: str = ""
    fix: str = ""
    ok: bool = False

    def step(self, name: str, text: str) -> None:
        self.steps.append({"step": name, "text": text})

    def conclude(self, reason: str, verdict: str, fix: str = "", *, ok: bool = False) -> None:
        self.reason, self.verdict, self.fix, self.ok = reason, verdict, fix, ok


@dataclass(frozen=True, slots=True)
class _Secrets:
    """What the pod's pull secrets came to."""

    sources: list[CredentialSource]
    missing: list[str]
    elsewhere: dict[str, list[str]]
    unusable: list[tuple[str, str]]
    """(name, why) of each secret that exists but cannot be used."""
    static: bool = False


async def explain_pod(
    spec: PodSpec,
    states: dict[str, ContainerState],
    facts: NodeFacts,
    *,
    rejected: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The account of every container of ``spec`` (``GET /pods/NS/NAME/explain``); a pod the
    node's admission refused (``rejected``: reason, message) has only that to say."""
    requests = spec.requests()
    if rejected is not None:
        reason, message = rejected
        return _pod(spec, [_refused(r, reason, message) for r in requests])
    secrets = _pod_secrets(requests[0], facts) if requests else None
    node: CredentialSource | None = None
    if facts.node_config is not None:
        entries = await facts.node_config.provide()  # as cached: what the next pull would use
        if facts.node_config.path is not None:
            node = CredentialSource(f"docker config {facts.node_config.path}", dict(entries))
    containers = []
    for request in requests:
        account = _Account(request)
        details = await _container(account, states.get(request.container), secrets, node, facts)
        containers.append(
            {
                "container": request.container,
                "kind": str(request.kind),
                "image": request.image,
                "ok": account.ok,
                "reason": account.reason,
                "verdict": account.verdict,
                "fix": account.fix,
                "steps": account.steps,
                **details,
            }
        )
    return _pod(spec, containers)


def _pod(spec: PodSpec, containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "namespace": spec.ref.namespace,
        "name": spec.ref.name,
        "uid": spec.ref.uid,
        "ok": all(c["ok"] for c in containers),
        "containers": containers,
    }


def _refused(request: PullRequest, reason: str, message: str) -> dict[str, Any]:
    return {
        "container": request.container,
        "kind": str(request.kind),
        "image": request.image,
        "ok": False,
        "reason": reason,
        "verdict": f"the node refused the pod ({message}): it never pulls or runs here",
        "fix": "the pod's nodeSelector does not match this node's labels: fix the selector, "
        "or give the node the labels (kubelet-sim run --node-labels)",
        "steps": [{"step": "admission", "text": message}],
        "pulls": [],
    }


async def _container(
    account: _Account,
    state: ContainerState | None,
    secrets: _Secrets | None,
    node: CredentialSource | None,
    facts: NodeFacts,
) -> dict[str, Any]:
    request = account.request
    details: dict[str, Any] = {}
    history = facts.manager.pull_history(request.pod.uid, request.image)
    details["pulls"] = [pull_attempt(a, facts.now) for a in history]
    trace = facts.manager.pull_in_progress(request.pod.uid, request.image)
    if trace is not None:
        details["pullInProgress"] = pull_in_progress(trace, facts.now)
    if state is not None:
        details["state"] = {"phase": str(state.phase), "reason": state.reason}
    try:
        ref = parse_normalized(apply_default_image_tag(request.image))
    except InvalidImageNameError as exc:
        account.step("reference", f"{request.image!r} does not parse: {exc.message}")
        account.conclude(
            "InvalidImageName",
            f'Failed to apply default image tag "{request.image}": {exc.message}',
            "fix the image name in the pod spec (a reference is [host[:port]/]path[:tag]"
            "[@digest]); the kubelet does not retry until the pod is changed",
        )
        return details
    default = default_pull_policy(request.image)
    how = "the default for this tag" if request.policy is default else "set in the spec"
    named = request.image if request.image == str(ref) else f"{request.image} is {ref}"
    account.step(
        "reference",
        f"{named}: registry {ref.domain}, repository {ref.repository}; "
        f"imagePullPolicy {request.policy} ({how})",
    )
    present, must_prove = await _presence(account, ref, facts)
    if request.policy is PullPolicy.NEVER and present and must_prove:
        account.conclude(
            "ErrImageNeverPull",
            f"{request.image} is on the node, but was pulled with credentials this pod has not "
            "shown (KubeletEnsureSecretPulledImages); with imagePullPolicy Never the kubelet "
            "cannot pull to prove the pod may use it",
            "give the pod a pull secret that can pull the image, or set imagePullPolicy to "
            "IfNotPresent",
        )
        return details
    if request.policy is PullPolicy.NEVER and not present:
        account.conclude(
            "ErrImageNeverPull",
            f'Container image "{request.image}" is not present with pull policy of Never',
            "put the image on the node first (kubelet-sim pull with the node's --root), or "
            "set imagePullPolicy to IfNotPresent so the kubelet pulls it",
        )
        return details
    matched, unmatched = _credentials(account, ref, secrets, node, facts)
    _hosts(account, ref, facts)
    details["queue"] = _queue(account, trace, facts)
    details["backoff"] = _backoff(account, request, facts)
    _verdict(account, ref, state, history, trace, _Keys(secrets, matched, unmatched), facts)
    return details


async def _presence(account: _Account, ref: ImageReference, facts: NodeFacts) -> tuple[bool, bool]:
    """Whether the image is present, and whether KEP-2535 makes the pod prove access."""
    request = account.request
    must_prove = False
    status = await facts.images.image_status(str(ref), request.runtime_handler)
    image_id = status.image_id if status is not None else ""
    handler = f" for runtime handler {request.runtime_handler}" if request.runtime_handler else ""
    if status is None:
        account.step("presence", f"{ref} is not on the node{handler}")
    else:
        account.step("presence", f"{ref} is on the node{handler} as {image_id}")
    pull = should_pull_image(request.policy, present=status is not None)
    if status is not None and not pull and facts.verifier is not None:
        lookup = facts.credentials

        async def credentials() -> Sequence[Credentials]:
            return await lookup(request, ref) if lookup is not None else ()

        result = await facts.verifier.check(ref, image_id, credentials)
        must_prove = result in (MustPullResult.MUST_AUTHENTICATE, MustPullResult.ERROR)
        account.step("presence", _kep2535(result))
    elif request.policy is PullPolicy.ALWAYS:
        account.step("presence", "policy Always: the kubelet pulls (resolves the tag) every start")
    elif status is not None:
        account.step("presence", f"policy {request.policy}: the present image is used")
    elif request.policy is not PullPolicy.NEVER:
        account.step("presence", f"policy {request.policy}: absent, so the kubelet pulls it")
    return status is not None, must_prove


_KEP2535 = {
    MustPullResult.CREDENTIAL_POLICY_ALLOWED: "the verification policy lets every pod use this "
    "image without proving access",
    MustPullResult.CREDENTIAL_RECORD_FOUND: "a record shows the node, or one of this pod's "
    "secrets, pulled it: the pod uses it without a pull",
    MustPullResult.MUST_AUTHENTICATE: "no record that this pod's credentials pulled it: the "
    "kubelet pulls again to prove the pod may use it",
    MustPullResult.ERROR: "the pull records cannot be read: the kubelet pulls to be safe",
}


def _kep2535(result: MustPullResult) -> str:
    return f"KubeletEnsureSecretPulledImages: {_KEP2535[result]}"


def _pod_secrets(request: PullRequest, facts: NodeFacts) -> _Secrets:
    """Each of the pod's pull secrets as the kubelet reads it (own namespace only)."""
    namespace = request.pod.namespace
    sources: list[CredentialSource] = []
    missing: list[str] = []
    elsewhere: dict[str, list[str]] = {}
    unusable: list[tuple[str, str]] = []
    for name in request.pull_secrets:
        if request.pod.static:
            unusable.append((name, "a static pod cannot use pull secrets"))
            continue
        secret = facts.secrets.get_secret(namespace, name)
        if secret is None:
            missing.append(name)
            others = [ns for ns in facts.secrets.secret_namespaces(name) if ns != namespace]
            if others:
                elsewhere[name] = others
            continue
        try:
            entries = docker_config_of(secret)
        except ConfigError as exc:
            unusable.append((name, f"{exc.field or 'its data'} does not parse ({exc.message})"))
            continue
        if entries is None:
            unusable.append((name, f"of type {secret.type}, not a docker-registry secret: ignored"))
            continue
        label = f"secret {namespace}/{name}"
        sources.append(CredentialSource(label, entries, SecretSource(namespace, name, secret.uid)))
    return _Secrets(sources, missing, elsewhere, unusable, static=request.pod.static)


def _credentials(
    account: _Account,
    ref: ImageReference,
    secrets: _Secrets | None,
    node: CredentialSource | None,
    facts: NodeFacts,
) -> tuple[list[str], list[str]]:
    """Report every credential source. Returns the keys that match, in the order the kubelet
    tries them, and the sources that have keys but none for this registry."""
    request = account.request
    namespace = request.pod.namespace
    if not request.pull_secrets:
        account.step("credentials", "the pod names no imagePullSecrets (nor does its account)")
    else:
        account.step(
            "credentials",
            f"imagePullSecrets: {', '.join(request.pull_secrets)} (ServiceAccount "
            f"{request.service_account} adds its own when the pod names none)",
        )
    sources = list(secrets.sources) if secrets is not None else []
    if secrets is not None:
        for name in secrets.missing:
            where = secrets.elsewhere.get(name)
            if where:
                account.step(
                    "credentials",
                    f"secret {name} is not in namespace {namespace} but in {', '.join(where)}: "
                    "a pod can only use secrets of its own namespace",
                )
            else:
                account.step(
                    "credentials", f"secret {name} does not exist in namespace {namespace}"
                )
        for name, why in secrets.unusable:
            account.step("credentials", f"secret {name}: {why}")
    if node is not None:
        sources.append(node)
    elif facts.node_config is not None:
        account.step("credentials", "no node docker config found")
    matches = key_matches(ref, sources)
    for match in matches:
        account.step("credentials", key_text(match, ref))
    labels = [f"{m.source} key {m.key}" for m in matches if m.matches]
    unmatched = [
        s.label
        for s in sources
        if s.entries and not any(m.matches for m in matches if m.source == s.label)
    ]
    for plugin in facts.plugins:
        if plugin.matches(ref.name):
            labels.append(f"plugin {plugin.name}")
            account.step("credentials", f"plugin {plugin.name} matches {ref.name}")
        else:
            account.step("credentials", f"plugin {plugin.name}: matchImages do not cover it")
    if labels:
        account.step("credentials", f"tried first: {labels[0]} ({len(labels)} match)")
    else:
        account.step("credentials", f"no credential matches {ref.domain}: the pull is anonymous")
    return labels, unmatched


@dataclass(frozen=True, slots=True)
class _Keys:
    """The credential facts a verdict reads."""

    secrets: _Secrets | None
    matched: list[str]
    unmatched: list[str]


def _hosts(account: _Account, ref: ImageReference, facts: NodeFacts) -> None:
    try:
        lines = host_lines(ref.domain, facts.hosts_dir)
    except ConfigError as exc:
        account.step("hosts", f"the hosts.toml for {ref.domain} is refused: {exc}")
        return
    for line in lines:
        account.step("hosts", line)


def _queue(account: _Account, trace: PullTrace | None, facts: NodeFacts) -> dict[str, Any]:
    config = facts.config
    in_flight = facts.manager.pulls_in_progress()
    pulling = [(uid, image, t) for uid, image, t in in_flight if t.pulling is not None]
    waiting = [(uid, image, t) for uid, image, t in in_flight if t.pulling is None]
    if config.serialize_image_pulls:
        slots: int | None = 1
        account.step(
            "puller",
            f"serializeImagePulls: one pull at a time, a queue of {MAX_IMAGE_PULL_REQUESTS}",
        )
    else:
        slots = config.max_parallel_image_pulls
        account.step(
            "puller",
            f"parallel pulls, maxParallelImagePulls {slots if slots else 'unlimited'}",
        )
    holders = [
        {
            "pod": facts.pod_name(uid),
            "image": image,
            **pull_in_progress(t, facts.now),
        }
        for uid, image, t in pulling
    ]
    out: dict[str, Any] = {
        "serial": config.serialize_image_pulls,
        "slots": slots,
        "pulling": holders,
        "waiting": len(waiting),
    }
    for holder in holders:
        account.step(
            "puller", f"pulling now: {holder['image']} for {holder['pod']}: {holder['step']}"
        )
    if trace is not None and trace.pulling is None:
        position = 1 + sum(1 for _, _, t in waiting if t.since < trace.since)
        out["position"] = position
        account.step(
            "puller",
            f"this pull waits for a slot: position {position} of {len(waiting)}, "
            f"for {facts.now - trace.since:.1f}s",
        )
    throttle = facts.throttle
    if throttle is None:
        account.step("throttle", "registryPullQPS 0: no pull throttle")
        out["qps"] = None
    else:
        tokens = throttle.tokens(facts.now)
        account.step(
            "throttle",
            f"registryPullQPS {throttle.qps:g}, registryBurst {throttle.burst}: "
            f"{tokens:.2f} tokens now; {throttle.rejected} pulls refused so far",
        )
        out["qps"] = {
            "qps": throttle.qps,
            "burst": throttle.burst,
            "tokens": round(tokens, 3),
            "refused": throttle.rejected,
        }
    return out


def _backoff(account: _Account, request: PullRequest, facts: NodeFacts) -> dict[str, Any] | None:
    backoff = facts.manager.backoff
    key = (request.pod.uid, request.image)
    if key not in backoff:
        return None
    remaining = backoff.remaining(key, facts.now)
    period = backoff.get(key)
    account.step(
        "backoff",
        f"image pull backoff {period:g}s (doubling to {backoff.max_duration:g}s): next attempt "
        + (f"in {remaining:.0f}s" if remaining > 0 else "at the next pod sync"),
    )
    return {"seconds": period, "remainingSeconds": round(max(0.0, remaining), 3)}


def _verdict(
    account: _Account,
    ref: ImageReference,
    state: ContainerState | None,
    history: tuple[PullAttempt, ...],
    trace: PullTrace | None,
    keys: _Keys,
    facts: NodeFacts,
) -> None:
    last = history[-1] if history else None
    if trace is not None:
        _in_progress(account, trace, facts)
        return
    shown = state.reason if state is not None else ""
    failing = shown in _PULL_FAILURES
    if last is not None and last.reason and (failing or state is None or not state.image_ready):
        _failed(account, ref, last, keys, facts, shown)
        return
    if state is not None and state.image_ready:
        slow = _failed_mirrors(last)
        if slow:
            account.conclude(
                "",
                f"the image is on the node; its last pull went past {slow}",
                "fix or remove that mirror in hosts.toml: every pull asks it first and waits "
                "for its failure",
                ok=True,
            )
        else:
            account.conclude("", f"the image is on the node ({state.image_id})", ok=True)
        return
    shown = state.reason if state is not None and state.reason else "ContainerCreating"
    account.conclude(
        shown,
        f"no pull has started for this container yet (it is {shown}: init containers run "
        "first, and a pod sandbox must be made before any pull)",
        "wait for the pod worker's next sync; if this stays, describe the pod for its events",
    )


def _failed_mirrors(last: PullAttempt | None) -> str:
    if last is None:
        return ""
    failed = {(h.host, h.error) for h in last.hosts if h.error and h.role == "mirror"}
    if not failed:
        return ""
    return "; ".join(f"mirror {host} ({error})" for host, error in sorted(failed))


def _in_progress(account: _Account, trace: PullTrace, facts: NodeFacts) -> None:
    now = facts.now
    if trace.pulling is None:
        holders = [t for _, _, t in facts.manager.pulls_in_progress() if t.pulling is not None]
        stuck = [t for t in holders if _stalled(t, now)]
        waited = now - trace.since
        if holders and len(stuck) == len(holders):
            hosts = sorted({_stall_host(t) for t in stuck})
            longest = max(_stall_seconds(t, now) for t in stuck)
            account.conclude(
                "ContainerCreating",
                f"waiting {waited:.0f}s for a pull slot: every slot ({len(holders)}) is held by "
                f"a pull that has had no answer from {', '.join(hosts)} for up to "
                f"{longest:.0f}s",
                f"{', '.join(hosts)} does not answer: fix it, or take it out of hosts.toml. "
                "The stuck pulls give up only when the registry transport's timeouts expire; "
                "more slots (maxParallelImagePulls, serializeImagePulls: false) keep other "
                "images moving meanwhile",
            )
            return
        account.conclude(
            "ContainerCreating",
            f"waiting {waited:.0f}s for a pull slot behind {len(holders)} pull(s) in progress",
            "nothing is wrong yet; more slots (maxParallelImagePulls) shorten the wait",
            ok=True,
        )
        return
    if _stalled(trace, now):
        host = _stall_host(trace)
        account.conclude(
            "ContainerCreating",
            f"{trace.describe()}: no answer from {host} for {_stall_seconds(trace, now):.0f}s",
            f"{host} does not answer: fix it or take it out of hosts.toml; the pull gives up "
            "when the registry transport's timeouts expire",
        )
        return
    account.conclude(
        "ContainerCreating",
        f"{trace.describe()} for {now - trace.pulling:.1f}s",
        "nothing is wrong: the pull is moving",
        ok=True,
    )


def _stalled(trace: PullTrace, now: float) -> bool:
    return _stall_seconds(trace, now) >= STALLED


def _stall_seconds(trace: PullTrace, now: float) -> float:
    """How long the pull has waited for an answer: the open request, or the last layer byte
    (for a pull sharing an identical one, that one's)."""
    if trace.step == Step.SHARING and trace.leader is not None:
        return _stall_seconds(trace.leader, now)
    if trace.request is not None:
        return now - trace.request[2]
    if trace.step == Step.DOWNLOADING:
        return now - (trace.last_byte if trace.last_byte is not None else trace.pulling or now)
    return 0.0


def _stall_host(trace: PullTrace) -> str:
    if trace.step == Step.SHARING and trace.leader is not None:
        return _stall_host(trace.leader)
    if trace.request is not None:
        return trace.request[1]
    return trace.hosts[-1].host if trace.hosts else "the registry"


def _failed(
    account: _Account,
    ref: ImageReference,
    last: PullAttempt,
    keys: _Keys,
    facts: NodeFacts,
    shown: str,
) -> None:
    # The reason the container shows now: ErrImagePull, then ImagePullBackOff while it waits.
    reason = shown if shown in _PULL_FAILURES else last.reason
    cause = last.cause
    if cause == Cause.QPS:
        throttle = facts.throttle
        limits = (
            f"registryPullQPS {throttle.qps:g} with registryBurst {throttle.burst}"
            if throttle is not None
            else "the pull throttle"
        )
        account.conclude(
            reason,
            f"the node's pull throttle refused the pull ({limits}): too many pulls started "
            "at once; it was never sent to a registry",
            "raise registryPullQPS and registryBurst in the KubeletConfiguration (0 turns the "
            "throttle off); the pull is retried after its backoff",
        )
        return
    if cause == Cause.AUTH:
        _auth(account, ref, reason, keys)
        return
    verdicts = {
        Cause.NOT_FOUND: (
            f"{ref} does not exist: the registry has no {ref.identifier} in {ref.repository}",
            "check the tag or digest in the pod spec (or push it)",
        ),
        Cause.PLATFORM: (
            f"the image has no manifest for this node's platform: {last.message}",
            "build and push the image for the node's platform, or run the pod on a node of an "
            "offered platform",
        ),
        Cause.BLOB_MISSING: (
            f"a blob the manifest lists is missing from {ref.repository}: {last.message}",
            "push the image again: the registry lost a blob its manifest names",
        ),
        Cause.UNREACHABLE: (
            f"no host answered: {_host_errors(last) or last.message}",
            "the registry (or every mirror and the upstream) is down or stalls: check it and "
            "hosts.toml",
        ),
        Cause.NOT_AN_IMAGE: (
            f"the reference is not a container image: {last.message}",
            "point the pod at an image, not an artifact",
        ),
        Cause.RATE_LIMITED: (
            f"the registry refused the pull as too many requests (429): {last.message}",
            "pull less at once (registryPullQPS, maxParallelImagePulls), pull through a mirror, "
            "or raise the registry's rate limit; the pull is retried after its backoff",
        ),
        Cause.SERVER_ERROR: (
            f"the registry failed to answer (5xx): {last.message}",
            "check the registry's health and its logs; the pull is retried after its backoff",
        ),
    }
    verdict, fix = verdicts.get(
        _cause(cause), (f"the pull failed: {last.message}", "see the error and the events")
    )
    account.conclude(reason, verdict, fix)


def _cause(text: str) -> Cause:
    try:
        return Cause(text)
    except ValueError:
        return Cause.OTHER


def _host_errors(last: PullAttempt) -> str:
    seen = dict.fromkeys(f"{h.role} {h.host}: {h.error}" for h in last.hosts if h.error)
    return "; ".join(seen)


def _auth(
    account: _Account,
    ref: ImageReference,
    reason: str,
    keys: _Keys,
) -> None:
    namespace = account.request.pod.namespace
    secrets, matched = keys.secrets, keys.matched
    if matched:
        account.conclude(
            reason,
            f"{ref.domain} refused the credentials tried ({', '.join(matched)})",
            "the user name or password is wrong, or that user may not pull "
            f"{ref.repository}: recreate the secret with the right login",
        )
        return
    if secrets is not None:
        for name, where in secrets.elsewhere.items():
            account.conclude(
                reason,
                f"{ref.domain} wants credentials; the secret {name} is in namespace "
                f"{', '.join(where)}; pods can only use secrets of their own namespace",
                f"create the secret {name} in namespace {namespace} (or move the pod)",
            )
            return
        if secrets.static:
            account.conclude(
                reason,
                f"{ref.domain} wants credentials, and a static pod cannot use pull secrets (its "
                "mirror pod may not reference Secrets, so the node never reads them)",
                f"give the node itself credentials for {ref.domain}: its docker config "
                "(config.json) or a credential provider plugin",
            )
            return
        for name, why in secrets.unusable:
            account.conclude(
                reason,
                f"{ref.domain} wants credentials; the pull secret {name} cannot be used: {why}",
                f"recreate {name} as a docker-registry secret: kubectl create secret "
                f"docker-registry {name} --docker-server={ref.domain} -n {namespace} ...",
            )
            return
        if secrets.missing:
            names = ", ".join(secrets.missing)
            account.conclude(
                reason,
                f"{ref.domain} wants credentials; the pull secret {names} does not exist in "
                f"namespace {namespace}",
                f"create it: kubectl create secret docker-registry {secrets.missing[0]} "
                f"--docker-server={ref.domain} -n {namespace} ...",
            )
            return
    if keys.unmatched:
        account.conclude(
            reason,
            f"{ref.domain} wants credentials; {', '.join(keys.unmatched)} has credentials, "
            f"but none under a key for {ref.domain} (its keys name other registries)",
            f"recreate it with --docker-server={ref.domain} (the key must name the registry "
            "the image is on, with its port)",
        )
        return
    account.conclude(
        reason,
        f"{ref.domain} wants credentials and none match it: the pull was anonymous",
        f"create a docker-registry secret for {ref.domain} in namespace {namespace} and name it "
        "in the pod's imagePullSecrets (or its ServiceAccount's)",
    )
