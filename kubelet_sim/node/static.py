"""Static pods: the kubelet's file source for ``staticPodPath``, kept apart from API objects.

Models ``pkg/kubelet/config/file.go`` and ``common.go`` (``applyDefaults``):

* a file holds Pods only (one, several ``---`` documents, or a ``List``); any other kind is refused
  with a warning and never reaches the API's object store, so a static file cannot replace or
  delete an API Secret or ServiceAccount;
* a static pod is named ``NAME-NODENAME`` (its mirror pod's name), in ``metadata.namespace`` or
  ``default``;
* its UID is the MD5 of the node name, the file and the pod's content: editing the file makes a new
  pod (with fresh image backoff), and an unchanged file keeps its UID across daemon restarts;
* no admission runs: no ServiceAccount pull secrets are inherited and AlwaysPullImages does not
  apply; the mirror pod may not reference Secrets or ServiceAccounts, so pull secrets the pod
  names can never be read (``FailedToRetrieveImagePullSecret`` on every sync);
* ``spec.nodeName`` is the node's name, as ``applyDefaults`` sets it;
* each field kubelet-sim does not model (or upstream does not know) is logged once per file as a
  ``static.unsupported_field`` warning: again only when an edit adds it, not on every poll.

Files are read whole, up to :data:`MAX_MANIFEST_FILE` bytes; a file that does not parse keeps the
pods it had (a half-written edit does not stop a running pod).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from kubelet_sim.errors import KubeletSimError
from kubelet_sim.k8s import Manifest, parse_manifests
from kubelet_sim.k8s.objects import DEFAULT_SERVICE_ACCOUNT, Pod, field_warnings

__all__ = [
    "MANIFEST_SUFFIXES",
    "MAX_MANIFEST_FILE",
    "MIRROR_ANNOTATION",
    "StaticPods",
    "mirror_manifest",
    "read_folder",
    "static_uid",
]

log = structlog.get_logger(__name__)

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MAX_MANIFEST_FILE = 4 * 1024 * 1024
MAX_NAME = 253  # a DNS subdomain, the limit of a pod name
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

PodKey = tuple[str, str]


def static_uid(node_name: str, file: Path, document: Mapping[str, Any]) -> str:
    """The UID of a static pod: MD5 over the node, the file and the pod (``applyDefaults``)."""
    hasher = hashlib.md5(usedforsecurity=False)
    hasher.update(f"host:{node_name}".encode())
    hasher.update(f"file:{file}".encode())
    hasher.update(json.dumps(document, sort_keys=True, default=str).encode())
    return hasher.hexdigest()


def mirror_manifest(pod: Pod) -> Manifest:
    """The static pod's mirror pod, as the kubelet creates it in the API server: its name,
    labels, containers and the ``kubernetes.io/config.*`` annotations (the mirror annotation
    holds the pod's hash, its UID here)."""
    annotations = {
        **pod.annotations,
        "kubernetes.io/config.hash": pod.uid,
        MIRROR_ANNOTATION: pod.uid,
        "kubernetes.io/config.source": "file",
    }

    def containers(items: Iterable[Any]) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "image": c.image, "imagePullPolicy": str(c.image_pull_policy)}
            for c in items
        ]

    spec: dict[str, Any] = {"containers": containers(pod.containers), "nodeName": pod.node_name}
    if pod.init_containers:
        spec["initContainers"] = containers(pod.init_containers)
    metadata = {
        "name": pod.name,
        "namespace": pod.namespace,
        "uid": pod.uid,
        "labels": dict(pod.labels),
        "annotations": annotations,
    }
    return Manifest(pod, {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})


@dataclass(slots=True)
class _File:
    digest: str
    pods: dict[PodKey, Pod] = field(default_factory=dict)
    warned: frozenset[str] = frozenset()
    """The field warnings already logged for this file."""


