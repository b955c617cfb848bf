"""Documents to objects: what ``kubectl apply -f FILE`` reads (YAML or JSON, several documents, Lists).

``---``-separated YAML documents and JSON are both accepted (JSON is tried first when the text
starts with ``{`` or ``[``); empty documents are skipped; a ``kind: List`` document contributes its
``items``. Errors name the source, the document (1-based), the object and the field path, e.g.
``pods.yaml (document 2) Pod default/web: spec.containers[1].image: Required value``.

YAML is read with libyaml (``yaml.CSafeLoader``) when PyYAML was built with it, else with the pure
Python ``SafeLoader``; both construct the same safe types. Nesting is capped at
:data:`MAX_NESTING_DEPTH` levels (upstream's decoders stop at 10000; PyYAML's composers recurse,
libyaml's on the C stack, so a deep document would crash the process instead of failing), and a
document that exhausts the parser is a :class:`~kubelet_sim.errors.ConfigError` naming the source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.objects import DEFAULT_NAMESPACE, Object, parse_object

__all__ = ["MAX_MANIFEST_BYTES", "MAX_NESTING_DEPTH", "Manifest", "parse_manifests"]

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_NESTING_DEPTH = 1000
"""Deepest collection nesting a YAML document may have (real manifests stay under 30)."""

_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)
_NESTING_INDICATORS = "[{-:?"


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
        _check_nesting(text, source)
        return list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(source, None, f"cannot parse YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(source, None, "cannot parse YAML: nested too deeply") from None
    except MemoryError:
        raise ConfigError(source, None, "cannot parse YAML: out of memory") from None


def _check_nesting(text: str, source: str) -> None:
    """Refuse documents nested deeper than MAX_NESTING_DEPTH before a composer recurses into them.

    Every collection starts at one of the indicator characters, so text with fewer of them cannot
    be too deep and skips the scan; the scan walks the parser's events, which is iterative.
    """
    if sum(text.count(c) for c in _NESTING_INDICATORS) <= MAX_NESTING_DEPTH:
        return
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                mark = event.start_mark
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                raise ConfigError(
                    source,
                    None,
                    f"cannot parse YAML{where}: nested deeper than {MAX_NESTING_DEPTH} levels",
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


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
    if isinstance(data, bytes):
        if len(data) > MAX_MANIFEST_BYTES:
            raise ConfigError(source, None, f"more than {MAX_MANIFEST_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(source, None, "not valid UTF-8") from None
    else:
        text = data
    out: list[Manifest] = []
    for number, doc in enumerate(_documents(text, source), start=1):
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
                obj = parse_object(
                    item, where=where, prefix=f"items[{index}].", namespace=namespace
                )
                out.append(Manifest(obj, item))
            continue
        out.append(Manifest(parse_object(doc, where=where, namespace=namespace), doc))
    return out
