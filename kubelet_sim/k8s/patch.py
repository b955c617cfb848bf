"""The three PATCH bodies the API server applies: JSON merge, JSON and strategic merge patches.

:func:`merge_patch` is RFC 7386 (``application/merge-patch+json``), :func:`json_patch` RFC 6902
with RFC 6901 pointers (``application/json-patch+json``, as evanphx/json-patch applies it) and
:func:`strategic_merge_patch` models apimachinery's ``pkg/util/strategicpatch/patch.go``
(``StrategicMergeMapPatch``, ``application/strategic-merge-patch+json``) for the kinds the node
serves: lists tagged ``patchStrategy:"merge"`` in ``k8s.io/api/core/v1/types.go`` and
``meta/v1/types.go`` merge by their ``patchMergeKey`` (:data:`LIST_STRATEGIES`), every other
list is replaced, objects merge key by key. None of them mutates its inputs.

A patch that is malformed raises :class:`~kubelet_sim.errors.PatchError` with ``invalid``
False (the API's 400); one that is well formed but cannot apply to this object (a failed
``test``, a missing path) with ``invalid`` True (422). Messages name the pointer or field and,
for a JSON patch, the operation's index; they never show a Secret's values.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from kubelet_sim.errors import PatchError

__all__ = ["LIST_STRATEGIES", "ListStrategy", "json_patch", "merge_patch", "strategic_merge_patch"]


# -- RFC 7386 ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null deletes, the rest replaces."""
    return _merge_into(copy.deepcopy(target), patch)


