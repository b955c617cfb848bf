"""Crash inputs left: how many fuzzed inputs make a parser or validator fail other than as documented?

Every entry point that reads user-supplied (or registry-supplied) text is fed inputs made from valid
seeds (``config/``, ``benchmarks/workloads/``, ``tests/data/`` and a few written here): byte flips,
deletions, truncation, splices, repeated lines and documents, deep nesting, integers past Python's
4300-digit limit (decimal, hex, octal, binary, base 60), non-string keys, YAML anchor/alias bombs,
tags (``!x``, ``!!binary``, ...), impossible dates, unicode and NUL bytes, invalid UTF-8, wrong types
for every field, and random nested structures built from each format's vocabulary. Generation is
deterministic for a given ``--seed`` and ``--count`` (split evenly over the entry points). A part is
at most 256 KiB, and only ``--big-inputs`` inputs per entry point carry a hazard that grows with its
size (an alias bomb to 10**10 values, nesting 60,000 deep, 60,000 documents): each hang costs the
whole deadline.

Each input runs in a worker process (one per core) with a deadline (``--timeout``, 5 s) and a memory
cap. It is *handled* when the entry point raises its documented error (a ``KubeletSimError``; the
``ValueError`` of Go duration parsing; what argparse turns into a usage error), *accepted* when it
returns, and a *crash* otherwise: any other exception (TypeError, ValueError, RecursionError,
MemoryError, ...), a hang past the deadline, a peak RSS above ``--max-rss-mib`` or a worker that died
(a C stack overflow). The figure is the number of crash inputs; distinct crashes are grouped by
exception type and the innermost kubelet_sim frame (the most repeated one for a RecursionError).

    .venv/bin/python benchmarks/fuzz_inputs.py [--count 80000] [--seed 1] [--workers 2]
        [--only NAME] [--show] [--save DIR] [--minimize]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import faulthandler
import functools
import hashlib
import io
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import resource
import signal
import sys
import sysconfig
import tempfile
import threading
import time
import tomllib
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelet_sim.cli.commands import bench as bench_command
from kubelet_sim.cli.commands import store as store_command
from kubelet_sim.cli.main import configure_logging
from kubelet_sim.config.kubelet import load_kubelet_config, parse_kubelet_config
from kubelet_sim.core import reference
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.durations import (
    format_go_duration,
    format_go_duration_ns,
    parse_go_duration,
    parse_go_duration_ns,
)
from kubelet_sim.core.platforms import (
    Platform,
    all_platforms,
    default_matcher,
    host_platform,
    node_matcher,
    normalize,
    only,
    parse_platform,
    select_manifest,
)
from kubelet_sim.core.policy import default_pull_policy
from kubelet_sim.credentials.dockerconfig import parse_config_json, parse_dockercfg
from kubelet_sim.credentials.keyring import BasicKeyring
from kubelet_sim.credentials.plugin_config import load_credential_provider_config
from kubelet_sim.credentials.plugins import _PluginFailed, decode_response
from kubelet_sim.credentials.secrets import pod_secrets
from kubelet_sim.errors import InvalidImageNameError, KubeletSimError
from kubelet_sim.k8s.admission import pod_spec
from kubelet_sim.k8s.objects import stable_uid
from kubelet_sim.k8s.store import ObjectStore
from kubelet_sim.node.httpserver import parse_listen
from kubelet_sim.node.static import StaticPods
from kubelet_sim.registry.auth import basic_header
from kubelet_sim.registry.boundary import error_from_response, parse_retry_after
from kubelet_sim.registry.challenge import parse_challenges, pick_challenge
from kubelet_sim.registry.hosts import hosts_for, registry_hosts
from kubelet_sim.registry.manifests import ImageIndex, parse_manifest, verify_content
from kubelet_sim.registry.tokens import (
    check_realm,
    error_code,
    parse_token_response,
    plan_token_request,
)
from kubelet_sim.workloads import SCHEMA, load_workload, read_trace

ROOT = Path(__file__).resolve().parent.parent
Case = tuple[bytes, ...]
"""One input: the parts an entry point takes (file contents, a header, a flag value...)."""

MAX_NODES = 20_000  # values in a mutated tree (its duplications stop there)
BIG_SHARE = 0.02  # of an entry point's inputs may be big, up to --big-inputs of them
MAX_PART = 256 * 1024
"""Characters of one generated part: the pure-Python YAML parser reads about 0.5 MB/s, so a hang
past the deadline is super-linear work (an alias bomb, a quadratic loop), not a big file."""
HANDLED, ACCEPTED, CRASH = "handled", "accepted", "crash"


class Refused(KubeletSimError):
    """The harness's mark for an input the code refused without raising (logged, skipped)."""


# -- entry points -------------------------------------------------------------------------------


def _text(part: bytes) -> str:
    """A part as a str, as ``sys.argv`` or a header would hold it (undecodable bytes escaped)."""
    return part.decode("utf-8", "surrogateescape")


def _header(part: bytes) -> str:
    """A header value as httpx decodes it: ASCII or UTF-8, else Latin-1 (never a surrogate)."""
    try:
        return part.decode("utf-8")
    except UnicodeDecodeError:
        return part.decode("latin-1")


def _each(handled: tuple[type[BaseException], ...], *calls: Callable[[], object]) -> None:
    """Run every call: a handled error does not skip the others. The input is handled (the first
    error re-raised) when every call refused it, accepted when one took it."""
    first: BaseException | None = None
    for call in calls:
        try:
            call()
        except handled as exc:
            first = first or exc
        else:
            first = first or _ACCEPTED
    if first is not None and first is not _ACCEPTED:
        raise first


_SIM: tuple[type[BaseException], ...] = (KubeletSimError,)
_ACCEPTED = Refused("accepted")


def run_k8s(case: Case, scratch: Path) -> None:
    """``POST /apply`` / ``kubelet-sim apply``: parse, admit, then what the kubelet reads back."""
    store = ObjectStore()
    store.apply_text(case[0], source="fuzz.yaml", new_uid=stable_uid)
    store.apply_text(case[0], source="fuzz.yaml", new_uid=stable_uid)  # the update path
    for pod in store.pods():
        pod_spec(pod)
        secrets = pod_secrets(store, pod.namespace, pod.image_pull_secrets)
        if secrets.keyring is not None:
            for container in pod.all_containers():
                for creds in secrets.keyring.lookup(container.image):
                    creds.fingerprint()
                    _ = creds.credential_hash


def run_static(case: Case, scratch: Path) -> None:
    """A file in ``staticPodPath`` (the daemon's watch loop: invalid files are logged)."""
    pods = StaticPods("fuzz-node")
    pods.update({scratch / "manifests" / "pod.yaml": case[0]})
    if not pods.pods():
        raise Refused("no static pod from the file")
    for pod in pods.pods().values():
        pod_spec(pod, static=True)


def run_kubelet(case: Case, scratch: Path) -> None:
    """``--config FILE`` / ``config validate [--strict]``, and its ``to_dict`` round trip."""
    path = scratch / "kubelet-fuzz.yaml"
    path.write_bytes(case[0])

    def load(strict: bool) -> None:
        config = load_kubelet_config(path, strict=strict)
        parse_kubelet_config(yaml.safe_dump(config.to_dict()), "round-trip")

    _each(_SIM, lambda: load(False), lambda: load(True))


def run_hosts(case: Case, scratch: Path) -> None:
    """``certs.d/<host>/hosts.toml`` for the registry named by the first part."""
    folder = scratch / "certs.d" / "_default"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.toml").write_bytes(case[1])
    hosts = registry_hosts(_text(case[0]), scratch / "certs.d")
    for host in hosts:
        host.base_url()
    hosts_for("pull", hosts)


def run_workload(case: Case, scratch: Path) -> None:
    """``kubelet-sim bench WORKLOAD`` up to the end of validation (traces and kubelet files read)."""
    path = scratch / "workload.yaml"
    path.write_bytes(case[0])
    workload = load_workload(path)
    workload.references()
    for template in workload.pods:
        template.images()
        template.arrival.describe()


def run_trace(case: Case, scratch: Path) -> None:
    """A workload's ``arrival: {trace: FILE}``."""
    path = scratch / "fuzz-trace.txt"
    path.write_bytes(case[0])
    read_trace(path, "workload.yaml:1")


