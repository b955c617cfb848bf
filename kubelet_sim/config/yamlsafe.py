"""Hardened YAML reading: the one way kubelet-sim reads YAML that a user (or a client) wrote.

PyYAML's safe loader cannot run code, but hostile text still gets past it as something other than
a ``yaml.YAMLError``: a date that does not exist (``2001-13-01``, ``0000-01-01``) or an explicit
tag on a value it cannot convert (``!!bool``, ``!!timestamp``, ``!!int x``) raises ValueError,
KeyError, AttributeError or IndexError; hexadecimal, octal, binary and base-60 integers are built
without Python's 4300-digit limit, into numbers ``str()`` then refuses to print; a few hundred
bytes of anchors and aliases expand to billions of values or refer to themselves; and the
composers recurse once per nesting level (libyaml's on the C stack). This module closes those
holes once, for the manifests of :mod:`kubelet_sim.k8s` (``kubectl apply``, ``POST /apply``,
static pods), :mod:`kubelet_sim.config.kubelet`, workload files and credential provider configs:

* :class:`Constructor` (and :class:`Loader`, libyaml's parser when PyYAML has it, with that
  constructor) raises nothing but ``ConstructorError`` for a value it cannot build, refuses
  integers outside int64 (the widest integer of a Kubernetes object) before building them, refuses
  non-scalar mapping keys and records duplicate keys;
* :func:`compose_all` refuses text nested deeper than ``max_depth`` before composing it, then each
  document whose aliases expand past go-yaml's limits (sigs.k8s.io/yaml, "billion laughs"), refer
  to themselves, or nest deeper than ``max_depth`` once expanded; :func:`read`, :func:`load_all`
  and :func:`load_one` construct the checked documents;
* every failure is a :class:`~kubelet_sim.errors.ConfigError` naming the source and the line and
  column (and, for a value that does not convert, the field path); a problem never quotes what
  was written, which may be a Secret's value;
* :func:`preview` (from :mod:`kubelet_sim.config.preview`) renders any value for a message in
  bounded space and time, and
  :func:`check_json_compatible` refuses what a JSON document cannot hold (non-string keys).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from kubelet_sim.config.preview import preview
from kubelet_sim.errors import ConfigError

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_NESTING_DEPTH",
    "Constructor",
    "Loaded",
    "Loader",
    "check_json_compatible",
    "compose_all",
    "load_all",
    "load_one",
    "preview",
    "problem_text",
    "read",
]

MAX_NESTING_DEPTH: Final = 1000
"""Deepest collection nesting a document may have, aliases expanded (upstream stops at 10000;
real manifests and configs stay under 30)."""

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
_INT_DIGITS: Final = 64  # an int64 in binary; any notation with more significant digits is wider
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
_STANDARD_TAG: Final = "tag:yaml.org,2002:"
# What SafeConstructor's scalar constructors raise for text they cannot convert.
_CONSTRUCTION_BUGS: Final = (ValueError, TypeError, KeyError, AttributeError, IndexError,
                             OverflowError)  # fmt: skip
_NESTING_INDICATORS: Final = "[{-:?"
_LIBYAML_TOO_DEEP: Final = "exceeded maximum nesting depth"  # libyaml >= 0.2.5 stops at 1000
_QUOTED: Final = re.compile(r"'[^']*'|\"[^\"]*\"")


class _InvalidValue(ConstructorError):
    """A scalar the constructor refused; keeps the node, so the error can name its field."""

    def __init__(self, problem: str, node: yaml.Node) -> None:
        super().__init__(None, None, problem, node.start_mark)
        self.node = node


def _tag_name(node: yaml.Node) -> str:
    tag = str(node.tag or "")
    return f"!!{tag.removeprefix(_STANDARD_TAG)} " if tag.startswith(_STANDARD_TAG) else ""


class Constructor(SafeConstructor):
    """PyYAML's SafeConstructor made total: a value it cannot build is a ConstructorError.

    Also refuses integers outside int64 (checked on the text, before a hexadecimal or base-60
    number of 250,000 digits is built) and non-scalar keys, and records repeated keys in
    :attr:`duplicate_keys` (a strict decoding error for the kubelet) instead of dropping them
    silently.
    """

    def __init__(self) -> None:
        super().__init__()
        self.duplicate_keys: list[tuple[str, int]] = []
        """(key, line) of every key given again in the same mapping (the last value is kept)."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except _CONSTRUCTION_BUGS:
            raise _InvalidValue(f"invalid {_tag_name(node)}value", node) from None

    def construct_document(self, node: yaml.Node) -> Any:
        try:
            return super().construct_document(node)
        except _CONSTRUCTION_BUGS:  # in a collection's second step, outside construct_object
            raise _InvalidValue("invalid value", node) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[object] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        "found a non-scalar key (keys must be strings)",
                        key_node.start_mark,
                    )
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    self.duplicate_keys.append((str(key), key_node.start_mark.line + 1))
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "").lstrip("+-")
        digits = text[2:] if text[:2].lower() in ("0b", "0x") else text
        if len(digits.lstrip("0:")) > _INT_DIGITS:
            raise _InvalidValue("integer out of range (wider than 64 bits)", node)
        value = super().construct_yaml_int(node)
        if not INT64_MIN <= value <= INT64_MAX:
            raise _InvalidValue("integer out of range (wider than 64 bits)", node)
        return value