class StaticPods:
    """The pods of ``staticPodPath``, rebuilt from the folder's files by :meth:`update`."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self._files: dict[Path, _File] = {}
        self._pods: dict[PodKey, Pod] = {}

    def pods(self) -> Mapping[PodKey, Pod]:
        """Every static pod by (namespace, name), as of the last :meth:`update`."""
        return self._pods

    def get(self, namespace: str, name: str) -> Pod | None:
        return self._pods.get((namespace, name))

    def _merge(self) -> dict[PodKey, Pod]:
        """The files' pods in file-name order; a pod a later file repeats is logged and skipped."""
        out: dict[PodKey, Pod] = {}
        for file in sorted(self._files):
            for key, pod in self._files[file].pods.items():
                if key in out:
                    log.warning("static.duplicate", file=str(file), pod=f"{key[0]}/{key[1]}")
                    continue
                out[key] = pod
        return out

    def update(self, contents: Mapping[Path, bytes]) -> bool:
        """Take the folder's current files; True when any static pod was added, changed or
        removed."""
        changed = False
        for gone in set(self._files) - set(contents):
            changed |= bool(self._files.pop(gone).pods)
            log.info("static.removed", file=str(gone))
        for file, data in sorted(contents.items()):
            digest = hashlib.sha256(data).hexdigest()
            known = self._files.get(file)
            if known is not None and known.digest == digest:
                continue
            pods = self._parse(file, data)
            if pods is None:  # unparseable: keep what the file had
                self._files[file] = _File(
                    digest, known.pods if known else {}, known.warned if known else frozenset()
                )
                continue
            changed |= known is None or known.pods != pods
            warned = _warn_fields(file, pods.values(), known.warned if known else frozenset())
            self._files[file] = _File(digest, pods, warned)
            log.info("static.applied", file=str(file), pods=len(pods))
        if changed:
            self._pods = self._merge()
        return changed

    def _parse(self, file: Path, data: bytes) -> dict[PodKey, Pod] | None:
        try:
            manifests = parse_manifests(data, source=str(file))
        except KubeletSimError as exc:
            log.warning("static.invalid", file=str(file), error=str(exc))
            return None
        pods: dict[PodKey, Pod] = {}
        for manifest in manifests:
            obj = manifest.object
            if not isinstance(obj, Pod):
                # file.go decodes pods only; a Secret in a static file is not an API object.
                log.warning("static.not_a_pod", file=str(file), kind=str(obj.kind), name=obj.name)
                continue
            name = f"{obj.name}-{self.node_name}"
            if len(name) > MAX_NAME:
                log.warning("static.name_too_long", file=str(file), pod=name, limit=MAX_NAME)
                continue
            if obj.image_pull_secrets or obj.service_account_name != DEFAULT_SERVICE_ACCOUNT:
                # The API server refuses such a mirror pod; the kubelet runs the pod anyway.
                log.warning(
                    "static.mirror_pod_forbidden",
                    file=str(file),
                    pod=f"{obj.namespace}/{name}",
                    reason="a mirror pod may not reference secrets or service accounts",
                )
            uid = static_uid(self.node_name, file, manifest.raw)
            pods[(obj.namespace, name)] = replace(obj, name=name, uid=uid, node_name=self.node_name)
        return pods


def _warn_fields(file: Path, pods: Iterable[Pod], warned: frozenset[str]) -> frozenset[str]:
    """Log each field warning of the file's pods not logged for this file before; the file's
    warnings now (so one an edit removes is logged again if a later edit brings it back)."""
    now: dict[str, list[str]] = {}
    for pod in pods:
        for warning in field_warnings(pod):
            now.setdefault(warning, []).append(f"{pod.namespace}/{pod.name}")
    for warning, names in now.items():
        if warning not in warned:
            log.warning("static.unsupported_field", file=str(file), warning=warning, pods=names)
    return frozenset(now)


def read_folder(folder: Path) -> dict[Path, bytes]:
    """The manifest files of ``folder`` (or ``folder`` itself when it is a file) and their bytes;
    unreadable and oversized ones are logged and skipped."""
    try:
        if folder.is_file():
            candidates = [folder]
        elif folder.is_dir():
            candidates = list(folder.iterdir())
        else:
            return {}
    except OSError as exc:
        log.warning("static.unreadable", file=str(folder), error=str(exc))
        return {}
    contents: dict[Path, bytes] = {}
    for file in candidates:
        if file.suffix not in MANIFEST_SUFFIXES or file.name.startswith("."):
            continue  # editors' swap and backup files are not manifests (file.go skips dotfiles)
        try:
            if not file.is_file():
                continue
            if file.stat().st_size > MAX_MANIFEST_FILE:
                log.warning("static.too_large", file=str(file), limit=MAX_MANIFEST_FILE)
                continue
            contents[file] = file.read_bytes()
        except OSError as exc:
            log.warning("static.unreadable", file=str(file), error=str(exc))
    return contents