def run_reference(case: Case, scratch: Path) -> None:
    """``kubelet-sim ref IMAGE`` and every parse of a container's ``image``."""
    value = _text(case[0])

    def quoted(call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            try:
                return call()
            except InvalidImageNameError as exc:
                reference.image_name_error_text(exc)  # the kubelet's message
                raise

        return run

    def plain() -> None:
        ref = reference.parse(value)
        _ = (str(ref), ref.familiar(), ref.identifier, ref.with_default_tag(), ref.trimmed())

    _each(
        _SIM,
        quoted(plain),
        quoted(lambda: reference.parse_normalized(value).familiar()),
        quoted(lambda: reference.parse_named(value)),
        quoted(lambda: str(reference.parse_docker_ref(value))),
        quoted(lambda: reference.parse_image_name(value)),
        quoted(lambda: reference.apply_default_image_tag(value)),
        lambda: reference.is_normalized(value),
        lambda: default_pull_policy(value),
        lambda: Digest.parse(value.rpartition("@")[2]),
    )


def run_manifest(case: Case, scratch: Path) -> None:
    """A registry's manifest answer (body, ``Content-Type``), then the node's platform pick."""
    body = case[0]
    digest = Digest.from_bytes(body)
    verify_content(body, digest, what="manifest")
    parsed = parse_manifest(body, _header(case[1]) or None, digest)
    if isinstance(parsed, ImageIndex):
        entries = [d.platform for d in parsed.manifests]
        for descriptor in parsed.manifests:
            descriptor.to_json()
        windows = Platform("windows", "amd64", os_version="10.0.17763.5122")
        _each(
            _SIM,
            lambda: select_manifest(default_matcher(), entries),
            lambda: select_manifest(Platform("linux", "arm64", "v8"), entries),
            lambda: select_manifest(windows, entries),
            lambda: select_manifest(all_platforms(), entries),
        )
    else:
        _ = parsed.size
        for descriptor in (parsed.config, *parsed.layers):
            descriptor.to_json()


def run_dockerconfig(case: Case, scratch: Path) -> None:
    """``config.json`` / ``.dockercfg``, the keyring built from it, and the auth it leads to."""
    image = _text(case[1])

    def keyring(parse: Callable[[bytes], Any]) -> None:
        ring = BasicKeyring()
        ring.add(None, parse(case[0]))
        ring.keys()
        for target in (image, "registry.example.com/team/app", "docker.io/library/nginx"):
            for creds in ring.lookup(target):
                repr(creds)
                creds.fingerprint()
                _ = creds.credential_hash
                _each(_SIM, functools.partial(basic_header, creds))
                plan_token_request(
                    "https://auth.example.com/token",
                    "registry.example.com",
                    ["repository:team/app:pull"],
                    creds,
                    client_id="kubelet-sim",
                    oauth=bool(creds.identity_token),
                )

    _each(_SIM, lambda: keyring(parse_config_json), lambda: keyring(parse_dockercfg))


def run_provider_config(case: Case, scratch: Path) -> None:
    """``--image-credential-provider-config FILE``."""
    path = scratch / "provider-config.yaml"
    path.write_bytes(case[0])
    load_credential_provider_config(path)


def run_plugin_response(case: Case, scratch: Path) -> None:
    """What an exec credential plugin printed on stdout."""
    decode_response(case[0], "credentialprovider.kubelet.k8s.io/v1")


def run_duration(case: Case, scratch: Path) -> None:
    """Go ``time.ParseDuration`` (config fields, hosts.toml ``dial_timeout``, workload timings)."""
    value = _text(case[0])
    _each(
        (ValueError,),
        lambda: format_go_duration_ns(parse_go_duration_ns(value)),
        lambda: format_go_duration(parse_go_duration(value)),
    )


def run_platform(case: Case, scratch: Path) -> None:
    """``--platform`` and a workload's platforms: containerd ``platforms.Parse`` and matching."""
    wanted = parse_platform(_text(case[0]))
    normalize(wanted)
    str(wanted)
    wanted.to_oci()
    only(wanted).match(host_platform())
    node_matcher(wanted).match(Platform("linux", "amd64"))


def run_compare(case: Case, scratch: Path) -> None:
    """``kubelet-sim bench --compare A.json B.json`` in each ``--output`` format."""
    a, b = scratch / "a.json", scratch / "b.json"
    a.write_bytes(case[0])
    b.write_bytes(case[1])
    for output in ("json", "markdown", "text"):
        with contextlib.redirect_stdout(io.StringIO()):
            bench_command._compare(argparse.Namespace(compare=[a, b], output=output))


def run_registry(case: Case, scratch: Path) -> None:
    """A registry's or token server's answer: a JSON body and a header value."""
    body, header = case[0], _header(case[1])

    def challenges() -> None:
        found = parse_challenges([header])
        for challenge in found:
            _ = (challenge.realm, challenge.service, challenge.scopes, challenge.error)
        chosen = pick_challenge(found)
        if chosen is not None and chosen.scheme == "bearer":
            check_realm(chosen.realm, "registry.example.com")

    _each(
        _SIM,
        lambda: parse_token_response(body, realm="https://auth.example.com/token"),
        lambda: error_code(body),
        lambda: str(error_from_response("GET", "https://registry.example.com/v2/a", 401, body)),
        challenges,
        lambda: parse_retry_after(header, now=0.0),
    )


def _argparse_type(convert: Callable[[str], object], value: str) -> None:
    """A ``type=`` converter as argparse runs it: these errors become a usage error."""
    try:
        convert(value)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        raise Refused(str(exc)) from None


def run_flags(case: Case, scratch: Path) -> None:
    """Flag values parsed by hand: ``run --listen``, ``store gc --capacity/--image-*-gc-age``."""
    value = _text(case[0])
    _each(
        _SIM,
        lambda: parse_listen(value),
        lambda: _argparse_type(store_command.parse_bytes, value),
        lambda: _argparse_type(store_command.parse_duration, value),
    )


# -- seeds --------------------------------------------------------------------------------------


def _files(*patterns: str) -> list[bytes]:
    return [path.read_bytes() for pattern in patterns for path in sorted(ROOT.glob(pattern))]


def _b(*texts: str) -> list[bytes]:
    return [text.encode() for text in texts]


def _j(*docs: object) -> list[bytes]:
    return [json.dumps(doc).encode() for doc in docs]


_HEX64 = hashlib.sha256(b"fuzz").hexdigest()
_DIGEST = f"sha256:{_HEX64}"

_K8S_LIST = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "builder", "namespace": "ci"},
         "imagePullSecrets": [{"name": "regcred"}]},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockercfg",
         "metadata": {"name": "regcred", "namespace": "ci"},
         "stringData": {".dockercfg": '{"r.example.com": {"auth": "dXNlcjpwYXNz"}}'}},
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "job", "namespace": "ci", "uid": "u-1", "annotations": {"a": "b"}},
         "spec": {"serviceAccountName": "builder", "runtimeClassName": "gvisor",
                  "containers": [{"name": "c", "image": f"r.example.com/team/app@{_DIGEST}",
                                  "imagePullPolicy": "IfNotPresent"}]}},
    ],
}  # fmt: skip

_KUBELET = """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
serializeImagePulls: false
maxParallelImagePulls: 4
registryPullQPS: 10
registryBurst: 20
imageGCHighThresholdPercent: 90
imageGCLowThresholdPercent: 70
imageMinimumGCAge: 1m30s
imageMaximumGCAge: 168h
imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages
preloadedImagesVerificationAllowlist: [docker.io/library/nginx, registry.k8s.io/*]
featureGates: {KubeletEnsureSecretPulledImages: true, ImageMaximumGCAge: true}
staticPodPath: manifests
runtimeRequestTimeout: 5m
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
clusterDomain: cluster.local
"""

_HOSTS = (
    """\
server = "https://registry-1.docker.io"

[host."https://mirror.example.com"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/certs/mirror.pem"
  skip_verify = false
  dial_timeout = "3s"
  [host."https://mirror.example.com".header]
    x-custom-1 = "value"
    x-custom-2 = ["a", "b"]

[host."http://localhost:5000/v2/proxy"]
  capabilities = ["pull"]
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"], "both.pem"]
  override_path = true
""",
    """\
server = "http://192.168.1.10:5000"
ca = ["a.crt", "b.crt"]
skip_verify = true
""",
    "",
)

_WORKLOAD = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: full
description: every section once
seed: 7
bases:
  - name: os
    layers: [1MiB, {count: 2, size: 64KiB}]
images:
  - repository: app/svc-{i}
    count: 2
    tags: ["1.0", 2]
    base: os
    platforms: [linux/amd64, linux/arm64/v8]
    compress: true
    mediaTypes: docker
    layers: [1MiB, {choice: [1KiB, 2KiB]},
             {count: 3, size: {lognormal: {median: 64KiB, sigma: 1.5}, max: 1MiB}}]
nodes:
  - name: edge
    count: 2
    platform: linux/arm64
    kubeletConfigFile: kubelet.yaml
    kubelet: {registryPullQPS: 0, imageMinimumGCAge: 30s}
    cache: warm
    prePulled: ["app/svc-0:1.0"]
    maxConcurrentDownloads: 2
    transport: {maxAttempts: 3, backoffInitial: 100ms, backoffMax: 2s, stallTimeout: 5s,
                connectTimeout: 1s, requestDeadline: 30s}
    timing: {resyncPeriod: 2s, resyncJitter: 0.1, backoffInitial: 1s, backoffMax: 10s}