def _merge_into(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_into(result.get(key), value)
    return result


# -- RFC 6902 ---------------------------------------------------------------------------------

_OPS: Final = ("add", "remove", "replace", "move", "copy", "test")
_SECRET_FIELDS: Final = ("data", "stringData")
_MAX_SHOWN: Final = 40
"""Longest value a message quotes; a longer one a failed ``test`` only says differs."""


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test with RFC 6901 pointers (~0, ~1, '-'
    append). Returns a new document; the input is not mutated."""
    if not isinstance(operations, list):
        raise PatchError(None, "a JSON patch must be a list of operations")
    # A Secret's last-applied annotation repeats its data, so nothing of a Secret is quoted.
    quiet = isinstance(document, dict) and document.get("kind") == "Secret"
    doc = copy.deepcopy(document)
    for index, operation in enumerate(operations):
        doc = _apply_operation(doc, index, operation, quiet)
    return doc


def _apply_operation(doc: Any, index: int, operation: Any, quiet: bool) -> Any:
    op = operation.get("op") if isinstance(operation, dict) else None
    if op not in _OPS:
        shown = f" {_shown(op)}" if isinstance(op, str) else ""
        raise PatchError(None, f"operation {index}: not an object with a known op{shown}")
    where = f"operation {index} ({op})"
    path, tokens = _pointer(operation, "path", where)
    if op in ("add", "replace", "test") and "value" not in operation:
        raise PatchError(path, f"{where}: missing value")
    value, fail = copy.deepcopy(operation.get("value")), partial(_failure, path, where)
    if op in ("move", "copy"):
        source, from_tokens = _pointer(operation, "from", where)
        from_fail = partial(_failure, source, where)
        if op == "move" and tokens[: len(from_tokens)] == from_tokens != tokens:
            raise PatchError(path, f"{where}: cannot move {source} into its own child")
        value = copy.deepcopy(_find(doc, from_tokens, from_fail))
        if op == "move" and tokens == from_tokens:
            return doc
        doc = _remove(doc, from_tokens, from_fail) if op == "move" else doc
    if op in ("add", "move", "copy"):
        return _add(doc, tokens, value, fail)
    current = _find(doc, tokens, fail)
    if op == "remove":
        return _remove(doc, tokens, fail)
    if op == "replace":
        return _add(doc, tokens, value, fail, replace=True)
    if _json_equal(current, value):
        return doc
    if quiet or (tokens and tokens[0] in _SECRET_FIELDS):
        raise fail(f"value differs at {path}")
    quoted = [json.dumps(v) for v in (current, value) if not isinstance(v, dict | list)]
    if len(quoted) < 2 or max(map(len, quoted)) > _MAX_SHOWN:
        raise fail(f"value differs at {path}")
    raise fail(f"value at {path} is {quoted[0]}, not {quoted[1]}")


def _failure(field: str, where: str, problem: str) -> PatchError:
    return PatchError(field, f"{where}: {problem}", invalid=True)


Failure = Callable[[str], PatchError]


def _pointer(operation: dict[str, Any], member: str, where: str) -> tuple[str, list[str]]:
    """An RFC 6901 pointer's text and its unescaped reference tokens."""
    text = operation.get(member)
    if not isinstance(text, str):
        raise PatchError(None, f"{where}: missing {member}")
    if text and not text.startswith("/"):
        raise PatchError(text, f"{where}: {member} must be empty or start with /")
    parts = text.split("/")[1:]
    if any("~" in part.replace("~0", "").replace("~1", "") for part in parts):
        raise PatchError(text, f"{where}: {member} has a ~ that is not ~0 or ~1")
    return text, [part.replace("~1", "/").replace("~0", "~") for part in parts]


def _index(part: str, size: int, fail: Failure, *, end: bool = False) -> int:
    """An array index: digits without leading zeros, below ``size`` (or at it, or ``-``, for
    add)."""
    if part == "-" and end:
        return size
    if not (part.isascii() and part.isdigit() and (part == "0" or part[0] != "0")):
        raise fail(f"{_shown(part)} is not an array index")
    if int(part) >= size + end:
        raise fail(f"index {part} is out of range (the array has {size} items)")
    return int(part)


def _find(doc: Any, tokens: Sequence[str], fail: Failure) -> Any:
    for part in tokens:
        if isinstance(doc, dict):
            if part not in doc:
                raise fail(f"no member {_shown(part)}")
            doc = doc[part]
        elif isinstance(doc, list):
            doc = doc[_index(part, len(doc), fail)]
        else:
            raise fail(f"the path goes through a {_json_type(doc)}")
    return doc


def _add(doc: Any, tokens: list[str], value: Any, fail: Failure, *, replace: bool = False) -> Any:
    if not tokens:
        return value
    parent, last = _find(doc, tokens[:-1], fail), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value  # a replace found the member already
    elif isinstance(parent, list):
        at = _index(last, len(parent), fail, end=not replace)
        parent[at : at + replace] = [value]
    else:
        raise fail(f"cannot add into a {_json_type(parent)}")
    return doc


def _remove(doc: Any, tokens: list[str], fail: Failure) -> Any:
    if not tokens:
        raise fail("cannot remove the whole document")
    parent, last = _find(doc, tokens[:-1], fail), tokens[-1]
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[_index(last, len(parent), fail)]
    return doc


def _json_equal(left: Any, right: Any) -> bool:
    """JSON equality: numbers by value, but ``true`` is not ``1`` and ``"10"`` is not ``10``."""
    if isinstance(left, int | float) and isinstance(right, int | float):
        return isinstance(left, bool) == isinstance(right, bool) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(
            _json_equal(v, right[k]) for k, v in left.items()
        )
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_json_equal, left, right))
    return type(left) is type(right) and left == right


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


# -- strategic merge patch --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListStrategy:
    """A list tagged ``patchStrategy:"merge"``: its ``patchMergeKey``, or None for a set of
    scalars (``finalizers``). ``retain_keys`` records a ``merge,retainKeys`` tag: kubectl sends
    ``$retainKeys`` for those elements; applying honours the directive wherever it appears."""

    merge_key: str | None = None
    retain_keys: bool = False


def _fields(prefix: str, tags: str) -> dict[str, ListStrategy]:
    """``field=mergeKey`` words as the tags read (``field=`` a set of scalars, ``+`` for
    ``merge,retainKeys``), under ``prefix``."""
    table = {}
    for word in tags.split():
        field, _, key = word.partition("=")
        strategy = ListStrategy(key.rstrip("+") or None, retain_keys=key.endswith("+"))
        table[f"{prefix}{field}"] = strategy
    return table