# add_constructor, without its typing (made for loaders): the int tag gets the bounded constructor.
Constructor.yaml_constructors = {
    **SafeConstructor.yaml_constructors,
    "tag:yaml.org,2002:int": Constructor.construct_yaml_int,
}


if TYPE_CHECKING:
    _SafeLoader = yaml.CSafeLoader
else:  # libyaml's parser when PyYAML was built with it
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Loader(Constructor, _SafeLoader):
    """``yaml.CSafeLoader`` (``yaml.SafeLoader`` without libyaml) with :class:`Constructor`'s
    constructors. Subclass it to add constructors."""

    def __init__(self, stream: str) -> None:
        _SafeLoader.__init__(self, stream)
        self.duplicate_keys = []


class _LoaderLike(Protocol):
    def check_node(self) -> bool: ...
    def get_node(self) -> yaml.Node | None: ...
    def construct_document(self, node: yaml.Node) -> Any: ...
    def dispose(self) -> None: ...


LoaderFactory = Callable[[str], _LoaderLike]


@dataclass(frozen=True, slots=True)
class Loaded:
    """The documents of one input and the keys repeated in their mappings."""

    documents: list[Any]
    duplicate_keys: tuple[tuple[str, int], ...] = ()
    """(key, line) of every key given twice in one mapping; the last value was kept."""


# -- errors -------------------------------------------------------------------------------------


def problem_text(exc: yaml.YAMLError) -> str:
    """What is wrong, without quoting what was written (a tag or token may be a Secret's value)."""
    if isinstance(exc, yaml.reader.ReaderError):
        reason = str(exc.reason or "unacceptable character")
        character = exc.character
        code = f" #x{character:04x}" if isinstance(character, int) else ""
        return f"{reason} (character{code} at offset {exc.position})"
    problem = getattr(exc, "problem", None) or "not YAML"
    return _QUOTED.sub("(value not shown)", str(problem))


class _Mark(Protocol):
    """A position: PyYAML's ``yaml.Mark`` or libyaml's."""

    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...


def _mark_of(exc: yaml.YAMLError) -> _Mark | None:
    mark: _Mark | None = getattr(exc, "problem_mark", None)
    return mark


@dataclass(frozen=True, slots=True)
class _Style:
    """How errors name their place: ``what`` starts the message; ``file_line`` puts the line in
    the file part (``FILE:LINE``, as workload errors do) instead of in the message."""

    source: str
    what: str
    file_line: bool

    def error(self, problem: str, mark: _Mark | None, field: str | None = None) -> ConfigError:
        """``SOURCE: FIELD: WHAT at line L, column C: PROBLEM``."""
        if mark is None:
            return ConfigError(self.source, field, f"{self.what}: {problem}")
        if self.file_line:
            where = f"{self.source}:{mark.line + 1}"
            return ConfigError(where, field, f"{self.what}: {problem} (column {mark.column + 1})")
        position = f"line {mark.line + 1}, column {mark.column + 1}"
        return ConfigError(self.source, field, f"{self.what} at {position}: {problem}")

    def too_deep(self, max_depth: int, mark: _Mark | None, *, expanded: bool) -> ConfigError:
        """``SOURCE: WHAT: nested too deeply (...)``: the words callers and users match."""
        how = f"more than {max_depth} levels" + (" once aliases are expanded" if expanded else "")
        if mark is not None and self.file_line:
            return ConfigError(f"{self.source}:{mark.line + 1}", None,
                               f"{self.what}: nested too deeply ({how})")  # fmt: skip
        if mark is not None:
            how += f", at line {mark.line + 1}, column {mark.column + 1}"
        return ConfigError(self.source, None, f"{self.what}: nested too deeply ({how})")