pods:
  - name: svc
    namespace: apps
    spec:
      imagePullSecrets: [{name: reg}]
      containers: [{name: c, image: "app/svc-{i%2}:1.0", imagePullPolicy: IfNotPresent}]
    arrival: {trace: trace.txt}
    placement: {kind: random, seed: 3, nodes: [edge]}
  - name: burst
    count: 4
    spec: {containers: [{name: c, image: "app/svc-1:2"}]}
    arrival: {bursts: {size: 2, every: 1s}, start: 0.5}
    placement: round-robin
secrets:
  - {name: reg, namespace: apps, username: u, password: p}
faults:
  seed: 9
  windows:
    - {kind: latency, start: 0s, end: 2s, delay: 100ms, jitter: 10ms}
    - {kind: errors, start: 1, status: 503, share: 0.2}
    - {kind: resets, afterBytes: 64KiB, share: 0.1}
    - {kind: outage, start: 3s, end: 4s}
run: {timeout: 30s, proxy: true}
"""

_TRACE = "0\n0.5,2\n# a comment\n2001-01-01T00:00:01Z,3\n12.5\n"

_MANIFESTS: tuple[tuple[object, str], ...] = (
    ({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _DIGEST,
         "size": 1234, "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": "sha256:" + "b" * 64, "size": 1234,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": "sha256:" + "c" * 64, "size": 99,
         "platform": {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1",
                      "os.features": ["win32k"]}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": "sha256:" + "d" * 64, "size": 566,
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
         "platform": {"os": "unknown", "architecture": "unknown"}}]},
     "application/vnd.oci.image.index.v1+json"),
    ({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _DIGEST,
                 "size": 7023},
      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                  "digest": "sha256:" + "e" * 64, "size": 32654,
                  "urls": ["https://example.com/layer"], "annotations": {"a": "b"}},
                 {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                  "digest": "sha256:" + "f" * 64, "size": 16724, "data": "aGVsbG8="}],
      "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}},
     "application/vnd.oci.image.manifest.v1+json"),
    ({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                 "digest": _DIGEST, "size": 1469},
      "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                  "digest": "sha256:" + "a" * 64, "size": 2479}]}, ""),
    ({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "digest": _DIGEST, "size": 528, "platform": {"os": "linux", "architecture": "arm",
                                                      "variant": "v7"}}]},
     "application/json"),
    ({"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": []}, "text/plain"),
)  # fmt: skip

_REPORT: dict[str, Any] = {
    "schema": SCHEMA,
    "workload": {"name": "smoke", "description": "", "file": "smoke.yaml", "sha256": _HEX64,
                 "seed": 1},
    "run": {"started_at": "2026-11-21T10:00:00Z", "timed_out": False, "timeout": 8.0},
    "summary": {"nodes": 3, "pods_ready": 9,
                "time_to_ready": {"count": 9, "p50": 0.087, "p90": 0.2, "p99": 0.241, "max": 0.3},
                "makespan": 1.25, "arrival_lag": {"p50": 0.01, "max": 0.02}, "pulls": 13,
                "pull_errors": 4, "cache_hits": 2, "bytes_pulled": 8388608,
                "registry_requests": 56, "registry_retries": 0, "backoffs": 4,
                "peak_pulls_in_flight_max": 3,
                "resources": {"cpu_seconds": 0.4, "peak_rss_mib": 75.0}},
    "groups": {"pool": {"platform": "linux/amd64", "time_to_ready": {"p50": 0.087, "p99": 0.241},
                        "makespan": 1.25}},
}  # fmt: skip


def _report_b() -> dict[str, Any]:
    b = copy.deepcopy(_REPORT)
    b["workload"]["name"] = "parallel"
    b["summary"].update(makespan=0.61, pulls=0, bytes_pulled=0, arrival_lag={})
    b["groups"]["pool"]["makespan"] = 0.61
    b["groups"]["other"] = {"time_to_ready": {"p50": None, "p99": None}, "makespan": None}
    return b


_DOCKER_CONFIGS = _j(
    {"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
               "registry.example.com:5000": {"username": "u", "password": "p", "email": "e@x"},
               "*.example.org/team": {"identitytoken": "tok"},
               "http://user:pw@[::1]:5000/v2/": {"registrytoken": "rt"}}},
    {"r.example.com": {"auth": "dXNlcjpwYXNz", "email": "a@b"}, "registry.example.com": None},
) + [
    base64.b64decode(yaml.safe_load(secret)["data"][".dockerconfigjson"])
    for secret in _files("tests/data/kubectl-secret-*.yaml")
]  # fmt: skip

_PROVIDER = """\
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages: ["*.dkr.ecr.*.amazonaws.com", "*.dkr.ecr.*.amazonaws.com.cn"]
    defaultCacheDuration: 12h
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: [get-credentials]
    env: [{name: AWS_PROFILE, value: temp}]
  - name: gcr
    matchImages: ["gcr.io", "*.gcr.io"]
    defaultCacheDuration: "0"
    apiVersion: credentialprovider.kubelet.k8s.io/v1alpha1
"""

_PLUGIN_ANSWERS = _j(
    {"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderResponse",
     "cacheKeyType": "Registry", "cacheDuration": "6h",
     "auth": {"*.registry.io": {"username": "u", "password": "p"}, "reg.io/team": {}}},
    {"apiVersion": "credentialprovider.kubelet.k8s.io/v1", "kind": "CredentialProviderResponse",
     "cacheKeyType": "Image"},
)  # fmt: skip

_REGISTRY = (
    (b'{"token":"abc","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}',
     b'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
     b'scope="repository:app:pull"'),
    (b'{"access_token":"x.y.z","token":"t"}', b'Basic realm="registry", Bearer realm=http://a/t'),
    (b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required",'
     b'"detail":[{"Type":"repository","Name":"app","Action":"pull"}]}]}', b"120"),
    (b'{"error":"invalid_grant"}', b"Wed, 21 Oct 2015 07:28:00 GMT"),
)  # fmt: skip

_REFERENCES = (
    "busybox", "nginx:1.25", "docker.io/library/nginx:latest", "localhost:5000/demo/web:1.0",
    "registry.k8s.io/pause:3.9", f"gcr.io/project/image@{_DIGEST}", "[::1]:5000/x/y:tag",
    "Foo/bar", "a.b_c/foo", _HEX64, f"myregistry.io:5000/a/b/c:v1.0@{_DIGEST}",
    "example.com/x:tag@sha512:" + "a" * 128, "index.docker.io/user/app",
)  # fmt: skip
_DURATIONS = ("2m0s", "1h30m", "300ms", "1.5h", "-1s", "0", "+5µs", "1us", "9223372036854775807ns",
              "1.0000000001s", ".5m", "3", "1h1m1s1ms1us1ns")  # fmt: skip
_PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/arm", "windows(10.0.17763+win32k)/amd64",
              "darwin", "arm64", "linux", "freebsd/386", "windows(10.0.20348%2E1)/amd64",
              "linux/arm/v5", "aarch64")  # fmt: skip
_FLAGS = ("127.0.0.1:10250", "[::1]:8080", "0.0.0.0:0", "10Gi", "500M", "1048576", "1TB", "2m",
          "1.5", "1h30m", "-1s")  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One entry point: how to call it, what it takes and which errors it documents."""

    name: str
    formats: tuple[str, ...]  # per part: yaml, json, toml, text (lines) or line (one string)
    seeds: tuple[Case, ...]
    run: Callable[[Case, Path], None]
    handled: tuple[type[BaseException], ...] = _SIM


def _cases(*parts: Sequence[bytes]) -> tuple[Case, ...]:
    """Seeds for a multi-part entry: the i-th seed takes the i-th value of each part (cycled)."""
    longest = max(len(p) for p in parts)
    return tuple(tuple(p[i % len(p)] for p in parts) for i in range(longest))


def _entries() -> tuple[Entry, ...]:
    k8s = _files("config/pods/*.yaml", "config/apply/*.yaml", "tests/data/kubectl-secret-*.yaml")
    k8s += _j(_K8S_LIST)
    report_pair = (_j(_REPORT, _report_b()), _j(_report_b(), _REPORT))
    return (
        Entry("k8s manifests (apply)", ("yaml",), _cases(k8s), run_k8s),
        Entry("static pod file", ("yaml",), _cases(k8s), run_static),
        Entry(
            "KubeletConfiguration",
            ("yaml",),
            _cases(
                _files("config/kubelet.yaml", "tests/data/kubeadm-kubelet-config.yaml")
                + _b(_KUBELET)
            ),
            run_kubelet,
        ),
        Entry(
            "hosts.toml",
            ("line", "toml"),
            _cases(_b("registry.example.com:5000", "docker.io", "localhost:5000"), _b(*_HOSTS)),
            run_hosts,
        ),
        Entry(
            "workload file",
            ("yaml",),
            _cases(_files("benchmarks/workloads/*.yaml") + _b(_WORKLOAD)),
            run_workload,
        ),
        Entry(
            "workload trace",
            ("text",),
            _cases(_b(_TRACE, "1.5\n", "2024-05-01T10:00:00+02:00,2")),
            run_trace,
        ),
        Entry("image reference", ("line",), _cases(_b(*_REFERENCES)), run_reference),
        Entry(
            "manifest / index",
            ("json", "line"),
            tuple((json.dumps(doc).encode(), ct.encode()) for doc, ct in _MANIFESTS),
            run_manifest,
        ),
        Entry(
            "docker config.json + keyring",
            ("json", "line"),
            _cases(
                _DOCKER_CONFIGS,
                _b(
                    "registry.example.com:5000/team/app",
                    "docker.io/library/nginx",
                    "x.example.org/team/a",
                ),
            ),
            run_dockerconfig,
        ),
        Entry(
            "credential provider config",
            ("yaml",),
            _cases(_b(_PROVIDER) + _j(yaml.safe_load(_PROVIDER))),
            run_provider_config,
        ),
        Entry(
            "credential plugin response",
            ("json",),
            _cases(_PLUGIN_ANSWERS),
            run_plugin_response,
            (_PluginFailed,),
        ),
        Entry("Go duration", ("line",), _cases(_b(*_DURATIONS)), run_duration, (ValueError,)),
        Entry("platform", ("line",), _cases(_b(*_PLATFORMS)), run_platform),
        Entry("bench --compare reports", ("json", "json"), _cases(*report_pair), run_compare),
        Entry("registry answers", ("json", "line"), _REGISTRY, run_registry),
        Entry("CLI flag values", ("line",), _cases(_b(*_FLAGS)), run_flags),
    )


