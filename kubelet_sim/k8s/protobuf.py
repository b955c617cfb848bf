"""Reading kubectl's protobuf request bodies as the JSON documents the API reads.

kubectl v1.32 sends the objects of ``kubectl create secret``, ``create configmap`` and ``create
serviceaccount`` as ``application/vnd.kubernetes.protobuf``: the magic ``k8s\\x00`` and then a
``runtime.Unknown`` envelope (``apimachinery/pkg/runtime/generated.proto``) whose ``raw`` field
holds the object encoded by ``k8s.io/api/core/v1/generated.proto``. :func:`decode_object` reads
that envelope with a small wire-format reader (:func:`read_fields`) and turns the three ``v1``
kinds into the dictionaries their JSON would decode to, so the rest of the API sees one format.

The generated Go code (gogo protobuf) decides the semantics kept here: an empty string or a zero
integer is not in the JSON document (kubectl writes every empty field, ``\\x12\\x00``), a pointer
boolean is present when it was sent, ``bytes`` values become base64 text, a repeated message
field merges and a repeated scalar keeps the last value. Fields not modelled (``selfLink``,
``creationTimestamp``, ``ownerReferences``, ``managedFields``, ...) are skipped by wire type.

Everything the reader rejects (a missing magic, truncation, an overlong varint, a group, an
unknown wire type, a known field with the wrong wire type, text that is not UTF-8, other kinds)
is a :class:`~kubelet_sim.errors.ConfigError` for the field ``body`` naming the problem and its
byte offset. Messages never quote object content: a Secret's data stays out of them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from kubelet_sim.core.reference import go_quote
from kubelet_sim.errors import ConfigError

__all__ = [
    "CONTENT_TYPE",
    "MAGIC",
    "WireField",
    "WireType",
    "decode_object",
    "read_fields",
]

MAGIC = b"k8s\x00"
"""The four bytes before every Kubernetes protobuf envelope."""
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
_MAX_FIELD_NUMBER = (1 << 29) - 1
_MAX_QUOTED = 100
_KIND_SHAPE = re.compile(r"[A-Z][A-Za-z0-9]*")
_VERSION_SHAPE = re.compile(r"([a-z0-9][-a-z0-9.]*/)?v[0-9]+((alpha|beta)[0-9]+)?")
_MEDIA_SHAPE = re.compile(r"[a-z0-9][-a-z0-9.+/]*")


class WireType(IntEnum):
    """Protobuf wire types; the groups (3, 4) are proto2 relics no Kubernetes type uses."""

    VARINT = 0
    FIXED64 = 1
    LEN = 2
    START_GROUP = 3
    END_GROUP = 4
    FIXED32 = 5


@dataclass(frozen=True, slots=True)
class WireField:
    """One field as read off the wire.

    ``value`` is the integer of a varint or fixed field; a length-delimited field's payload is
    ``data[start:end]``. ``offset`` is where the field's tag starts in the buffer, for messages.
    """

    number: int
    wire_type: WireType
    offset: int
    value: int = 0
    start: int = 0
    end: int = 0


def _malformed(message: str) -> ConfigError:
    return ConfigError(None, "body", f"malformed protobuf: {message}")


def _quoted(text: str, shape: re.Pattern[str]) -> str:
    """An envelope value for a message: quoted when it has the ``shape`` of what it names.

    A corrupt length can make the envelope's parse land inside ``raw``, so a value here may be
    object content (a Secret's data); one that is not shaped like a kind, a version or a media
    type is described by its size only.
    """
    if not text or (len(text) <= _MAX_QUOTED and shape.fullmatch(text)):
        return go_quote(text)
    return f"(not shown: {len(text.encode())} bytes)"


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; at most 10 bytes and 64 bits."""
    start = pos
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _malformed(f"truncated varint at byte {start}")
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise _malformed(f"overlong varint at byte {start}")
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def read_fields(data: bytes, start: int = 0, end: int | None = None) -> Iterator[WireField]:
    """The fields of the message in ``data[start:end]``, in wire order.

    Offsets stay those of ``data``, so a nested message's errors point into the whole body.

    Raises:
        ConfigError: for the field ``body``: truncation, an overlong varint, field number 0 or
            beyond 2^29-1, a group or a wire type protobuf does not define.
    """
    limit = len(data) if end is None else end
    pos = start
    while pos < limit:
        offset = pos
        tag, pos = _varint(data, pos, limit)
        number, wire = tag >> 3, tag & 7
        if not 1 <= number <= _MAX_FIELD_NUMBER:
            raise _malformed(f"invalid field number {number} at byte {offset}")
        if wire in (WireType.START_GROUP, WireType.END_GROUP):
            raise _malformed(f"group (wire type {wire}) at byte {offset} is not supported")
        if wire == WireType.VARINT:
            value, pos = _varint(data, pos, limit)
            yield WireField(number, WireType.VARINT, offset, value=value)
        elif wire in (WireType.FIXED64, WireType.FIXED32):
            size = 8 if wire == WireType.FIXED64 else 4
            if pos + size > limit:
                raise _malformed(f"truncated {size * 8}-bit field {number} at byte {offset}")
            value = int.from_bytes(data[pos : pos + size], "little")
            pos += size
            yield WireField(number, WireType(wire), offset, value=value)
        elif wire == WireType.LEN:
            length, pos = _varint(data, pos, limit)
            if length > limit - pos:
                raise _malformed(
                    f"truncated field {number} at byte {offset}: {length} bytes announced, "
                    f"{limit - pos} left"
                )
            yield WireField(number, WireType.LEN, offset, start=pos, end=pos + length)
            pos += length
        else:
            raise _malformed(f"invalid wire type {wire} at byte {offset}")


# -- the schema: the few messages kubectl's create commands send --------------------------


class _Kind(Enum):
    STRING = "string"
    INT64 = "int64"
    BOOL = "bool"
    STRINGS = "repeated string"
    STRING_MAP = "map<string,string>"
    BYTES_MAP = "map<string,bytes>"
    MESSAGE = "message"
    MESSAGES = "repeated message"
    SPAN = "bytes (kept as its place in the body)"


_VARINT_KINDS = frozenset({_Kind.INT64, _Kind.BOOL})


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: _Kind
    message: _Message | None = None


@dataclass(frozen=True, slots=True)
class _Message:
    name: str
    fields: Mapping[int, _Field]


_S, _I, _B = _Kind.STRING, _Kind.INT64, _Kind.BOOL
_TYPE_META = _Message("TypeMeta", {1: _Field("apiVersion", _S), 2: _Field("kind", _S)})
_UNKNOWN = _Message(
    "Unknown",
    {
        1: _Field("typeMeta", _Kind.MESSAGE, _TYPE_META),
        2: _Field("raw", _Kind.SPAN),
        3: _Field("contentEncoding", _S),
        4: _Field("contentType", _S),
    },
)
_OBJECT_META = _Message(
    "ObjectMeta",
    {
        1: _Field("name", _S),
        2: _Field("generateName", _S),
        3: _Field("namespace", _S),
        5: _Field("uid", _S),
        6: _Field("resourceVersion", _S),
        7: _Field("generation", _I),
        11: _Field("labels", _Kind.STRING_MAP),
        12: _Field("annotations", _Kind.STRING_MAP),
        14: _Field("finalizers", _Kind.STRINGS),
    },
)
_METADATA = _Field("metadata", _Kind.MESSAGE, _OBJECT_META)
_OBJECT_REFERENCE = _Message(
    "ObjectReference",
    {
        number: _Field(name, _S)
        for number, name in enumerate(
            ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"),
            start=1,
        )
    },
)
_LOCAL_OBJECT_REFERENCE = _Message("LocalObjectReference", {1: _Field("name", _S)})
_KINDS: Mapping[str, _Message] = {
    "Secret": _Message(
        "Secret",
        {
            1: _METADATA,
            2: _Field("data", _Kind.BYTES_MAP),
            3: _Field("type", _S),
            4: _Field("stringData", _Kind.STRING_MAP),
            5: _Field("immutable", _B),
        },
    ),
    "ConfigMap": _Message(
        "ConfigMap",
        {
            1: _METADATA,
            2: _Field("data", _Kind.STRING_MAP),
            3: _Field("binaryData", _Kind.BYTES_MAP),
            4: _Field("immutable", _B),
        },
    ),
    "ServiceAccount": _Message(
        "ServiceAccount",
        {
            1: _METADATA,
            2: _Field("secrets", _Kind.MESSAGES, _OBJECT_REFERENCE),
            3: _Field("imagePullSecrets", _Kind.MESSAGES, _LOCAL_OBJECT_REFERENCE),
            4: _Field("automountServiceAccountToken", _B),
        },
    ),
    # kubectl create namespace: only its name matters here (namespaces are implicit)
    "Namespace": _Message("Namespace", {1: _METADATA}),
}


def _check_wire(found: WireField, want: WireType, where: str) -> None:
    if found.wire_type is not want:
        raise _malformed(
            f"{where} (field {found.number}) at byte {found.offset} has wire type "
            f"{int(found.wire_type)}, want {int(want)}"
        )


def _text(data: bytes, found: WireField, where: str) -> str:
    try:
        return data[found.start : found.end].decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(f"{where} at byte {found.offset} is not valid UTF-8") from None


def _map_entry(data: bytes, entry: WireField, where: str, binary: bool) -> tuple[str, str]:
    """A map entry ``{key = 1; value = 2}``; a missing key or value is the empty one."""
    key, value = "", ""
    for found in read_fields(data, entry.start, entry.end):
        if found.number == 1:
            _check_wire(found, WireType.LEN, f"{where} key")
            key = _text(data, found, f"{where} key")
        elif found.number == 2:
            _check_wire(found, WireType.LEN, f"{where} value")
            if binary:
                value = base64.b64encode(data[found.start : found.end]).decode("ascii")
            else:
                value = _text(data, found, f"{where} value")
    return key, value


def _decode_into(message: _Message, data: bytes, found: WireField, out: dict[str, Any]) -> None:
    """Merge the message in ``found``'s payload into ``out``, as gogo's ``Unmarshal`` does."""
    for field in read_fields(data, found.start, found.end):
        spec = message.fields.get(field.number)
        if spec is None:
            continue  # a field kubelet-sim does not model: already skipped by its wire type
        where = f"{message.name}.{spec.name}"
        _check_wire(field, WireType.VARINT if spec.kind in _VARINT_KINDS else WireType.LEN, where)
        match spec.kind:
            case _Kind.STRING:
                out[spec.name] = _text(data, field, where)
            case _Kind.INT64:
                out[spec.name] = field.value - (1 << 64) if field.value >> 63 else field.value
            case _Kind.BOOL:
                out[spec.name] = field.value != 0
            case _Kind.STRINGS:
                out.setdefault(spec.name, []).append(_text(data, field, where))
            case _Kind.STRING_MAP | _Kind.BYTES_MAP:
                key, value = _map_entry(data, field, where, spec.kind is _Kind.BYTES_MAP)
                out.setdefault(spec.name, {})[key] = value
            case _Kind.MESSAGE:
                assert spec.message is not None
                _decode_into(spec.message, data, field, out.setdefault(spec.name, {}))
            case _Kind.MESSAGES:
                assert spec.message is not None
                item: dict[str, Any] = {}
                _decode_into(spec.message, data, field, item)
                out.setdefault(spec.name, []).append(item)
            case _Kind.SPAN:
                out[spec.name] = (field.start, field.end)
    for spec in message.fields.values():
        if (spec.kind is _Kind.STRING and out.get(spec.name) == "") or (
            spec.kind is _Kind.INT64 and out.get(spec.name) == 0
        ):
            del out[spec.name]  # omitempty: what the JSON of the Go struct would leave out


def decode_object(body: bytes) -> dict[str, Any]:
    """kubectl's protobuf body as the JSON document the API would read.

    The body is the magic ``k8s\\x00`` then a ``runtime.Unknown`` (``typeMeta`` = 1 holding
    ``apiVersion`` = 1 and ``kind`` = 2, ``raw`` = 2, ``contentEncoding`` = 3, ``contentType`` =
    4). Only ``v1`` Secret, ConfigMap, ServiceAccount and Namespace are read; the answer is
    ``{"apiVersion", "kind", "metadata": {...}, ...}`` with ``metadata`` always present.

    Raises:
        ConfigError: for the field ``body``: a body that is not a well-formed envelope, or one
            of another kind or version (send JSON for those).
    """
    if not body.startswith(MAGIC):
        raise _malformed('the body does not start with the magic "k8s\\x00"')
    envelope: dict[str, Any] = {}
    whole = WireField(0, WireType.LEN, len(MAGIC), start=len(MAGIC), end=len(body))
    _decode_into(_UNKNOWN, body, whole, envelope)
    type_meta: dict[str, Any] = envelope.get("typeMeta", {})
    api_version: str = type_meta.get("apiVersion", "")
    kind: str = type_meta.get("kind", "")
    encoding: str = envelope.get("contentEncoding", "")
    content_type: str = envelope.get("contentType", "")
    if encoding:
        raise ConfigError(
            None,
            "body",
            f"protobuf contentEncoding {_quoted(encoding, _MEDIA_SHAPE)} is not supported",
        )
    if content_type not in ("", CONTENT_TYPE):
        raise ConfigError(
            None,
            "body",
            f"protobuf contentType {_quoted(content_type, _MEDIA_SHAPE)} is not supported",
        )
    if not kind:
        raise _malformed("the envelope names no kind")
    message = _KINDS.get(kind)
    if message is None:
        raise ConfigError(
            None,
            "body",
            f"protobuf body of kind {_quoted(kind, _KIND_SHAPE)} is not supported; send JSON",
        )
    if api_version != "v1":
        raise ConfigError(
            None,
            "body",
            f"protobuf body of apiVersion {_quoted(api_version, _VERSION_SHAPE)} "
            f"kind {_quoted(kind, _KIND_SHAPE)} "
            "is not supported; send JSON",
        )
    start, end = envelope.get("raw", (0, 0))
    doc: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {}}
    _decode_into(message, body, WireField(2, WireType.LEN, start, start=start, end=end), doc)
    return doc
