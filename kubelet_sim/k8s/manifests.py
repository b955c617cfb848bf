"""Documents to objects: what ``kubectl apply -f FILE`` reads (YAML or JSON, several documents, Lists).

``---``-separated YAML documents and JSON are both accepted (JSON is tried first when the text
starts with ``{`` or ``[``); empty documents are skipped; a ``kind: List`` document contributes its
``items``. Errors name the source, the document (1-based), the object and the field path, e.g.
``pods.yaml (document 2) Pod default/web: spec.containers[1].image: Required value``.

YAML is read with :mod:`kubelet_sim.config.yamlsafe` (libyaml when PyYAML was built with it):
nesting is capped at :data:`MAX_NESTING_DEPTH` levels (upstream's decoders stop at 10000;
PyYAML's composers recurse, libyaml's on the C stack, so a deep document would crash the process
instead of failing), aliases may not expand past go-yaml's limits, integers may not be wider than
64 bits, and a value PyYAML cannot build (``2001-13-01``) is an error; so is a mapping key that is
not a string, which a JSON object (a Kubernetes object) cannot have. Every such document is a
:class:`~kubelet_sim.errors.ConfigError` naming the source (and the field, when there is one).

Every document read (and every patch the API applies) is then checked by :func:`check_document`:
at most :data:`MAX_DOCUMENT_DEPTH` levels deep (an object is copied and encoded recursively each
time it is served, so a deeper one stored would be unreadable), no NaN or infinite numbers (JSON
has none: kubectl could not decode it back), and no string or key that is not valid Unicode (a
lone UTF-16 surrogate from a ``\ud800`` escape).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubelet_sim.config import yamlsafe
from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.objects import DEFAULT_NAMESPACE, Object, parse_object

__all__ = [
    "MAX_DOCUMENT_DEPTH",
    "MAX_MANIFEST_BYTES",
    "MAX_NESTING_DEPTH",
    "MAX_OBJECTS",
    "Manifest",
    "check_document",
    "load_documents",
    "parse_manifests",
]

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_NESTING_DEPTH = yamlsafe.MAX_NESTING_DEPTH
"""Deepest collection nesting a YAML document may have, aliases expanded (real manifests stay
under 30)."""

MAX_DOCUMENT_DEPTH = 100
"""Deepest nesting of a document that is stored and served (real objects stay under 30)."""

MAX_OBJECTS = 10_000
"""Most objects one input may hold (``kubectl apply`` of a whole namespace stays far below)."""

_LOADER: yamlsafe.LoaderFactory = yamlsafe.Loader
_WHAT = "cannot parse YAML"


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed object and the document it came from (kept for patches; never shown)."""

    object: Object
    raw: Mapping[str, Any] = field(repr=False, compare=False, hash=False)


def _documents(text: str, source: str) -> list[Any]:
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return [json.loads(text)]
        except (ValueError, RecursionError):
            # YAML is a superset of most JSON: its (iterative) parser reports the problem with a
            # line and column, including nesting too deep for json's recursive decoder.
            pass
        except MemoryError:
            raise ConfigError(source, None, "cannot parse JSON: out of memory") from None
    try:
        return _load_all(text, source)
    except MemoryError:
        raise ConfigError(source, None, f"{_WHAT}: out of memory") from None


def _load_all(text: str, source: str) -> list[Any]:
    """Every document, each refused before construction if it nests or aliases too much."""
    return yamlsafe.load_all(text, source, loader=_LOADER, max_depth=MAX_NESTING_DEPTH, what=_WHAT)


def _object_count(doc: Any) -> int:
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        return len(doc["items"])
    return 0 if doc is None else 1


def check_document(doc: Any, *, source: str) -> None:
    """A document can be stored, served and encoded again as JSON.

    Raises:
        ConfigError: deeper than :data:`MAX_DOCUMENT_DEPTH`, a NaN or infinite number, or a
            string that is not valid Unicode (none of them quoted).
    """
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(source, None, "NaN and infinite numbers are not JSON")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(source, None, "a string is not valid Unicode") from None
        elif isinstance(value, Mapping | list):
            if depth > MAX_DOCUMENT_DEPTH:
                raise ConfigError(source, None, f"nests deeper than {MAX_DOCUMENT_DEPTH} levels")
            if isinstance(value, Mapping):
                stack.extend((key, depth) for key in value)
                stack.extend((item, depth + 1) for item in value.values())
            else:
                stack.extend((item, depth + 1) for item in value)


def load_documents(data: str | bytes, *, source: str) -> list[Any]:
    """The documents of a YAML or JSON input, not yet read as objects (``None`` for an empty
    one), within the size limit.

    Raises:
        ConfigError: too large, not UTF-8, or it does not parse.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_MANIFEST_BYTES:
            raise ConfigError(source, None, f"more than {MAX_MANIFEST_BYTES} bytes")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(source, None, "not valid UTF-8") from None
    documents = _documents(data, source)
    for doc in documents:
        check_document(doc, source=source)
    return documents


def parse_manifests(
    data: str | bytes, *, source: str = "<input>", namespace: str = DEFAULT_NAMESPACE
) -> list[Manifest]:
    """Every object in ``data``, in order.

    Args:
        data: YAML or JSON text (bytes are decoded as UTF-8).
        source: names the input in errors (a file name, ``POST /apply``).
        namespace: for objects without ``metadata.namespace`` (kubectl's ``-n``).

    Raises:
        ConfigError: the text does not parse, or an object is invalid.
    """
    out: list[Manifest] = []
    documents = load_documents(data, source=source)
    count = sum(_object_count(doc) for doc in documents)
    if count > MAX_OBJECTS:
        raise ConfigError(source, None, f"{count} objects; at most {MAX_OBJECTS} in one input")
    for number, doc in enumerate(documents, start=1):
        where = f"{source} (document {number})"
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ConfigError(where, None, "expected an object with apiVersion and kind")
        if doc.get("kind") == "List":
            items = doc.get("items")
            if items is None:
                items = []
            if not isinstance(items, list):
                raise ConfigError(where, "items", "expected a list")
            for index, item in enumerate(items):
                if not isinstance(item, dict):
                    raise ConfigError(where, f"items[{index}]", "expected an object")
                prefix = f"items[{index}]."
                obj = parse_object(item, where=where, prefix=prefix, namespace=namespace)
                yamlsafe.check_json_compatible(item, where, prefix=prefix)
                out.append(Manifest(obj, item))
            continue
        obj = parse_object(doc, where=where, namespace=namespace)
        yamlsafe.check_json_compatible(doc, where)
        out.append(Manifest(obj, doc))
    return out