# The patchStrategy/patchMergeKey tags of meta/v1 types.go (ObjectMeta) and of core/v1 and
# node/v1 types.go. Lists not named carry no strategy and are replaced whole: tolerations,
# readinessGates, envFrom, resizePolicy, containerStatuses, a ServiceAccount's imagePullSecrets.
_CONTAINER: Final = "ports=containerPort env=name volumeMounts=mountPath volumeDevices=devicePath"
_POD: Final = {
    **_fields("spec.", "volumes=name+ imagePullSecrets=name hostAliases=ip schedulingGates=name"),
    **_fields("spec.", "topologySpreadConstraints=topologyKey resourceClaims=name+"),
    **_fields("spec.", "evictionResponders=name initContainers=name containers=name"),
    **_fields("spec.", "ephemeralContainers=name"),
    **_fields("spec.initContainers[].", _CONTAINER),
    **_fields("spec.containers[].", _CONTAINER),
    **_fields("spec.ephemeralContainers[].", _CONTAINER),
    **_fields("status.", "conditions=type hostIPs=ip podIPs=ip resourceClaimStatuses=name+"),
    **_fields("status.", "nodeAllocatableResourceClaimStatuses=resourceClaimName"),
    **_fields("status.nodeAllocatableResourceClaimStatuses[].", "mapping=name overhead=name"),
}
_KINDS: Final[Mapping[str, Mapping[str, ListStrategy]]] = {
    "Pod": _POD,
    "Service": _fields("", "spec.ports=port status.conditions=type"),
    "ServiceAccount": _fields("", "secrets=name"),
    **{kind: {} for kind in ("Secret", "ConfigMap", "RuntimeClass", "Event")},
}
LIST_STRATEGIES: Final[Mapping[tuple[str, str], ListStrategy]] = {
    (kind, path): strategy
    for kind, fields in _KINDS.items()
    for path, strategy in {
        **_fields("metadata.", "ownerReferences=uid finalizers="),
        **fields,
    }.items()
}
"""(kind, dotted path with ``[]`` for list elements) -> the list's merge strategy."""

_PATCH: Final = "$patch"
_RETAIN: Final = "$retainKeys"
_ORDER: Final = "$setElementOrder"
_DELETE: Final = "$deleteFromPrimitiveList"
_DROP: Final = object()
"""What :func:`_clean` makes of a map holding ``$patch``: upstream leaves it out."""


