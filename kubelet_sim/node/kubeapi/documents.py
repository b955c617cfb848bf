"""A write's document, checked and parsed as the API server does before storing it.

The URL and the body must name the same object; server-owned metadata (``resourceVersion``,
``uid``, timestamps) is taken out, a ``resourceVersion`` kept as the update's precondition and a
changed ``uid`` refused as upstream's precondition conflict; a pod's ``status`` is the kubelet's,
never the client's. ``fieldValidation=Strict`` refuses unknown fields, ``Warn`` (the default)
answers them as warnings, ``Ignore`` drops them. Patches of the three kinds apply here, and a
Secret's values are scrubbed from every error a document can make quote them.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from kubelet_sim.errors import APIStatusError, ConfigError, PatchError
from kubelet_sim.k8s.manifests import Manifest
from kubelet_sim.k8s.objects import Kind, field_warnings, parse_object
from kubelet_sim.k8s.patch import json_patch, merge_patch, strategic_merge_patch
from kubelet_sim.k8s.store import ObjectStore
from kubelet_sim.node.httpserver import Request
from kubelet_sim.node.kubeapi.resources import Resource
from kubelet_sim.node.kubeapi.wire import bad_request, decode_body, invalid, mapping

__all__ = ["check_identity", "grace_period", "patched", "prepare"]

_SHORTEST_SECRET = 3
"""Secret values shorter than this are not scrubbed from errors (they would match anything)."""
_SERVER_OWNED = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generation",
)


def prepare(
    request: Request,
    resource: Resource,
    namespace: str,
    name: str,
    doc: dict[str, Any],
    store: ObjectStore,
) -> tuple[Manifest, str, list[str]]:
    """Check and parse one document (a create, update or patched object): the manifest to
    store, the resourceVersion it was made from (a precondition when set), its warnings.

    Raises:
        APIStatusError: 400 (identity, strict validation), 422 (invalid); a Secret's
            values are never quoted.
    """
    try:
        return _parse(request, resource, namespace, name, doc, store)
    except APIStatusError as exc:
        if resource.kind is Kind.SECRET:
            raise _scrubbed(exc, _secret_values(doc)) from None
        raise


def _parse(
    request: Request,
    resource: Resource,
    namespace: str,
    name: str,
    doc: dict[str, Any],
    store: ObjectStore,
) -> tuple[Manifest, str, list[str]]:
    if request.param("dryRun"):
        raise bad_request("dryRun is not served by kubelet-sim")
    check_identity(doc, resource, namespace, name)
    metadata = dict(doc.get("metadata") or {})
    resource_version = str(metadata.get("resourceVersion") or "")
    uid = metadata.get("uid")
    if uid and resource.kind is not None:
        current = store.document(resource.kind, namespace, name)
        if current is not None and current["metadata"]["uid"] != uid:
            raise APIStatusError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {str(uid)[:64]}, "
                f"UID in object meta: {current['metadata']['uid']}",
                kind=resource.plural,
                name=name,
            )
    for key in _SERVER_OWNED:
        metadata.pop(key, None)
    raw = {**doc, "metadata": metadata}
    if resource.kind is Kind.POD:
        raw.pop("status", None)
    try:
        obj = parse_object(
            raw, where=f"{resource.kind_name} {name}", namespace=namespace or "default"
        )
    except ConfigError as exc:
        raise invalid(resource.kind_name, name, exc) from exc
    warnings = list(field_warnings(obj))
    validation = request.param("fieldValidation") or "Warn"
    unknown = list(field_warnings(obj, unknown_only=True))
    if validation == "Strict" and unknown:
        raise bad_request(
            f'{resource.kind_name} in version "{resource.version}" cannot be handled as a '
            f"{resource.kind_name}: strict decoding error: {', '.join(unknown)}"
        )
    if validation == "Ignore":
        warnings = [w for w in warnings if w not in unknown]
    return Manifest(obj, raw), resource_version, warnings


def patched(media: str, resource: Resource, name: str, current: dict[str, Any], patch: Any) -> Any:
    """``current`` with the patch of ``media``'s kind applied.

    Raises:
        APIStatusError: 400 for a malformed patch, 422 for one that cannot apply.
    """
    try:
        if media == "application/json-patch+json":
            return json_patch(current, patch)
        if media == "application/merge-patch+json":
            return merge_patch(current, mapping(patch, "a merge patch"))
        return strategic_merge_patch(
            resource.kind_name, current, mapping(patch, "a strategic merge patch")
        )
    except PatchError as exc:
        if exc.invalid:
            cause = ("FieldValueInvalid", exc.message, exc.field or "")
            raise APIStatusError(
                422, "Invalid", exc.message, kind=resource.plural, name=name, causes=(cause,)
            ) from exc
        raise bad_request(exc.message) from exc


def _secret_values(doc: Mapping[str, Any]) -> list[str]:
    """Every value of a Secret document, as written and base64-decoded (what no error quotes)."""
    out: list[str] = []
    for key in ("data", "stringData"):
        values = doc.get(key)
        if not isinstance(values, Mapping):
            continue
        for value in values.values():
            if not isinstance(value, str):
                continue
            out.append(value)
            if key == "data":
                with contextlib.suppress(ValueError):  # not base64: it was refused for that
                    out.append(base64.b64decode(value, validate=True).decode("utf-8", "replace"))
    return sorted((v for v in out if len(v) >= _SHORTEST_SECRET), key=len, reverse=True)


def _scrubbed(exc: APIStatusError, values: list[str]) -> APIStatusError:
    """The error with every Secret value in its message and causes replaced."""

    def scrub(text: str) -> str:
        for value in values:
            text = text.replace(value, "(value not shown)")
        return text

    return APIStatusError(
        exc.code,
        exc.reason,
        scrub(exc.message),
        kind=exc.kind,
        group=exc.group,
        name=exc.name,
        causes=tuple((r, scrub(m), scrub(f)) for r, m, f in exc.causes),
    )


def grace_period(request: Request) -> int | None:
    value: Any = request.param("gracePeriodSeconds")
    if request.body.strip():
        options = decode_body(request.body, request.headers.get("content-type", ""))
        if isinstance(options, Mapping) and options.get("gracePeriodSeconds") is not None:
            value = options["gracePeriodSeconds"]
    if value is None:
        return None
    if isinstance(value, bool | float):  # JSON true or 1.5 is no int64, as Go's decoder says
        raise bad_request(f"gracePeriodSeconds must be an integer, got {json.dumps(value)}")
    try:
        grace = int(value)
    except (TypeError, ValueError):
        raise bad_request(
            f"gracePeriodSeconds must be an integer, got {str(value)[:40]!r}"
        ) from None
    if grace < 0:
        raise bad_request("gracePeriodSeconds must not be negative")
    return grace


def check_identity(doc: Mapping[str, Any], resource: Resource, namespace: str, name: str) -> None:
    """The document is of the resource's kind and names the object the URL does."""
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind is not None and kind != resource.kind_name:
        raise bad_request(f'the kind in the body ("{str(kind)[:60]}") is not {resource.kind_name}')
    if api_version is not None and api_version != resource.group_version:
        raise bad_request(
            f"the API version in the data ({str(api_version)[:60]}) does not match the expected "
            f"API version ({resource.group_version})"
        )
    metadata = mapping(doc.get("metadata") or {}, "metadata")
    if metadata.get("name") != name:
        raise bad_request("the name of the object does not match the name on the URL")
    if resource.namespaced and metadata.get("namespace", namespace) != namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