# -- checks before construction -----------------------------------------------------------------


def _check_nesting(text: str, loader: LoaderFactory, max_depth: int, style: _Style) -> None:
    """Refuse text nested deeper than ``max_depth`` before a composer recurses into it.

    Every collection starts at one of the indicator characters, so text with fewer of them cannot
    be too deep and skips the scan; the scan walks the parser's events, which is iterative.
    """
    if sum(text.count(c) for c in _NESTING_INDICATORS) <= max_depth:
        return
    depth = 0
    for event in yaml.parse(text, Loader=loader):  # type: ignore[arg-type]
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                raise style.too_deep(max_depth, event.start_mark, expanded=False)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


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


def _check_document(root: yaml.Node, max_depth: int, style: _Style) -> None:
    """Refuse a composed document whose aliases expand past go-yaml's limits ("billion laughs"),
    refer to themselves, or nest deeper than ``max_depth`` once expanded.

    Counts what go-yaml's decoder would: every node decoded with aliases expanded, and how many
    of those were decoded inside an alias, in one linear pass (the composer shares an anchored
    node between its uses, so each node's expanded size and height are computed once). Refuses
    as go-yaml does when more than 100 of more than 1,000 decoded nodes come from aliases and
    their share is above the allowed ratio.
    """
    # Depth-first in document order: the first reference to a node defines it, any later one is
    # an alias, which decodes as itself plus the anchored node's (already counted) expansion.
    # Per node: [decoded, decoded inside aliases, height (collections nested, itself included)].
    done: dict[int, tuple[int, int, int]] = {}
    defined = {id(root)}
    frames: list[tuple[yaml.Node, Iterator[yaml.Node], list[int]]] = [
        (root, _children(root), [1, 0, 0])
    ]
    while frames:
        node, pending, counts = frames[-1]
        child = next(pending, None)
        if child is None:
            frames.pop()
            height = counts[2] + (0 if isinstance(node, yaml.ScalarNode) else 1)
            if height > max_depth:
                raise style.too_deep(max_depth, node.start_mark, expanded=True)
            done[id(node)] = (counts[0], counts[1], height)
            if frames:
                parent = frames[-1][2]
                parent[0] += counts[0]
                parent[1] += counts[1]
                parent[2] = max(parent[2], height)
        elif id(child) not in defined:
            defined.add(id(child))
            frames.append((child, _children(child), [1, 0, 0]))
        elif id(child) in done:
            nodes, _, height = done[id(child)]
            counts[0] += 1 + nodes  # the alias node, then the anchored node decoded again
            counts[1] += nodes  # go-yaml counts every node decoded inside an alias
            counts[2] = max(counts[2], height)
        else:  # an alias inside its own anchor: decoding it would never end
            raise style.error("an alias refers to itself", child.start_mark)
    decoded, aliases, _ = done[id(root)]
    if aliases > 100 and decoded > 1000 and aliases / decoded > _allowed_alias_ratio(decoded):
        raise style.error(
            f"document contains excessive aliasing ({aliases} of {decoded} nodes come from "
            "aliases)",
            None,
        )