def strategic_merge_patch(
    kind: str, original: Mapping[str, Any], patch: Mapping[str, Any]
) -> dict[str, Any]:
    """Kubernetes strategic merge patch for `kind` (one of the kinds above)."""
    if not isinstance(patch, Mapping):
        raise PatchError(None, "a strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(dict(original)), copy.deepcopy(dict(patch)), kind, "")


def _merge_map(
    original: dict[str, Any], patch: dict[str, Any], kind: str, path: str
) -> dict[str, Any]:
    """``mergeMap``: directives first, then each key. Both maps are ours to change."""
    field = path or None
    if _PATCH in patch:
        directive = patch.pop(_PATCH)
        if directive == "replace":
            return _clean_map(patch)
        if directive == "delete":
            return {}
        if directive != "merge":  # upstream refuses "merge" too; here it is the default
            raise PatchError(field, f"unknown $patch directive {_shown(directive)}")
    if _RETAIN in patch:
        keep = patch.pop(_RETAIN)
        if not isinstance(keep, list):
            raise PatchError(field, "$retainKeys must be a list")
        for key, value in patch.items():
            if value is not None and not key.startswith((_ORDER, _DELETE)) and key not in keep:
                raise PatchError(field, f"{_shown(key)} is patched but not in $retainKeys")
        original = {k: v for k, v in original.items() if k in keep}
    for key in [k for k in patch if k.startswith(_ORDER)]:
        _set_order(original, patch, key, kind, path)
    deletions = []
    for key, value in patch.items():
        child = f"{path}.{key}" if path else key
        current = original.get(key)
        if key.startswith(_DELETE):
            deletions.append((_directive_field(key, _DELETE, field), value))
        elif value is None:
            original.pop(key, None)
        elif isinstance(current, dict) and isinstance(value, dict):
            original[key] = _merge_map(current, value, kind, child)
        elif isinstance(current, list) and isinstance(value, list):
            strategy = LIST_STRATEGIES.get((kind, child))
            merged = _merge_list(current, value, strategy, kind, child) if strategy else None
            original[key] = _clean(value) if merged is None else merged[0]
        elif (cleaned := _clean(value)) is _DROP:
            original.pop(key, None)
        else:
            original[key] = cleaned
    for key, values in deletions:  # after the merges: a value both added and deleted goes
        _delete_from_list(original, key, values, kind, f"{path}.{key}" if path else key)
    return original


def _set_order(
    original: dict[str, Any], patch: dict[str, Any], directive: str, kind: str, path: str
) -> None:
    """``mergePatchIntoOriginal``: merge the list ``$setElementOrder/<field>`` names, then
    order it: named items as the directive says, the server's others where they were."""
    order = patch.pop(directive)
    field = _directive_field(directive, _ORDER, path or None)
    child = f"{path}.{field}" if path else field
    if not isinstance(order, list):
        raise PatchError(child, f"{_ORDER} must be a list")
    strategy = LIST_STRATEGIES.get((kind, child))
    key = strategy.merge_key if strategy else None
    current, listed, items = original.get(field), field in patch, patch.pop(field, None)
    if field in original and not isinstance(current, list):
        raise PatchError(child, f"{_ORDER} names a field that is not a list", invalid=True)
    if listed and not isinstance(items, list):
        raise PatchError(child, f"{_ORDER} names a field the patch does not give a list")
    _check_order(items or [], order, key, child)
    if not listed and not isinstance(current, list):
        return
    server = current if isinstance(current, list) else []
    if not listed:
        merged = server
    elif strategy is None:
        merged = _clean(items)
    else:
        merged, server = _merge_list(server, items or [], strategy, kind, child)
    inside, outside = _partition(merged, order, key)
    original[field] = _normalize(inside, outside, order, server, key)


def _check_order(items: list[Any], order: list[Any], key: str | None, path: str) -> None:
    """``validatePatchWithSetOrderList``: the patch list's items appear in the directive's order
    (walked as upstream walks them: an item marked ``$patch`` is passed over)."""
    if not order or not items:
        return
    if key is not None:
        if not all(isinstance(item, dict) for item in [*items, *order]):
            raise PatchError(path, f"items of {_ORDER} and of its list must be objects")
        items = [item for item in items if item.get(_PATCH) != "delete"]
    at = seen = 0
    while at < len(items) and seen < len(order):
        item, named = items[at], order[seen]
        if isinstance(item, dict) and _PATCH in item:
            at += 1
            continue
        if key is not None and not (key in item and key in named):
            raise PatchError(path, f"an item does not contain the merge key {key}")
        at, seen = at + (_id(item, key) == _id(named, key)), seen + 1
    if at < len(items):
        raise PatchError(path, f"the patch list's order does not match {_ORDER}")


def _merge_list(
    current: list[Any], patch: list[Any], strategy: ListStrategy, kind: str, path: str
) -> tuple[list[Any], list[Any]]:
    """``mergeSlice``: the merged list, and the server's list as :func:`_set_order` sees it."""
    key = strategy.merge_key
    if not current and not patch:
        return current, current
    if key is None:
        if any(isinstance(v, dict | list) for v in [*current, *patch]):
            raise PatchError(path, "a list of scalars holds an object or a list", invalid=True)
        merged = list({_ident(v): v for v in [*current, *patch]}.values())
        return _normalize(*_partition(merged, patch, None), patch, current, None), current
    if not all(isinstance(item, dict) for item in current):
        raise PatchError(path, "the object's list holds items that are not objects", invalid=True)
    # Go deletes and appends in place in the array behind the live list, and upstream orders a
    # $setElementOrder list by that array afterwards: `backing` replays it, so the server's
    # items land where the API server puts them (its lists are as long as their arrays).
    live, backing, filled, shared = list(current), list(current), len(current), True
    plain, replace = [], False
    for n, item in enumerate(patch):
        directive = item.get(_PATCH, "merge") if isinstance(item, dict) else None
        if directive not in ("merge", "delete", "replace"):
            raise PatchError(f"{path}[{n}]", "not an object with a known $patch directive")
        if directive != "replace" and key not in item:
            raise PatchError(f"{path}[{n}]", f"the item does not contain the merge key {key}")
        if directive == "merge":
            plain.append({k: v for k, v in item.items() if k != _PATCH})
        replace = replace or directive == "replace"
        while directive == "delete" and (at := _position(live, key, item[key])) is not None:
            del live[at]
            backing[at : filled - 1], filled = backing[at + 1 : filled], filled - 1
    if replace:
        return [c for c in map(_clean, plain) if c is not _DROP], backing
    before = list(live)
    for item in plain:
        if (at := _position(live, key, item[key])) is not None:
            live[at] = _merge_map(live[at], item, kind, f"{path}[]")
            continue
        live.append(_clean(item))
        shared = shared and filled < len(backing)
        if shared:
            backing[filled], filled = live[-1], filled + 1
    return _normalize(*_partition(live, plain, key), plain, before, key), backing


def _delete_from_list(
    original: dict[str, Any], field: str, values: Any, kind: str, path: str
) -> None:
    """``$deleteFromPrimitiveList/<field>``: drop those scalars; an absent list stays absent."""
    if not isinstance(values, list):
        raise PatchError(path, f"{_DELETE} must be a list")
    strategy = LIST_STRATEGIES.get((kind, path))
    if strategy is not None and strategy.merge_key is not None:
        raise PatchError(path, f"{_DELETE} applies to lists of scalars, not of objects")
    if isinstance(current := original.get(field), list):
        gone = {_ident(v) for v in values}
        original[field] = [v for v in current if _ident(v) not in gone]


def _partition(items: list[Any], named: list[Any], key: str | None) -> tuple[list[Any], list[Any]]:
    """The items ``named`` lists, and the others (the server's own), each in list order."""
    names = {_id(item, key) for item in named}
    given = [i for i in items if _id(i, key) in names]
    return given, [i for i in items if _id(i, key) not in names]


def _normalize(
    given: list[Any], own: list[Any], order: list[Any], server: list[Any], key: str | None
) -> list[Any]:
    """``normalizeElementOrder``: sort the patch's items by ``order`` and the server's own by
    ``server``, then interleave them: a server item goes first only when it and the next patch
    item are both in ``server`` and it stood before that one, so a new item goes before the
    server items it meets (upstream prepends what a patch adds)."""
    given_rank = {_id(item, key): n for n, item in reversed(list(enumerate(order)))}
    rank = {_id(item, key): n for n, item in reversed(list(enumerate(server)))}
    given = sorted(given, key=lambda i: given_rank.get(_id(i, key), len(given_rank)))
    own = sorted(own, key=lambda i: rank.get(_id(i, key), len(rank)))
    merged: list[Any] = []
    while own and given:
        left, right = rank.get(_id(own[0], key)), rank.get(_id(given[0], key))
        first = own if left is not None and right is not None and left < right else given
        merged.append(first.pop(0))
    return merged + own + given


def _clean(value: Any) -> Any:
    """A patch value that lands as it is (no original to merge into): upstream drops its nulls
    and any map holding ``$patch`` (:data:`_DROP`); the other directive keys go too."""
    if isinstance(value, dict):
        return _DROP if _PATCH in value else _clean_map(value)
    if isinstance(value, list):
        return [c for c in map(_clean, value) if c is not _DROP]
    return value


def _clean_map(value: dict[str, Any]) -> dict[str, Any]:
    kept = {
        k: _clean(v)
        for k, v in value.items()
        if v is not None and k != _RETAIN and not k.startswith((_ORDER, _DELETE))
    }
    return {k: v for k, v in kept.items() if v is not _DROP}


def _position(items: list[dict[str, Any]], key: str, value: Any) -> int | None:
    """Where the first item whose merge key equals ``value`` is."""
    wanted = _ident(value)
    return next((n for n, i in enumerate(items) if key in i and _ident(i[key]) == wanted), None)


def _id(item: Any, key: str | None) -> str:
    """What upstream compares an item by: its merge key's value, or itself in a set of scalars."""
    if key is None:
        return _ident(item)
    return _ident(item.get(key) if isinstance(item, dict) else None)


def _ident(value: Any) -> str:
    """Go's ``==`` on decoded JSON: ``1``, ``1.0`` and ``true`` differ."""
    return json.dumps(value, sort_keys=True)


def _directive_field(key: str, prefix: str, path: str | None) -> str:
    head, slash, field = key.partition("/")
    if head != prefix or not slash:
        raise PatchError(path, f"{_shown(key)} is not of the form {prefix}/<field>")
    return field


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= _MAX_SHOWN else f"{text[:_MAX_SHOWN]}..."