ENTRIES = _entries()


# -- hostile fragments --------------------------------------------------------------------------

_N = 5000  # past sys.int_max_str_digits (4300)
_HUGE_DEC, _HUGE_HEX, _HUGE_OCT = "1" * _N, "0x" + "f" * _N, "0" + "7" * _N
_HUGE_BIN, _HUGE_SEXA = "0b" + "1" * (4 * _N), "1" + ":59" * 3000

_YAML_VALUES = (
    _HUGE_DEC, _HUGE_HEX, _HUGE_OCT, _HUGE_BIN, _HUGE_SEXA, "-" + _HUGE_HEX, "9" * 400 + ".0",
    "1.0e+400", ".nan", ".inf", "-.inf", "~", "null", "true", "no", "on", "0", "-1", "-0",
    "2147483648", "-2147483649", "9223372036854775808", "0x7fffffff", "1_000", "0.5", "1e3",
    "2001-13-01", "2001-02-30", "2001-12-14 25:00:00", "2001-12-14t21:59:43.10-05:00",
    "0000-01-01", "!x foo", "!x", "!!binary aGVsbG8=", "!!binary '@@@'", "!!set {a, b}",
    "!!omap [a: 1, b: 2]", "!!pairs [a: 1]", "!!python/object/apply:os.system ['true']",
    "!!int x", "!!float x", "!!timestamp x", "!!bool maybe", "!!null x", "!!str 1", "!!map [1]",
    "!!seq {a: 1}", "!<tag:yaml.org,2002:int> " + _HUGE_HEX, "!!merge x", "!!value =",
    "*undefined", "&a [*a]", "&m {k: *m}", "&s x", '""', "''", '"\\ud800"', '"\\udcff"',
    '"\\x00"', '"\\0"', '"a\\0b"', '"\\U0010ffff"', '"\\e\\a"', '"\\N\\_\\L\\P"', "a" * 100_000,
    "İ", "ß", "ǅ", "ﬁ", "\u202eevil", "١٢٣", "²", "１２３", "😀", "a\u0085b", "a\u2028b",
    "\ufeffx", "[]", "{}", "[1, [2, [3]]]", "{a: {b: {c: d}}}", "[a, b", "{a: 1",
    "[*undefined]", "{<<: *undefined}", "/dev/zero", "/etc/hostname", "..", ".",
    "'../../../etc/hostname'", '"nul\\0path"', "kubelet.yaml", "trace.txt", "workload.yaml",
    '"1h"', '"-1s"', '"9223372036854775807ns"', '"9223372036854775808ns"', '"1.5µs"',
    '"' + "9" * _N + 's"', '"0"', '"1' + "0" * 400 + 'GiB"', '"1.5.5MiB"', '"-1MiB"', '"1e9"',
    "1" + "0" * 400 + "GiB", "99999999999999999999TiB", '"UPPER/case"', '"' + "a" * 300 + '"',
    '"x@sha256:' + "A" * 64 + '"', '"{i%0}"', '"{i%' + "9" * _N + '}"', '"{i%99999999999}"',
    '"{i}"', '"linux/amd64/v8/x"', '"windows(10.0%zz)/amd64"', '"*"', '"/"',
)  # fmt: skip
_YAML_KEYS = (
    "1", "true", "null", "~", ".nan", "2001-01-01", "2001-13-01", _HUGE_HEX, _HUGE_DEC, "[a, b]",
    "{a: 1}", "!x key", "*undefined", "&k key", '"\\ud800"', "''", '"\\0"', "<<", "a" * 2000,
    "İ", "apiVersion", "kind", "spec", "-1", "1.5", "? [x]", "!!binary aGk=", "0o17", "0b101",
)  # fmt: skip
_JSON_VALUES = (
    _HUGE_DEC, "-" + _HUGE_DEC, "1e400", "-1e400", "1" + "0" * 400 + ".0", "NaN", "Infinity",
    "-Infinity", "-0", "0.0", "1E5", "2147483648", "9223372036854775808", "18446744073709551616",
    "-1", '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"a\\u0000b"', '"' + "a" * 100_000 + '"',
    '""', '" "', "true", "false", "null", "[]", "{}", "[null]", '{"":null}', '[1,"a",[2]]',
    '{"a":{"b":{}}}', '"İ"', '"😀"', '"\\u202e"', '"/dev/zero"', f'"{_DIGEST}"',
    '"sha256:' + "A" * 64 + '"', '"sha512:' + "a" * 128 + '"', '"md5:0123"', '"linux"',
    '"unknown"', '"application/vnd.oci.image.index.v1+json"',
    '"application/vnd.oci.image.manifest.v1+json"',
    '"application/vnd.docker.distribution.manifest.v1+prettyjws"', '"12h"', '"-1s"',
    '"' + "9" * _N + 's"', '"Zm9vOmJhcg=="', '"Zm9v"', '"!!!!"', '"/w=="', '"Zm9vOmJh\\ncg=="',
    '"dXNlcjpwYXNz\\r\\n"', '"\\ud800:x"', '"http://[::1"', '"https://u:p@h:99999/x"',
)  # fmt: skip
_JSON_KEYS = (
    '""', '"\\ud800"', '"\\u0000"', '"' + "a" * 10_000 + '"', '"apiVersion"', '"kind"',
    '"auths"', '"AUTHS"', '"mediaType"', '"schemaVersion"', '"manifests"', '"platform"',
    '"os.features"', '"İ"', '"1"', '"summary"', '"groups"', '"workload"', '"errors"',
)  # fmt: skip
_TOML_VALUES = (
    "1" + "0" * _N, "0x" + "f" * _N, "0o" + "7" * _N, "0b" + "1" * (4 * _N), "inf", "nan", "-inf",
    "1e400", "1979-05-27T07:32:00Z", "1979-13-27", "07:32:00", '"\\u0000"', '"\\ud800"',
    '"\\U0010ffff"', '""', "''", "true", "[]", "{}", "[1, 'a']", "'literal'", '"""multi\nline"""',
    "-0", "+1", "1_000", "[[]]", "{ a = { b = 1 } }", '"' + "a" * 100_000 + '"', '"/dev/zero"',
    '"3s"', '"-3s"', '"' + "9" * _N + 's"', '"http://[::1"', '"https://h:99999"', '"https://h:0"',
    '"https://h:-1"', '"https://u:p@h/x"', '"ftp://h"', '"h/../.."', '"https://"', '"//"',
    '"http://h:80/v2"', '"PULL"', '"referrers"', '["pull", 1]', '"a\\r\\nb"', '"İ"', '"h:x"',
)  # fmt: skip
_TOML_KEYS = (
    '"\\u0000"', "1", "true", "a.b.c", '""', "host", "server", "'lit'", "capabilities", "ca",
    "client", "header", "skip_verify", "override_path", "dial_timeout", '"\\ud800"',
)  # fmt: skip
_TEXT_VALUES = (
    "1e400", "nan", "inf", "-inf", _HUGE_DEC, "0,1" + "0" * _N, "0,-1", "0,0", "0," + "9" * 20,
    "2001-13-01T00:00:00", "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-23:59",
    "2001-01-01T00:00:00\x00", "٣", "1_0", " ", "#", "\udcff", "9" * 400, "1e308,2", ",", "0,1,2",
    "2024-02-30", "24:00", "-5", "0x10", "1,\u0661",
)  # fmt: skip
_LINE_TOKENS = (
    "", " ", "\t", "\n", "\x00", "\x7f", "\udcff", "é", "İ", "²", "١", "µ", "μ", "ß", "😀", "%",
    "%zz", "%ff", "%2F", "%25", "[", "]", "::", "@", "@" + _DIGEST, "sha256:" + "A" * 64, ":" + "9" * _N,
    "9" * _N, "9" * 30, "1e400", "-", "+", ".", "..", "/", "//", "*", "?", "(", ")", "(+)", "a" * 300,
    "a" * 100_000, "ns", "µs", "h", "m", ".5", "9223372036854775807", "9223372036854775808",
    "18446744073709551616", "\\", '"', "'", ",", "=", '="', "Bearer ", "realm=", 'realm="',
    "http://", "https://[::1", "localhost", "Gi", "Pi", "B", "KiB",
)  # fmt: skip
_UNICODE = ("\u0085", "\u2028", "\ufeff", "\u202e", "\u0301", "\U0001f600", "\ud7ff", "\uffff",
            "\U0010ffff", "\u00a0", "\u3000", "\u0130")  # fmt: skip