def _field_path(root: yaml.Node, target: yaml.Node) -> str | None:
    """The field path (``spec.containers[0].image``) of ``target`` in ``root``, or None when it is
    not a value there (a key, the root itself). Iterative; each node is visited once."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path or None
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = _key_text(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                stack.append((value, f"{path}.{name}" if path else name))
    return None


def _key_text(key: object) -> str:
    text = str(key)
    return text if len(text) <= 64 else text[:61] + "..."


# -- loading ------------------------------------------------------------------------------------


def _run(
    text: str,
    style: _Style,
    loader: LoaderFactory,
    max_depth: int,
    *,
    construct: bool,
) -> tuple[list[Any], tuple[tuple[str, int], ...]]:
    root: yaml.Node | None = None
    try:
        _check_nesting(text, loader, max_depth, style)
        instance = loader(text)  # the pure-Python reader checks the characters here
        try:
            out: list[Any] = []
            while instance.check_node():
                root = instance.get_node()
                if root is None:
                    break
                _check_document(root, max_depth, style)
                out.append(instance.construct_document(root) if construct else root)
            duplicates = tuple(getattr(instance, "duplicate_keys", ()))
            return out, duplicates
        finally:
            instance.dispose()
    except _InvalidValue as exc:
        field = None if root is None else _field_path(root, exc.node)
        raise style.error(problem_text(exc), _mark_of(exc), field) from None
    except yaml.YAMLError as exc:
        if getattr(exc, "problem", None) == _LIBYAML_TOO_DEEP:
            raise style.too_deep(max_depth, _mark_of(exc), expanded=False) from None
        raise style.error(problem_text(exc), _mark_of(exc)) from None
    except RecursionError:  # the pure-Python composer recurses once per nesting level
        raise ConfigError(style.source, None, f"{style.what}: nested too deeply") from None
    except MemoryError:
        raise ConfigError(style.source, None, f"{style.what}: out of memory") from None


def read(
    text: str,
    source: str,
    *,
    loader: LoaderFactory = Loader,
    max_depth: int = MAX_NESTING_DEPTH,
    what: str = "invalid YAML",
    file_line: bool = False,
) -> Loaded:
    """Every document of ``text`` (empty ones as None) and the keys repeated in them.

    Args:
        text: the YAML text (JSON is YAML too).
        source: names the input in errors (a file name, ``request body``).
        loader: a :class:`Loader` (sub)class; another loader gets the checks but not its types.
        max_depth: the deepest nesting allowed, aliases expanded.
        what: the first words of every message (``invalid YAML``).
        file_line: name the place as ``SOURCE:LINE`` in the error's file part.

    Raises:
        ConfigError: naming ``source`` and where; the field path too for a value that does not
            convert (an impossible date, an integer wider than 64 bits).
    """
    style = _Style(source, what, file_line)
    documents, duplicates = _run(text, style, loader, max_depth, construct=True)
    return Loaded(documents, duplicates)


def load_all(
    text: str,
    source: str,
    *,
    loader: LoaderFactory = Loader,
    max_depth: int = MAX_NESTING_DEPTH,
    what: str = "invalid YAML",
    file_line: bool = False,
) -> list[Any]:
    """Every document of ``text`` (empty ones as None); see :func:`read`."""
    return read(
        text, source, loader=loader, max_depth=max_depth, what=what, file_line=file_line
    ).documents


def load_one(
    text: str,
    source: str,
    *,
    loader: LoaderFactory = Loader,
    max_depth: int = MAX_NESTING_DEPTH,
    what: str = "invalid YAML",
    file_line: bool = False,
) -> Any:
    """The one document of ``text`` (None when it has none); see :func:`read`.

    Raises:
        ConfigError: as :func:`read`, or ``text`` holds several documents.
    """
    loaded = read(text, source, loader=loader, max_depth=max_depth, what=what, file_line=file_line)
    documents = [d for d in loaded.documents if d is not None]
    if len(documents) > 1:
        raise ConfigError(source, None, f"{len(documents)} YAML documents; expected one")
    return documents[0] if documents else None


def compose_all(
    text: str,
    source: str,
    *,
    loader: LoaderFactory = Loader,
    max_depth: int = MAX_NESTING_DEPTH,
    what: str = "invalid YAML",
    file_line: bool = False,
) -> list[yaml.Node]:
    """The checked node tree of every document, for callers that build values themselves (to
    keep line numbers): build scalars with a :class:`Constructor`. See :func:`read`."""
    style = _Style(source, what, file_line)
    nodes: list[yaml.Node] = _run(text, style, loader, max_depth, construct=False)[0]
    return nodes


# -- values -------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def check_json_compatible(value: object, where: str, *, prefix: str = "") -> None:
    """Refuse what a JSON document (a Kubernetes object) cannot hold: a mapping key that is not
    a string (YAML allows ``1: b``, ``true: c``, ``~: d``). Iterative; shared values once.

    Raises:
        ConfigError: naming ``where`` and the key's path (``metadata[1]``).
    """
    stack: list[tuple[object, str]] = [(value, prefix.rstrip("."))]
    seen: set[int] = set()
    while stack:
        item, path = stack.pop()
        if not isinstance(item, dict | list) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))
            continue
        children: list[tuple[object, str]] = []
        for key, child in item.items():
            if not isinstance(key, str):
                message = f"Invalid value: keys must be strings, got {_type_name(key)}"
                raise ConfigError(where, f"{path}[{_key_text(key)}]", message)
            children.append((child, f"{path}.{key}" if path else key))
        stack.extend(reversed(children))
