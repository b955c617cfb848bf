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
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.objects import DEFAULT_NAMESPACE, Object, parse_object

__all__ = [
    "MAX_MANIFEST_BYTES",
    "MAX_NESTING_DEPTH",
    "MAX_OBJECTS",
    "Manifest",
    "parse_manifests",
]

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_NESTING_DEPTH = 1000
"""Deepest collection nesting a YAML document may have (real manifests stay under 30)."""

MAX_OBJECTS = 10_000
"""Most objects one input may hold (``kubectl apply`` of a whole namespace stays far below)."""

_BASE_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


class _Loader(_BASE_LOADER):  # type: ignore[valid-type,misc]
    """The safe loader, with integers Python cannot hold as a YAML error at their position."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return int(super().construct_yaml_int(node))
        except ValueError:  # more digits than int() converts (sys.int_max_str_digits)
            raise yaml.constructor.ConstructorError(
                None, None, "integer too large", node.start_mark
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = _Loader
_NESTING_INDICATORS = "[{-:?"
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


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
        return _load_all(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        # A parser's problem can quote the offending token, which may be a Secret's value (an
        # unquoted `pw: !x...` is a tag): say what is wrong and where, never what was written.
        problem = _QUOTED.sub("(value not shown)", getattr(exc, "problem", None) or "invalid YAML")
        raise ConfigError(source, None, f"cannot parse YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(source, None, "cannot parse YAML: nested too deeply") from None
    except MemoryError:
        raise ConfigError(source, None, "cannot parse YAML: out of memory") from None


def _load_all(text: str, source: str) -> list[Any]:
    """Every document, each refused before construction if its aliases expand too much."""
    loader = _LOADER(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            _check_aliasing(node, source)
            documents.append(loader.construct_document(node))
        return documents
    finally:
        loader.dispose()


def _allowed_alias_ratio(decoded: int) -> float:
    """go-yaml's ``allowedAliasRatio`` (sigs.k8s.io/yaml, decode.go): the share of decoded nodes
    that may come from aliases, falling from 99 % at 400,000 nodes to 10 % at 4,000,000."""
    low, high = 400_000, 4_000_000
    if decoded <= low:
        return 0.99
    if decoded >= high:
        return 0.10
    return 0.99 - 0.89 * (decoded - low) / (high - low)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return iter(node.value)
    if isinstance(node, yaml.MappingNode):
        return (item for pair in node.value for item in pair)
    return iter(())


def _check_aliasing(root: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases expand past go-yaml's limits ("billion laughs").

    Counts what go-yaml's decoder would: every node decoded with aliases expanded, and how many
    of those were decoded inside an alias, in one linear pass (the composer shares an anchored
    node between its uses, so each node's expanded size is computed once). Refuses as go-yaml
    does when more than 100 of more than 1,000 decoded nodes come from aliases and their share
    is above the allowed ratio.
    """
    # Depth-first in document order: the first reference to a node defines it, any later one is
    # an alias, which decodes as itself plus the anchored node's (already counted) expansion.
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (decoded, decoded inside aliases)
    defined = {id(root)}
    frames: list[tuple[yaml.Node, Iterator[yaml.Node], list[int]]] = [
        (root, _children(root), [1, 0])
    ]
    while frames:
        node, pending, counts = frames[-1]
        child = next(pending, None)
        if child is None:
            frames.pop()
            size[id(node)] = (counts[0], counts[1])
            if frames:
                frames[-1][2][0] += counts[0]
                frames[-1][2][1] += counts[1]
        elif id(child) not in defined:
            defined.add(id(child))
            frames.append((child, _children(child), [1, 0]))
        elif id(child) in size:
            nodes, _ = size[id(child)]
            counts[0] += 1 + nodes  # the alias node, then the anchored node decoded again
            counts[1] += nodes  # go-yaml counts every node decoded inside an alias
        else:  # an alias inside its own anchor: decoding it would never end
            raise ConfigError(source, None, "cannot parse YAML: an alias refers to itself")
    decoded, aliases = size[id(root)]
    if aliases > 100 and decoded > 1000 and aliases / decoded > _allowed_alias_ratio(decoded):
        raise ConfigError(
            source,
            None,
            f"cannot parse YAML: document contains excessive aliasing ({aliases} of "
            f"{decoded} nodes come from aliases)",
        )


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


def _object_count(doc: Any) -> int:
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        return len(doc["items"])
    return 0 if doc is None else 1


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
    documents = _documents(text, source)
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
                obj = parse_object(
                    item, where=where, prefix=f"items[{index}].", namespace=namespace
                )
                out.append(Manifest(obj, item))
            continue
        out.append(Manifest(parse_object(doc, where=where, namespace=namespace), doc))
    return out