_INVALID_UTF8 = ("\udcff", "\udcc3(", "\udced\udca0\udc80", "\udcc0\udcaf", "\udcf8")
_FLIP = "\x00\t\n\r \"#%&'*,-./0123456789:;<=>?@AZ[\\]^_`az{|}~!\x7f\u0085é\udcff"

_PY_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 2**64, 10**30, 0.5,
    -0.0, 1e308, math.inf, -math.inf, math.nan, "", " ", "0", "-1", "true", "null", "\x00",
    "a\x00b", "x" * 10_000, "İ", "😀", "/dev/zero", "../../etc/hostname", "kubelet.yaml",
    "trace.txt", [], {}, [None], [1, "a", [2]], {"": None}, {"a": {"b": {"c": {}}}},
)  # fmt: skip

_VALUE_RE = {
    "yaml": re.compile(r"(?<=: )[^\n#]+|(?<=- )[^\n#:]+$", re.M),
    "json": re.compile(r'(?<=:)\s*(?:"(?:[^"\\]|\\.)*"|[-+\w.]+|\[\]|\{\})'),
    "toml": re.compile(r"(?<== )[^\n]+"),
    "text": re.compile(r"[^\n,#]+"),
}
_KEY_RE = {
    "yaml": re.compile(r"^[ \t]*(?:- )?([^\s:#\-][^:\n#]*?)(?=:(?: |$))", re.M),
    "json": re.compile(r'("(?:[^"\\]|\\.)*")(?=\s*:)'),
    "toml": re.compile(r"^[ \t]*([A-Za-z0-9_\"'.\-]+)(?= *=)", re.M),
}
_FRAGMENTS = {
    "yaml": (_YAML_VALUES, _YAML_KEYS),
    "json": (_JSON_VALUES, _JSON_KEYS),
    "toml": (_TOML_VALUES, _TOML_KEYS),
    "text": (_TEXT_VALUES, _TEXT_VALUES),
}
_DEPTHS = (20, 200, 400, 999, 1001)  # around MAX_NESTING_DEPTH and the recursion limit
_BIG_DEPTHS = (3000, 20_000, 60_000)
_BIG_OPS = {
    "yaml": ("bomb", "bomb", "bomb", "nest", "nest", "docs", "dup_line"),
    "json": ("nest", "nest", "dup_line"),
    "toml": ("nest", "dup_line"),
    "text": ("dup_line",),
}
_TEXT_OPS = {
    "yaml": ("flip", "delete", "truncate", "dup_span", "dup_line", "insert", "value", "value",
             "value", "key", "key", "nest", "bomb", "anchor", "splice", "bytes", "unicode", "docs",
             "indent"),
    "json": ("flip", "delete", "truncate", "dup_span", "insert", "value", "value", "value", "key",
             "nest", "splice", "bytes", "unicode"),
    "toml": ("flip", "delete", "truncate", "dup_span", "dup_line", "insert", "value", "value",
             "value", "key", "nest", "splice", "bytes", "unicode", "indent"),
    "text": ("flip", "delete", "truncate", "dup_span", "dup_line", "insert", "value", "value",
             "splice", "bytes", "unicode"),
}  # fmt: skip


# -- generation ---------------------------------------------------------------------------------


def _parse_tree(text: str, fmt: str) -> Any:
    """A seed part as a value tree, for structural mutation (None when it does not parse)."""
    try:
        if fmt == "yaml":
            return list(yaml.load_all(text, Loader=yaml.CSafeLoader))
        if fmt == "json":
            return json.loads(text)
        if fmt == "toml":
            return tomllib.loads(text)
    except (ValueError, yaml.YAMLError):
        return None
    return None


