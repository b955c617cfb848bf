"""YAML with line numbers: every value's field path (``pods[0].arrival.rate``) maps to its line.

PyYAML's composer gives nodes with start marks; :func:`load_located` builds plain Python values from
them and records where each path was written, and :class:`Fields` reads one mapping with typed
accessors whose errors are :class:`~kubelet_sim.errors.ConfigError` naming ``FILE:LINE`` and the
field path. Sizes (``4MiB``, ``512k``, ``1048576``) and durations (``1.5`` seconds or Go-style
``"250ms"``) are parsed here, once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor

from kubelet_sim.config import yamlsafe
from kubelet_sim.core.durations import parse_go_duration
from kubelet_sim.errors import ConfigError

MAX_NESTING_DEPTH = 100
"""Deepest nesting a workload file may have, aliases expanded (real ones stay under 10): its
values are built recursively, and its ``kubelet`` sections decoded as KubeletConfigurations."""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}  # fmt: skip


@dataclass(slots=True)
class Located:
    """A document's values and the line (1-based) of every field path in it."""

    source: str
    value: Any
    lines: dict[str, int] = field(default_factory=dict)

    def line(self, path: str) -> int | None:
        """The line of ``path``, else of its closest written parent."""
        while True:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                return self.lines.get("")
            path = path[:cut]

    def error(self, path: str, message: str) -> ConfigError:
        line = self.line(path)
        where = f"{self.source}:{line}" if line else self.source
        return ConfigError(where, path or None, message)

    def fail(self, path: str, message: str) -> NoReturn:
        raise self.error(path, message)

    def fields(self, path: str, value: Any, allowed: tuple[str, ...]) -> Fields:
        """A reader for the mapping ``value`` at ``path`` that refuses keys outside ``allowed``."""
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {type_name(value)}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            key = unknown[0]
            self.fail(_join(path, key), f"unknown field; expected one of: {', '.join(allowed)}")
        return Fields(self, path, value)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer"}.get(
        type(value), "a number" if isinstance(value, float) else type(value).__name__
    )


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def load_located(text: str, source: str) -> Located:
    """Parse one YAML document keeping line numbers.

    The text is read with :mod:`kubelet_sim.config.yamlsafe`: nesting past
    :data:`MAX_NESTING_DEPTH` (aliases expanded), alias bombs, integers wider than 64 bits and
    values PyYAML cannot build are refused like any other invalid YAML.

    Raises:
        ConfigError: invalid YAML, several documents, duplicate keys, non-string keys.
    """
    nodes = yamlsafe.compose_all(text, source, max_depth=MAX_NESTING_DEPTH, file_line=True)
    nodes = [n for n in nodes if n is not None]
    if len(nodes) != 1:
        raise ConfigError(source, None, f"expected exactly one YAML document, found {len(nodes)}")
    located = Located(source, None)
    located.value = _build(nodes[0], "", located, yamlsafe.Constructor())
    return located


def _build(node: yaml.Node, path: str, located: Located, constructor: SafeConstructor) -> Any:
    """Plain values from ``node``, recording lines; recursion is bounded by the nesting check."""
    located.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        try:
            constructor.flatten_mapping(node)  # YAML merge keys (<<: *base)
        except yaml.YAMLError as exc:
            located.fail(path, f"invalid merge key: {yamlsafe.problem_text(exc)}")
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "a mapping" if isinstance(key_node, yaml.MappingNode) else "a list"
                located.fail(path, f"keys must be strings, got {kind}")
            key = _scalar(key_node, path, located, constructor)
            if not isinstance(key, str):
                shown = yamlsafe.preview(key)
                located.fail(path, f"keys must be strings, got {type_name(key)} {shown}")
            child = _join(path, key)
            if key in out:
                located.lines[child] = key_node.start_mark.line + 1
                located.fail(child, "duplicate key")
            located.lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, located, constructor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, f"{path}[{i}]", located, constructor) for i, item in enumerate(node.value)
        ]
    return _scalar(node, path, located, constructor)


def _scalar(node: yaml.Node, path: str, located: Located, constructor: SafeConstructor) -> Any:
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:  # all a yamlsafe.Constructor raises; never quotes the value
        located.fail(path, f"invalid value: {yamlsafe.problem_text(exc)}")


@dataclass(slots=True)
class Fields:
    """Typed access to one mapping of a located document; errors name file, line and path."""

    doc: Located
    path: str
    data: Mapping[str, Any]

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def fail(self, key: str, message: str) -> NoReturn:
        self.doc.fail(self.at(key), message)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, *, required: bool = False) -> Any:
        value = self.data.get(key)
        if value is None and required:
            self.doc.fail(self.at(key) if key in self.data else self.path, f"{key}: required")
        return value

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.raw(key, required=required)
        if value is None:
            return default
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # tags such as 1.0 are numbers to YAML
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty string, got {type_name(value)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {type_name(value)}")
        return value

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"expected an integer, got {type_name(value)}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(key, f"must be at most {maximum:,}, got {value:,}")
        return value

    def number(
        self, key: str, default: float, *, minimum: float = 0.0, maximum: float = 1e18
    ) -> float:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(key, f"expected a number, got {type_name(value)}")
        if not minimum <= value <= maximum:
            self.fail(key, f"must be between {minimum:g} and {maximum:g}, got {value}")
        return float(value)

    def duration(self, key: str, default: float | None) -> float | None:
        value = self.raw(key)
        if value is None:
            return default
        return parse_duration(value, self.doc, self.at(key))

    def size(self, key: str, default: int | None = None) -> int | None:
        value = self.raw(key)
        if value is None:
            return default
        return parse_size(value, self.doc, self.at(key))

    def items(self, key: str, *, required: bool = False) -> Iterator[tuple[str, Any]]:
        """``(path, item)`` for each entry of the list at ``key``."""
        value = self.raw(key, required=required)
        if value is None:
            return
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {type_name(value)}")
        if required and not value:
            self.fail(key, "must not be empty")
        for i, item in enumerate(value):
            yield f"{self.at(key)}[{i}]", item

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        out = []
        for path, item in self.items(key):
            if isinstance(item, int | float) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str) or not item:
                self.doc.fail(path, f"expected a non-empty string, got {type_name(item)}")
            out.append(item)
        return tuple(out) if self.has(key) else default


def parse_size(value: Any, doc: Located, path: str) -> int:
    """Bytes from an integer or ``<number><unit>`` (B, k/KB, M/MB, G/GB, Ki/KiB, Mi/MiB, Gi/GiB)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            doc.fail(path, f"a size must not be negative, got {value}")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match and match.group(2).lower() in _UNITS:
            size = float(match.group(1)) * _UNITS[match.group(2).lower()]
            if not size <= yamlsafe.INT64_MAX:  # 400 digits are inf as a float
                doc.fail(path, f"a size must be at most {yamlsafe.INT64_MAX} bytes")
            return int(size)
    shown = yamlsafe.preview(value)
    doc.fail(path, f"expected a size such as 4MiB, 512KiB or 1048576, got {shown}")


def parse_duration(value: Any, doc: Located, path: str) -> float:
    """Seconds from a number or a Go duration string (``250ms``, ``1m30s``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as exc:
            doc.fail(path, f"expected seconds or a duration such as 250ms or 1m30s: {exc}")
    else:
        doc.fail(path, f"expected seconds or a duration such as 250ms, got {type_name(value)}")
    if seconds < 0:
        doc.fail(path, f"a duration must not be negative, got {yamlsafe.preview(value)}")
    return seconds
