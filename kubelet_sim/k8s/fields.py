"""Reading a manifest field by field: the checks every object parser shares.

:class:`FieldReader` wraps one document: each problem is a
:class:`~kubelet_sim.errors.ConfigError` naming the object and the field path (with upstream's
wording: ``Required value``, ``Invalid value: "x": ...``), and the fields the node does not model
are collected rather than dropped (:meth:`FieldReader.fields`). The name, label, port and
quantity rules are apimachinery's ``pkg/util/validation`` ones (``IsDNS1123Label``,
``IsQualifiedName``, ``IsValidPortName``, ``IsConfigMapKey``) and ``ValidateResourceRequirements``'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.podspec import parse_quantity

__all__ = [
    "MAX_REPORTED_FIELDS",
    "STANDARD_RESOURCES",
    "FieldReader",
    "field_names",
    "is_unset",
    "overcommittable",
]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_PORT_NAME = re.compile(r"[-a-z0-9]+")
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
MAX_REPORTED_FIELDS = 100
"""Most unsupported fields one object lists (a hostile manifest's thousand keys stay one short
answer); a key longer than :data:`MAX_REPORTED_KEY` is shown cut, ending in ``...``."""
MAX_REPORTED_KEY = 100


def field_names(words: str) -> frozenset[str]:
    """A table of field names written as words (``"name image command"``)."""
    return frozenset(words.split())


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else "null"
    )


def is_unset(value: object) -> bool:
    """A value the API treats as not set: null, zero, false or empty."""
    return value is None or value is False or value in (0, "") or value == [] or value == {}


class FieldReader:
    """Field access for one document that raises ConfigError with the object and field path.

    ``unsupported`` collects the object-relative paths of fields that are set but not modelled
    (kubelet-sim ignores them), ``unknown`` the subset that upstream does not know either (what
    kubectl reports as ``unknown field``).
    """

    def __init__(self, where: str, prefix: str) -> None:
        self.where = where
        self.prefix = prefix
        self.unsupported: list[str] = []
        self.unknown: list[str] = []

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(self.where, self.prefix + path, message)

    def fields(
        self,
        raw: Mapping[Any, Any],
        path: str,
        modelled: frozenset[str],
        other: frozenset[str] = frozenset(),
        *,
        defaults: Mapping[str, object] = MappingProxyType({}),
        ignored: frozenset[str] = frozenset(),
    ) -> None:
        """Record the keys of ``raw`` (at ``path``) that are neither ``modelled`` nor ``ignored``.

        A key in ``other`` (known upstream) is recorded only when set: not null/zero/empty and
        not its API default from ``defaults``; any other key is unknown and always recorded. At
        most :data:`MAX_REPORTED_FIELDS` are recorded.
        """
        for key, value in raw.items():
            if key in modelled or key in ignored or len(self.unsupported) >= MAX_REPORTED_FIELDS:
                continue
            shown = str(key)
            if len(shown) > MAX_REPORTED_KEY:
                shown = shown[:MAX_REPORTED_KEY] + "..."
            where = f"{path}.{shown}" if path else shown
            if key not in other:
                self.unknown.append(where)
                self.unsupported.append(where)
            elif key in defaults:
                if value is not None and value != defaults[key]:
                    self.unsupported.append(where)
            elif not is_unset(value):
                self.unsupported.append(where)

    def mapping(self, value: Any, path: str, *, required: bool = False) -> dict[Any, Any]:
        if value is None:
            if required:
                raise self.fail(path, "Required value")
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {_type_name(value)}")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {_type_name(value)}")
        return value

    def string(self, value: Any, path: str, *, required: bool = False) -> str:
        if value is None or value == "":
            if required:
                raise self.fail(path, "Required value")
            return ""
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string, got {_type_name(value)}")
        return value

    def integer(self, value: Any, path: str, *, required: bool = False) -> int | None:
        """An integer (a JSON number without a fraction); None when absent."""
        if value is None:
            if required:
                raise self.fail(path, "Required value")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {_type_name(value)}")
        if not -(1 << 63) <= value < (1 << 63):
            # The API's integers are Go int64 at most (and Python cannot print a 5000-digit int).
            raise self.fail(path, "Invalid value: out of range for a 64-bit integer")
        return value

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(path, f"expected a boolean, got {_type_name(value)}")
        return value

    def strings(self, value: Any, path: str) -> tuple[str, ...] | None:
        """A list of strings; None when absent."""
        if value is None:
            return None
        items = self.sequence(value, path)
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise self.fail(f"{path}[{index}]", f"expected a string, got {_type_name(item)}")
        return tuple(items)

    # -- names ----------------------------------------------------------------------------

    def name(self, value: str, path: str, *, label: bool = False, dns1035: bool = False) -> None:
        """An RFC 1123 subdomain (a label when ``label``; an RFC 1035 label when ``dns1035``)."""
        limit = 63 if label or dns1035 else 253
        if len(value) > limit:
            raise self.fail(
                path, f'Invalid value: "{value}": must be no more than {limit} characters'
            )
        if dns1035:
            if not _DNS_1035_LABEL.fullmatch(value):
                raise self.fail(
                    path,
                    f'Invalid value: "{value}": a DNS-1035 label must consist of lower case '
                    "alphanumeric characters or '-', start with an alphabetic character, and end "
                    "with an alphanumeric character",
                )
            return
        pattern, what = (_DNS_LABEL, "label") if label else (_DNS_SUBDOMAIN, "subdomain")
        if not pattern.fullmatch(value):
            raise self.fail(
                path,
                f'Invalid value: "{value}": a lowercase RFC 1123 {what} must consist of lower case '
                + (
                    "alphanumeric characters or '-'"
                    if label
                    else "alphanumeric characters, '-' or '.'"
                )
                + ", and must start and end with an alphanumeric character",
            )

    def qualified_name(self, value: str, path: str) -> None:
        """``IsQualifiedName``: ``[prefix/]name``, the prefix a DNS subdomain (label keys)."""
        prefix, slash, name = value.rpartition("/")
        if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
            raise self.fail(path, f'Invalid value: "{value}": prefix part must be a DNS subdomain')
        if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
            raise self.fail(
                path,
                f'Invalid value: "{value}": name part must consist of at most 63 alphanumeric '
                "characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            )

    def labels(self, value: Any, path: str) -> Mapping[str, str]:
        """A label map (``ValidateLabels``): qualified-name keys, label values."""
        out: dict[str, str] = {}
        for key, item in self.mapping(value, path).items():
            where = f"{path}[{key}]"
            if not isinstance(key, str):
                raise self.fail(where, "Invalid value: a label key must be a string")
            self.qualified_name(key, where)
            text = self.string(item, where)
            if len(text) > 63 or not _LABEL_VALUE.fullmatch(text):
                raise self.fail(
                    where,
                    f'Invalid value: "{text}": a valid label must be an empty string or consist of '
                    "at most 63 alphanumeric characters, '-', '_' or '.', and must start and end "
                    "with an alphanumeric character",
                )
            out[key] = text
        return MappingProxyType(out)

    def config_key(self, key: object, path: str) -> str:
        """``IsConfigMapKey``: a ConfigMap or Secret key."""
        if not isinstance(key, str):
            # YAML keys may be numbers, booleans or null; the API's keys are strings.
            kind = {bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
            raise self.fail(
                path,
                "Invalid value: a config key must be a string, got "
                + kind.get(type(key), "a collection"),
            )
        if not _CONFIG_KEY.fullmatch(key) or len(key) > 253:
            raise self.fail(
                path,
                f'Invalid value: "{key}": a valid config key must consist of alphanumeric '
                "characters, '-', '_' or '.'",
            )
        return key

    # -- ports and quantities -------------------------------------------------------------

    def port_number(self, value: Any, path: str, *, required: bool = True) -> int:
        number = self.integer(value, path, required=required)
        if number is None:
            return 0
        if not 1 <= number <= 65535:
            raise self.fail(
                path, f"Invalid value: {number}: must be between 1 and 65535, inclusive"
            )
        return number

    def port_name(self, value: str, path: str) -> None:
        """``IsValidPortName``: an IANA_SVC_NAME (at most 15 of a-z, 0-9 and '-', one letter)."""
        problem = ""
        if len(value) > 15:
            problem = "must be no more than 15 characters"
        elif not _PORT_NAME.fullmatch(value):
            problem = "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
        elif not re.search("[a-z]", value):
            problem = "must contain at least one letter (a-z)"
        elif "--" in value:
            problem = "must not contain consecutive hyphens"
        elif value.startswith("-") or value.endswith("-"):
            problem = "must not begin or end with a hyphen"
        if problem:
            raise self.fail(path, f'Invalid value: "{value}": {problem}')

    def port_or_name(self, value: Any, path: str) -> int | str:
        """An IntOrString port: a number 1-65535 or an IANA_SVC_NAME (``ValidatePortNumOrName``)."""
        if value is None:
            raise self.fail(path, "Required value")
        if isinstance(value, str):
            self.port_name(value, path)
            return value
        return self.port_number(value, path)

    def quantity(self, value: Any, path: str) -> str:
        """A quantity as the manifest writes it (trimmed); JSON numbers become their text."""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(path, f"expected a quantity, got {_type_name(value)}")
        text = value.strip() if isinstance(value, str) else str(value)
        try:
            parse_quantity(text)
        except ValueError as exc:
            raise self.fail(path, f'Invalid value: "{text[:64]}": {exc}') from None
        return text

    def resource_list(self, value: Any, path: str) -> dict[str, str]:
        """A container ``ResourceList``: resource names and non-negative quantities."""
        out: dict[str, str] = {}
        for name, item in self.mapping(value, path).items():
            where = f"{path}[{name}]"
            if not isinstance(name, str):
                raise self.fail(where, "Invalid value: a resource name must be a string")
            self._resource_name(name, where)
            text = self.quantity(item, where)
            amount = parse_quantity(text)
            if amount < 0:
                raise self.fail(
                    where, f'Invalid value: "{text}": must be greater than or equal to 0'
                )
            if not _native(name) and amount.denominator != 1:
                raise self.fail(where, f'Invalid value: "{text}": must be an integer')
            out[name] = text
        return out

    def _resource_name(self, name: str, path: str) -> None:
        self.qualified_name(name, path)
        if not _native(name):
            return  # an extended resource (example.com/gpu)
        base = name.removeprefix("kubernetes.io/")
        if base in STANDARD_RESOURCES:
            return
        if base.startswith("hugepages-"):
            try:
                parse_quantity(base.removeprefix("hugepages-"))
                return
            except ValueError:
                pass
        raise self.fail(
            path, f'Invalid value: "{name}": must be a standard resource for containers'
        )


def _native(name: str) -> bool:
    """``IsNativeResource``: no domain, or the ``kubernetes.io/`` one."""
    return "/" not in name or name.startswith("kubernetes.io/")


def overcommittable(name: str) -> bool:
    """``IsOvercommitAllowed``: native and not hugepages."""
    return _native(name) and not name.removeprefix("kubernetes.io/").startswith("hugepages-")