def _walk(tree: Any, limit: int = 10 * MAX_NODES) -> Iterator[Any]:
    """Every value of ``tree`` (depth first), at most ``limit`` of them."""
    stack = [tree]
    while stack and limit > 0:
        limit -= 1
        node = stack.pop()
        yield node
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _toml_key(key: object) -> str:
    return json.dumps(str(key), ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if value != value
            else {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + ", ".join(items) + " }"
    return json.dumps(str(value), ensure_ascii=False)


def _toml(tree: dict[Any, Any]) -> str:
    """A small TOML writer: ``[a."b"]`` sections for tables of tables, inline values otherwise."""
    lines, sections = [], []
    for key, value in tree.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            sections.append((key, value))
        elif value is not None:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, tables in sections:
        for name, table in tables.items():
            lines.append(f"[{_toml_key(key)}.{_toml_key(name)}]")
            lines += [
                f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None
            ]
    return "\n".join(lines) + "\n"


class Generator:
    """Deterministic inputs for one entry point: mutated seeds and random structures."""

    def __init__(self, entry: Entry, seed: int, big_inputs: int) -> None:
        digest = hashlib.sha256(f"{seed}/{entry.name}".encode()).digest()
        self.rng = random.Random(int.from_bytes(digest[:8], "big"))
        self.entry = entry
        self.texts = [[_text(part) for part in case] for case in entry.seeds]
        self.trees = [
            [_parse_tree(text, fmt) for text, fmt in zip(texts, entry.formats, strict=True)]
            for texts in self.texts
        ]
        keys: set[str] = set()
        values: set[Any] = set()
        for texts, trees in zip(self.texts, self.trees, strict=True):
            for text, tree in zip(texts, trees, strict=True):
                for node in _walk(tree):
                    if isinstance(node, dict):
                        keys.update(str(k) for k in node)
                    elif isinstance(node, str | int | float) and not isinstance(node, bool):
                        values.add(node)
                if tree is None:
                    values.update(t for t in re.split(r"[\s/:@,]+", text) if t)
        self.keys, self.values = sorted(keys), sorted(values, key=repr)
        self.tokens = sorted({str(v) for v in values} | set(_LINE_TOKENS))
        self.big, self.big_left = False, big_inputs

    def _many(self, small: Sequence[int], big: Sequence[int]) -> int:
        """A count or depth: from ``big`` for a big input, else from ``small``."""
        return self.rng.choice(big if self.big else small)

    def case(self) -> Case:
        rng = self.rng
        # A few inputs per entry point may be big (deep nesting, large alias bombs, thousands of
        # lines or documents): those are what hang, and every hang costs the whole deadline.
        self.big = self.big_left > 0 and rng.random() < BIG_SHARE
        self.big_left -= self.big
        index = rng.randrange(len(self.texts))
        parts = list(self.texts[index])
        chosen = range(len(parts)) if rng.random() < 0.2 else [rng.randrange(len(parts))]
        for p in chosen:
            parts[p] = self._part(index, p)
        return tuple(_encode(part[:MAX_PART]) for part in parts)

    def _part(self, index: int, p: int) -> str:
        rng, fmt = self.rng, self.entry.formats[p]
        text, tree = self.texts[index][p], self.trees[index][p]
        try:
            if fmt == "line":
                return self._line(text, p)
            if self.big:  # one hazard that grows with its size, each in turn
                ops = _BIG_OPS[fmt]
                return self._text_op(text, fmt, p, ops[self.big_left % len(ops)])
            if tree is not None and rng.random() < 0.4:
                text = self._structured(copy.deepcopy(tree), fmt)
                return self._text_op(text, fmt, p) if rng.random() < 0.3 else text
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                text = self._text_op(text, fmt, p)
        except (ValueError, IndexError, TypeError, yaml.YAMLError, RecursionError):
            pass  # a mutation that does not apply to this text: keep what there is
        return text

    # structure ----------------------------------------------------------------------------

    def _scalar(self) -> Any:
        rng, r = self.rng, self.rng.random()
        if r < 0.35 and self.values:
            return rng.choice(self.values)
        if r < 0.7:
            return copy.deepcopy(rng.choice(_PY_VALUES))
        if r < 0.85:
            return rng.choice((rng.randint(-(10**6), 10**6), rng.uniform(-1e6, 1e6)))
        ranges = ((32, 127), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x110000))
        return "".join(chr(rng.randrange(*rng.choice(ranges))) for _ in range(rng.randint(1, 12)))

    def _key(self) -> Any:
        r = self.rng.random()
        if r < 0.6 and self.keys:
            return self.rng.choice(self.keys)
        if r < 0.8:
            return str(self._scalar())
        return self.rng.choice((1, True, None, 1.5, -1, "", "\x00", "İ"))

    def random_value(self, depth: int) -> Any:
        rng, r = self.rng, self.rng.random()
        if depth <= 0 or r < 0.45:
            return self._scalar()
        if r < 0.7:
            return [self.random_value(depth - 1) for _ in range(rng.randrange(5))]
        return {self._key(): self.random_value(depth - 1) for _ in range(rng.randrange(5))}

    def _structured(self, tree: Any, fmt: str) -> str:
        rng = self.rng
        if rng.random() < 0.1:  # a whole random document in the seed's vocabulary
            doc: dict[Any, Any] = {}
            for source in _walk(tree):
                if isinstance(source, dict):
                    doc.update(
                        (k, source[k]) for k in ("apiVersion", "kind", "schema") if k in source
                    )
            doc.update((self._key(), self.random_value(4)) for _ in range(rng.randint(1, 8)))
            tree = [doc] if fmt == "yaml" else doc
        for _ in range(rng.choice((1, 1, 2, 3, 6, 12))):
            self._mutate_tree(tree)
        if fmt == "yaml":
            return yaml.dump_all(
                tree if isinstance(tree, list) else [tree],
                Dumper=yaml.CSafeDumper,
                sort_keys=False,
                default_flow_style=rng.choice((False, None, True)),
                allow_unicode=rng.random() < 0.5,
                width=rng.choice((80, 1_000_000)),
            )
        if fmt == "json":
            return json.dumps(tree, ensure_ascii=rng.random() < 0.5, indent=rng.choice((None, 2)))
        return _toml(tree if isinstance(tree, dict) else {"value": tree})

    def _mutate_tree(self, tree: Any) -> None:
        rng = self.rng
        slots = [
            (node, key)
            for node in _walk(tree)
            for key in (list(node) if isinstance(node, dict) else range(len(node)))
            if isinstance(node, dict | list)
        ]
        if not slots:
            return
        node, key = rng.choice(slots)
        op = rng.choice(("replace", "replace", "replace", "delete", "add", "dup", "wrap", "rekey",
                         "swap", "vocab"))  # fmt: skip
        if op == "replace":
            node[key] = self.random_value(rng.choice((0, 0, 1, 3)))
        elif op == "delete":
            del node[key]
        elif op == "add":
            targets = [n for n in _walk(tree) if isinstance(n, dict)]
            if targets:
                rng.choice(targets)[self._key()] = self.random_value(2)
        elif op == "dup" and isinstance(node, list) and len(slots) < MAX_NODES:
            # Copies, not references: a shared subtree would be walked once per reference.
            item, times = node[key], self._many((1, 2, 50), (1000, 10_000))
            size = sum(1 for _ in _walk(item))
            node.extend(copy.deepcopy(item) for _ in range(min(times, MAX_NODES // size)))
        elif op == "wrap":
            node[key] = rng.choice(([node[key]], {self._key(): node[key]}))
        elif op == "rekey" and isinstance(node, dict):
            new = self._key()
            items = [(new if k == key else k, v) for k, v in node.items()]
            node.clear()
            node.update(items)
        elif op == "swap":
            other, other_key = rng.choice(slots)
            inside = any(n is other for n in _walk(node[key])) or any(
                n is node for n in _walk(other[other_key])
            )
            if not inside:  # swapping a value into itself would make a cycle
                node[key], other[other_key] = other[other_key], node[key]
        elif self.values:
            node[key] = rng.choice(self.values)

    # text ---------------------------------------------------------------------------------

    def _fragment(self, fmt: str, kind: str) -> str:
        values, keys = _FRAGMENTS[fmt]
        pool = keys if kind == "key" else values
        if self.rng.random() < 0.2 and self.values:
            return str(self.rng.choice(self.values))
        return self.rng.choice(pool)

    def _nest(self, fmt: str) -> str:
        depth = self._many(_DEPTHS, _BIG_DEPTHS)
        if self.rng.random() < 0.5:
            return "[" * depth + "]" * depth
        inner = {"yaml": "{a: ", "json": '{"a": ', "toml": "{ a = ", "text": "("}[fmt]
        return inner * depth + "1" + ("}" if fmt != "text" else ")") * depth

    def _bomb(self) -> tuple[str, str]:
        big = self.big
        # 2-5 x 2-5 (at most 3125 values, under the alias limits); big: 6-10 x 6-10 (to 10**10)
        levels, width = (
            self.rng.randint(*(6, 10) if big else (2, 5)),
            self.rng.randint(*(6, 10) if big else (2, 5)),
        )
        lines = ["b0: &b0 [" + ", ".join(["lol"] * width) + "]"]
        lines += [
            f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * width) + "]" for i in range(1, levels)
        ]
        return "\n".join(lines) + "\n", f"*b{levels - 1}"

    def _text_op(self, text: str, fmt: str, p: int, op: str = "") -> str:
        rng = self.rng
        op = op or rng.choice(_TEXT_OPS[fmt])
        n = len(text)
        pos = rng.randrange(n + 1)
        values = list(_VALUE_RE[fmt].finditer(text))
        if op == "flip":
            chars = list(text)
            for _ in range(rng.randint(1, 4)):
                if chars:
                    chars[rng.randrange(len(chars))] = rng.choice(_FLIP)
            return "".join(chars)
        if op == "delete":
            return text[:pos] + text[pos + rng.randint(1, 64) :]
        if op == "truncate":
            return text[:pos]
        if op == "dup_span":
            start = rng.randrange(n + 1)
            return text[:pos] + text[start : start + rng.randint(1, 200)] + text[pos:]
        if op in ("dup_line", "indent"):
            lines = text.splitlines(keepends=True) or [""]
            i = rng.randrange(len(lines))
            if op == "indent":
                lines[i] = (
                    lines[i].lstrip() if rng.random() < 0.5 else " " * rng.randint(1, 8) + lines[i]
                )
            else:
                count = self._many((2, 3, 10, 50), (1000, 20_000))
                lines[i : i + 1] = [lines[i]] * max(
                    2, min(count, MAX_PART // max(1, len(lines[i])))
                )
            return "".join(lines)
        if op == "insert":
            return text[:pos] + self._fragment(fmt, "value") + text[pos:]
        if op in ("value", "nest") and values:
            m = rng.choice(values)
            new = self._fragment(fmt, "value") if op == "value" else self._nest(fmt)
            return text[: m.start()] + (" " if fmt == "json" else "") + new + text[m.end() :]
        if op == "nest":
            return text + "\nnested:\n" + "- " * self._many(_DEPTHS, _BIG_DEPTHS) + "x\n"
        if op == "key" and fmt in _KEY_RE:
            keys = list(_KEY_RE[fmt].finditer(text))
            if keys:
                start, end = rng.choice(keys).span(1)
                return text[:start] + self._fragment(fmt, "key") + text[end:]
        if op == "bomb":
            definitions, ref = self._bomb()
            text = definitions + text
            values = list(_VALUE_RE[fmt].finditer(text))[definitions.count("\n") :]
            if values and rng.random() < 0.7:
                m = rng.choice(values)
                text = text[: m.start()] + ref + text[m.end() :]
            return text
        if op == "anchor" and len(values) >= 2:
            first, second = sorted(rng.sample(values, 2), key=lambda m: m.start())
            anchored = text[: first.start()] + "&x " + text[first.start() : second.start()]
            return anchored + rng.choice(("*x", "[*x, *x]", "{<<: *x}")) + text[second.end() :]
        if op == "splice":
            other = rng.choice(self.texts)[p]
            return text[:pos] + other[rng.randrange(len(other) + 1) :]
        if op == "bytes":
            if rng.random() < 0.2:
                codec = rng.choice(("utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252"))
                return text.encode(codec, "replace").decode("utf-8", "surrogateescape")
            return text[:pos] + rng.choice(_INVALID_UTF8) + text[pos:]
        if op == "unicode":
            return text[:pos] + rng.choice(_UNICODE) + text[pos:]
        if op == "docs":
            if rng.random() < 0.5:
                return text + ("\n---\n" + text) * self._many((1, 2, 5), (50, 500))
            return "---\n" * self._many((2, 10, 100), (20_000, 60_000)) + text
        return text[:pos] + self._fragment(fmt, "value") + text[pos:]

    def _line(self, text: str, p: int) -> str:
        rng = self.rng
        if self.big:
            start = rng.randrange(len(text) + 1)
            span = text[start : start + rng.randint(1, 16)] or rng.choice(self.tokens) or "a"
            return text[:start] + span * self._many((), (300, 5000, 60_000)) + text[start:]
        if rng.random() < 0.15:  # random tokens and separators
            return "".join(
                rng.choice(self.tokens) + rng.choice(("", "", "/", ":", "@", ".", "-", " ", ","))
                for _ in range(rng.randint(1, 6))
            )
        for _ in range(rng.choice((1, 1, 2, 3))):
            n = len(text)
            pos = rng.randrange(n + 1)
            op = rng.randrange(9)
            if op == 0 and n:
                i = rng.randrange(n)
                text = text[:i] + rng.choice(_FLIP) + text[i + 1 :]
            elif op in (1, 2):
                text = text[:pos] + rng.choice(self.tokens) + text[pos:]
            elif op == 3:
                text = text[:pos] + text[pos + rng.randint(1, 8) :]
            elif op == 4:
                start = rng.randrange(n + 1)
                span = text[start : start + rng.randint(1, 16)]
                text = text[:pos] + span * self._many((1, 2, 20), (300, 5000)) + text[pos:]
            elif op == 5:
                text = text[:pos]
            elif op == 6:
                text = text.upper() if rng.random() < 0.5 else text.swapcase()
            elif op == 7:
                text = rng.choice(self.texts)[p][: rng.randrange(n + 1)] + text[pos:]
            else:
                text = text[:pos] + rng.choice(_UNICODE + _INVALID_UTF8) + text[pos:]
        return text


def _encode(text: str) -> bytes:
    """Back to bytes: escaped bytes as they were, other lone surrogates as CESU-8 (invalid)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def generate(
    entries: Sequence[int], count: int, seed: int, big_inputs: int
) -> Iterator[tuple[int, Case]]:
    """``count`` inputs round-robin over ``entries`` (indexes into ENTRIES); seeds come first."""
    quotas = {i: count // len(entries) + (k < count % len(entries)) for k, i in enumerate(entries)}
    generators = {i: Generator(ENTRIES[i], seed, big_inputs) for i in entries}
    seen: set[bytes] = set()
    pending = {i: list(ENTRIES[i].seeds) for i in entries}
    while any(quotas.values()):
        for i in entries:
            if not quotas[i]:
                continue
            quotas[i] -= 1
            for _ in range(20):  # distinct inputs; a generator that repeats itself gets 20 tries
                try:
                    case = pending[i].pop(0) if pending[i] else generators[i].case()
                except Exception as exc:  # a harness bug: say so, carry on with a seed
                    print(f"generator {ENTRIES[i].name}: {exc!r}", file=sys.stderr)
                    case = ENTRIES[i].seeds[0]
                key = hashlib.sha256(repr((i, case)).encode()).digest()
                if key not in seen:
                    break
            seen.add(key)
            yield i, case


# -- workers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # handled, accepted, crash
    error: str = ""  # exception type (or Timeout, WorkerDied, ExcessiveMemory)
    location: str = ""  # innermost kubelet_sim frame
    last_frame: str = ""
    message: str = ""
    seconds: float = 0.0
    restart: bool = False

    @property
    def signature(self) -> tuple[str, str]:
        return self.error, self.location


_PREFIXES = sorted(
    {str(ROOT) + os.sep, *(p + os.sep for p in sys.path if p and os.path.isdir(p)),
     sysconfig.get_paths()["stdlib"] + os.sep},
    key=len,
    reverse=True,
)  # fmt: skip
_PKG = os.sep + "kubelet_sim" + os.sep


def _short(filename: str) -> str:
    for prefix in _PREFIXES:
        if filename.startswith(prefix):
            return filename[len(prefix) :]
    return filename


def _describe(exc: BaseException, timeout: float) -> Outcome:
    frames = list(traceback.extract_tb(exc.__traceback__))
    if isinstance(exc, Deadline) and len(frames) > 1:
        frames = frames[:-1]  # the alarm handler: the last frame is where the alarm arrived
    ours = [f for f in frames if _PKG in f.filename]
    repeated = Counter((f.filename, f.name) for f in ours).most_common(1)
    if isinstance(exc, RecursionError) and repeated and repeated[0][1] > 1:
        (where, _), _ = repeated[0]  # the recursing kubelet_sim function
        lines = Counter(f.lineno for f in ours if f.filename == where)
        frame = next(
            f for f in ours if f.filename == where and f.lineno == lines.most_common(1)[0][0]
        )
    else:
        frame = ours[-1] if ours else frames[-1]
    last = frames[-1]
    if isinstance(exc, Deadline):
        return Outcome(
            CRASH,
            "Timeout",
            f"{_short(frame.filename)}:{frame.lineno} ({frame.name})",
            f"{_short(last.filename)}:{last.lineno} ({last.name})",
            f"still running after {timeout:g} s",
            restart=True,
        )
    try:
        message = f"{exc}"[:300]
    except Exception as inner:  # a message that cannot be shown (an int past the digit limit)
        message = f"<str() failed: {type(inner).__name__}>"
    return Outcome(
        CRASH,
        type(exc).__name__,
        f"{_short(frame.filename)}:{frame.lineno} ({frame.name})",
        f"{_short(last.filename)}:{last.lineno} ({last.name})",
        message,
        restart=isinstance(exc, MemoryError),
    )


class Deadline(BaseException):
    """Raised by SIGALRM in a worker when an input runs past the deadline (not an Exception, so
    no ``except Exception`` in the code under test can take it for an error of its own)."""


def _alarm(signum: int, frame: object) -> None:
    raise Deadline


def run_one(entry: Entry, case: Case, scratch: Path, timeout: float) -> Outcome:
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        entry.run(case, scratch)
    except entry.handled:
        return Outcome(HANDLED)
    except BaseException as exc:
        return _describe(exc, timeout)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return Outcome(ACCEPTED)


def _worker(conn: multiprocessing.connection.Connection, scratch: Path, max_rss_mib: int) -> None:
    """Run inputs sent over ``conn`` and answer each with its Outcome; a hang in C code (which
    the alarm cannot interrupt) and a death are the parent's to detect."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    sys.stdout = sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    configure_logging("critical")
    cap = 4 * 1024**3 + 2 * max_rss_mib * 1024**2  # address space: memory bombs fail, not swap
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    stack = open(scratch / "stack.txt", "w", encoding="utf-8")  # noqa: SIM115 - for faulthandler
    faulthandler.enable(stack)
    faulthandler.register(signal.SIGUSR1, stack, all_threads=False)
    signal.signal(signal.SIGALRM, _alarm)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        index, case, timeout = job
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        outcome = run_one(ENTRIES[index], case, scratch, timeout)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if peak > max(before, max_rss_mib * 1024) and outcome.kind != CRASH:
            outcome = Outcome(CRASH, "ExcessiveMemory", "-", "-", f"peak RSS {peak >> 10} MiB")
        restart = outcome.restart or outcome.error == "ExcessiveMemory"
        conn.send(_with(outcome, seconds, restart))
        if restart:
            return


def _with(outcome: Outcome, seconds: float, restart: bool) -> Outcome:
    return Outcome(outcome.kind, outcome.error, outcome.location, outcome.last_frame,
                   outcome.message, seconds, restart)  # fmt: skip


def _stack_frames(text: str) -> tuple[str, str]:
    """(innermost kubelet_sim frame, innermost frame) from a faulthandler dump."""
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', text)
    if not frames:
        return "-", "-"
    ours = [f for f in frames if _PKG in f[0]]
    name, line, func = (ours or frames)[0]
    last = frames[0]
    return f"{_short(name)}:{line} ({func})", f"{_short(last[0])}:{last[1]} ({last[2]})"


class Worker:
    """One worker process and the input it is running; restarted after a hang or a death."""

    def __init__(self, scratch: Path, max_rss_mib: int, timeout: float) -> None:
        self.scratch, self.max_rss_mib, self.timeout = scratch, max_rss_mib, timeout
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "trace.txt").write_text(_TRACE, encoding="utf-8")
        (scratch / "kubelet.yaml").write_bytes((ROOT / "config" / "kubelet.yaml").read_bytes())
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker, args=(child, self.scratch, self.max_rss_mib), daemon=True
        )
        self.process.start()
        child.close()

    def _stop(self) -> str:
        """Kill the worker (a stack dump first if it is alive); what faulthandler wrote."""
        if self.process.is_alive() and self.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGUSR1)
            time.sleep(0.2)
        self.process.kill()
        self.process.join()
        self.conn.close()
        try:
            return (self.scratch / "stack.txt").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def run(self, index: int, case: Case, timeout: float | None = None) -> Outcome:
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            self.conn.send((index, case, limit))
            if self.conn.poll(limit + 2.0):  # a hang in C code, which SIGALRM cannot interrupt
                outcome: Outcome = self.conn.recv()
                if outcome.restart:
                    self._stop()
                    self._start()
                return outcome
            error, what = "Timeout", f"no answer after {limit:g} s"
        except (EOFError, OSError):
            self.process.join(1)
            error, what = "WorkerDied", f"exit status {self.process.exitcode}"
        location, last = _stack_frames(self._stop())
        self._start()
        return Outcome(CRASH, error, location, last, what, time.monotonic() - started)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Tally:
    inputs: int = 0
    handled: int = 0
    accepted: int = 0
    crashes: int = 0
    seconds: float = 0.0
    slowest: float = 0.0


@dataclass
class Crash:
    entry: int
    error: str
    location: str
    last_frame: str
    message: str
    count: int = 0
    examples: list[Case] = field(default_factory=list)
    minimal: Case | None = None


def _size(case: Case) -> tuple[int, bytes]:
    return sum(len(p) for p in case), hashlib.sha256(repr(case).encode()).digest()


def fuzz(
    entries: Sequence[int], count: int, seed: int, big: int, workers: list[Worker], keep: int
) -> tuple[dict[int, Tally], dict[tuple[int, str, str], Crash]]:
    tallies = {i: Tally() for i in entries}
    crashes: dict[tuple[int, str, str], Crash] = {}
    jobs = generate(entries, count, seed, big)
    lock = threading.Lock()
    done = [0]
    started = time.monotonic()

    def record(index: int, case: Case, outcome: Outcome) -> None:
        tally = tallies[index]
        tally.inputs += 1
        tally.seconds += outcome.seconds
        tally.slowest = max(tally.slowest, outcome.seconds)
        if outcome.kind == HANDLED:
            tally.handled += 1
        elif outcome.kind == ACCEPTED:
            tally.accepted += 1
        else:
            tally.crashes += 1
            key = (index, *outcome.signature)
            crash = crashes.setdefault(
                key,
                Crash(index, outcome.error, outcome.location, outcome.last_frame, outcome.message),
            )
            crash.count += 1
            crash.examples.append(case)
            if len(crash.examples) > keep:  # keep the smallest inputs
                crash.examples.sort(key=_size)
                del crash.examples[keep:]
        done[0] += 1
        if done[0] % 5000 == 0:
            rate = done[0] / (time.monotonic() - started)
            print(f"  ... {done[0]:,} inputs ({rate:,.0f}/s)", file=sys.stderr, flush=True)

    def drive(worker: Worker) -> None:
        while True:
            with lock:
                job = next(jobs, None)
            if job is None:
                return
            outcome = worker.run(*job)
            with lock:
                record(*job, outcome)

    threads = [threading.Thread(target=drive, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for crash in crashes.values():
        crash.examples.sort(key=_size)
    return tallies, crashes


def minimize(worker: Worker, crash: Crash, seconds: float) -> Case:
    """The smallest input found with the same crash: chunks of lines, then of bytes, removed."""
    deadline = time.monotonic() + seconds
    parts = list(crash.examples[0])

    def same(candidate: list[bytes]) -> bool:
        outcome = worker.run(crash.entry, tuple(candidate))
        return outcome.kind == CRASH and outcome.signature == (crash.error, crash.location)

    for p in range(len(parts)):
        for by_line in (True, False):
            units: list[bytes] = (
                parts[p].splitlines(keepends=True) if by_line else [bytes([b]) for b in parts[p]]
            )
            chunk = max(1, len(units) // 2)
            while chunk >= 1 and time.monotonic() < deadline:
                i = 0
                while i < len(units) and time.monotonic() < deadline:
                    trial = units[:i] + units[i + chunk :]
                    if same([*parts[:p], b"".join(trial), *parts[p + 1 :]]):
                        units = trial
                    else:
                        i += chunk
                chunk //= 2
            parts[p] = b"".join(units)
    return tuple(parts)


def literal(data: bytes, limit: int = 0) -> str:
    """A Python expression for ``data``: a str literal when it is UTF-8, runs written as ``x * n``."""
    try:
        value: str | bytes = data.decode("utf-8")
    except UnicodeDecodeError:
        value = data
    pieces: list[str] = []
    start = i = 0
    while i < len(value):
        best = (0, 0)
        for period in range(1, 9):
            unit = value[i : i + period]
            if len(unit) < period:
                break
            k = 1
            while value[i + k * period : i + (k + 1) * period] == unit:
                k += 1
            if k >= 3 and k * period >= 24 and k * period > best[0] * best[1]:
                best = (period, k)
        if best[0]:
            if start < i:
                pieces.append(repr(value[start:i]))
            period, k = best
            pieces.append(f"{value[i : i + period]!r} * {k}")
            i += period * k
            start = i
        else:
            i += 1
    if start < len(value):
        pieces.append(repr(value[start:]))
    text = " + ".join(pieces) or repr(value)
    return text if not limit or len(text) <= limit else text[:limit] + " ..."


def case_literal(case: Case, limit: int = 0) -> str:
    parts = [literal(p, limit) for p in case]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def save(directory: Path, crashes: Sequence[Crash]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    index = []
    for number, crash in enumerate(crashes, 1):
        entry = ENTRIES[crash.entry]
        slug = re.sub(r"[^a-z0-9]+", "-", entry.name.lower()).strip("-")
        folder = directory / f"{number:03d}-{slug}-{crash.error}"
        folder.mkdir(exist_ok=True)
        for k, case in enumerate(([crash.minimal] if crash.minimal else []) + crash.examples):
            name = "minimal" if crash.minimal and k == 0 else f"input-{k:02d}"
            for p, (part, fmt) in enumerate(zip(case, entry.formats, strict=True)):
                (folder / f"{name}.part{p}.{fmt}").write_bytes(part)
        index.append(f"{folder.name}\t{entry.name}\t{crash.error}\t{crash.location}\t{crash.count}")
    (directory / "index.tsv").write_text("\n".join(index) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=80_000, help="inputs in all (default 80000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per input")
    parser.add_argument("--max-rss-mib", type=int, default=1024, help="peak RSS that is a crash")
    parser.add_argument("--big-inputs", type=int, default=12, metavar="N",
                        help="big inputs (deep nesting, large bombs) per entry point, at most")  # fmt: skip
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="entry points whose name contains NAME (repeatable)")  # fmt: skip
    parser.add_argument("--show", action="store_true", help="print crashing inputs")
    parser.add_argument("--save", type=Path, metavar="DIR", help="write crashing inputs to DIR")
    parser.add_argument("--minimize", action="store_true", help="shrink one input per crash")
    parser.add_argument("--minimize-seconds", type=float, default=20.0)
    args = parser.parse_args()
    chosen = [
        i
        for i, e in enumerate(ENTRIES)
        if not args.only or any(n.lower() in e.name.lower() for n in args.only)
    ]
    if not chosen:
        parser.error(f"no entry point matches {args.only}; names: {[e.name for e in ENTRIES]}")
    print(
        f"seed {args.seed}, {args.count:,} inputs over {len(chosen)} entry points, "
        f"{args.workers} workers, {args.timeout:g} s per input, RSS cap {args.max_rss_mib} MiB"
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-inputs-") as tmp:
        workers = [
            Worker(Path(tmp) / f"w{n}", args.max_rss_mib, args.timeout) for n in range(args.workers)
        ]
        try:
            tallies, found = fuzz(chosen, args.count, args.seed, args.big_inputs, workers, keep=20)
            elapsed = time.monotonic() - started
            crashes = sorted(found.values(), key=lambda c: (c.entry, -c.count))
            if args.minimize:
                queue = list(crashes)
                lock = threading.Lock()

                def shrink(worker: Worker) -> None:
                    while True:
                        with lock:
                            if not queue:
                                return
                            crash = queue.pop(0)
                        crash.minimal = minimize(worker, crash, args.minimize_seconds)

                threads = [threading.Thread(target=shrink, args=(w,)) for w in workers]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        finally:
            for worker in workers:
                worker.close()

    width = max(len(ENTRIES[i].name) for i in chosen)
    print(f"\n{'entry point':<{width}}  inputs  handled  accepted  crashes  kinds    mean  slowest")
    total = Tally()
    for i in chosen:
        t = tallies[i]
        kinds = sum(1 for c in crashes if c.entry == i)
        print(f"{ENTRIES[i].name:<{width}}  {t.inputs:6,}  {t.handled:7,}  {t.accepted:8,}  "
              f"{t.crashes:7,}  {kinds:5}  {1000 * t.seconds / max(1, t.inputs):4.1f} ms"
              f"  {t.slowest:5.2f} s")  # fmt: skip
        total.inputs += t.inputs
        total.handled += t.handled
        total.accepted += t.accepted
        total.crashes += t.crashes
    print(f"{'total':<{width}}  {total.inputs:6,}  {total.handled:7,}  {total.accepted:8,}  "
          f"{total.crashes:7,}  {len(crashes):5}")  # fmt: skip
    print(f"fuzzing took {elapsed:.1f} s ({total.inputs / elapsed:,.0f} inputs/s)")

    if crashes:
        print("\ndistinct crashes (exception at the innermost kubelet_sim frame):")
    for number, crash in enumerate(crashes, 1):
        print(f"{number:3}. {ENTRIES[crash.entry].name}: {crash.error} at {crash.location}"
              f" - {crash.count:,} inputs")  # fmt: skip
        print(f"     last frame {crash.last_frame}: {crash.message[:160]!r}")
        if crash.minimal is not None:
            size = sum(len(p) for p in crash.minimal)
            print(f"     minimal ({size:,} bytes): {case_literal(crash.minimal, 400)}")
        if args.show:
            for case in crash.examples[:3]:
                print(f"     input: {case_literal(case, 200)}")
    if args.save:
        save(args.save, crashes)
        print(f"\ncrashing inputs written to {args.save}")
    print(f"\ncrash inputs left: {total.crashes}")


if __name__ == "__main__":
    main()
