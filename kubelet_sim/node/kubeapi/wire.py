"""What goes over the wire of the Kubernetes API: request bodies in, ``metav1.Status`` errors and
``Warning`` headers out.

Bodies are JSON, YAML, or protobuf (which kubectl v1.32 sends for ``create secret``,
``create configmap`` and ``create serviceaccount``); answers are JSON whatever the client
accepts first. Errors follow ``k8s.io/apimachinery/pkg/api/errors``: ``NotFound`` 404,
``AlreadyExists`` and ``Conflict`` 409, ``Invalid`` 422 with causes, ``BadRequest`` 400,
``Forbidden`` 403 (admission), ``MethodNotAllowed`` 405, ``UnsupportedMediaType`` 415, and
``Expired``/``Gone`` 410 for a watch that resumes too far back. No message quotes a Secret value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from kubelet_sim.errors import APIStatusError, ConfigError
from kubelet_sim.k8s.manifests import check_document, load_documents
from kubelet_sim.k8s.protobuf import decode_object
from kubelet_sim.node.httpserver import Response

__all__ = [
    "PATCH_TYPES",
    "decode_body",
    "dumps",
    "invalid",
    "status_response",
    "warning_headers",
]

JSON = "application/json"
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
_APPLY_PATCH = "application/apply-patch+yaml"


def dumps(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def status_response(exc: APIStatusError) -> Response:
    """The error as the API server answers it."""
    details: dict[str, Any] = {}
    if exc.name:
        details["name"] = exc.name
    if exc.group:
        details["group"] = exc.group
    if exc.kind:
        details["kind"] = exc.kind
    if exc.causes:
        details["causes"] = [
            {"reason": reason, "message": message, "field": field}
            for reason, message, field in exc.causes
        ]
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": exc.message,
        "reason": exc.reason,
        "code": exc.code,
    }
    if details:
        body["details"] = details
    return Response(exc.code, dumps(body), JSON)


def invalid(kind: str, name: str, exc: ConfigError, *, resource: str = "") -> APIStatusError:
    """A document the object model refused: ``Kind "name" is invalid: field: message``."""
    problems = [(field or "", message) for field, message in exc.problems]
    shown = "; ".join(f"{f}: {m}" if f else m for f, m in problems)
    return APIStatusError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {shown}',
        kind=kind,
        name=name,
        causes=tuple(("FieldValueInvalid", m, f) for f, m in problems),
    )


def bad_request(message: str) -> APIStatusError:
    return APIStatusError(400, "BadRequest", message)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def decode_body(body: bytes, content_type: str, *, patch: bool = False) -> Any:
    """The request's document (a patch's when ``patch``).

    Raises:
        APIStatusError: 400 for a body that does not parse, 415 for a media type not served.
    """
    media = _media_type(content_type)
    if media == _APPLY_PATCH:
        raise APIStatusError(
            415,
            "UnsupportedMediaType",
            "server-side apply is not served by kubelet-sim: use kubectl apply without "
            "--server-side (client-side apply sends a strategic merge patch)",
        )
    if patch and media not in PATCH_TYPES:
        raise APIStatusError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(PATCH_TYPES)}",
        )
    if not body.strip():
        raise bad_request("the request body is empty")
    try:
        if media == "application/vnd.kubernetes.protobuf":
            return decode_object(body)
        if patch:
            document = json.loads(body)
            check_document(document, source="the patch")
            return document
        if media in (JSON, "", "application/yaml", "application/x-yaml", "text/yaml"):
            documents = load_documents(body, source="request body")
            if len(documents) != 1:
                raise bad_request(f"the request body holds {len(documents)} documents, not one")
            return documents[0]
    except ConfigError as exc:
        raise bad_request(str(exc)) from exc
    except (ValueError, RecursionError) as exc:
        where = (
            f" at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise bad_request(f"the patch is not valid JSON{where}") from exc
    raise APIStatusError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json, application/yaml, application/vnd.kubernetes.protobuf",
    )


def warning_headers(warnings: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """RFC 7234 ``Warning: 299 - "..."`` headers, which kubectl prints as ``Warning: ...``."""
    out = []
    for warning in warnings:
        text = warning.replace("\\", "\\\\").replace('"', '\\"')
        # a header is printable ASCII: a field name may be anything (a typo in Cyrillic)
        text = "".join(c if " " <= c <= "~" else f"\\u{ord(c):04x}" for c in text)
        out.append(("Warning", f'299 - "{text}"'))
    return tuple(out)


def mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise bad_request(f"{what} must be a JSON object")
    return value
