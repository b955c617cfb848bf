"""kubectl's protobuf request bodies: real captures, a test-only encoder and malformed input."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.protobuf import MAGIC, WireField, WireType, decode_object, read_fields


def outcome(body: bytes) -> dict[str, Any] | ConfigError:
    """The decoded document, or the ConfigError (any other exception fails the test)."""
    try:
        return decode_object(body)
    except ConfigError as exc:
        return exc


# -- captured from kubectl v1.32 ----------------------------------------------------------

# kubectl create secret docker-registry myregistrykey --docker-server=a --docker-username=b ...
SECRET = (
    b'k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\x93\x01\n\x1d\n\rmyregistrykey\x12\x00\x1a\x00"\x00'
    b"*\x002\x008\x00B\x00\x12R\n\x11.dockerconfigjson\x12="
    b'{"auths":{"a":{"username":"b","password":"c","auth":"Yjpj"}}}'
    b'\x1a\x1ekubernetes.io/dockerconfigjson\x1a\x00"\x00'
)
# kubectl create configmap x --from-literal=a=b
CONFIGMAP = (
    b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1b\n\x11\n\x01x\x12\x00\x1a\x00"\x00*\x002\x008\x00'
    b'B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00"\x00'
)
# kubectl create serviceaccount foo
SERVICEACCOUNT = (
    b'k8s\x00\n\x14\n\x02v1\x12\x0eServiceAccount\x12\x15\n\x13\n\x03foo\x12\x00\x1a\x00"\x00*\x00'
    b'2\x008\x00B\x00\x1a\x00"\x00'
)
# kubectl create secret generic s1 --from-literal=k=v --from-literal=e= --save-config -n ns1
SECRET_SAVED = (
    b'k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12\xe4\x01\n\xd0\x01\n\x02s1\x12\x00\x1a\x03ns1"\x00*\x00'
    b"2\x008\x00B\x00b\xb8\x01\n0kubectl.kubernetes.io/last-applied-configuration\x12\x83\x01"
    b'{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s1","namespace":"ns1",'
    b'"creationTimestamp":null},"data":{"e":"","k":"dg=="}}\n'
    b'\x12\x05\n\x01e\x12\x00\x12\x06\n\x01k\x12\x01v\x1a\x00\x1a\x00"\x00'
)
# kubectl create configmap c1 --from-file=bin.dat --from-file=f.txt --from-literal=z=1
CONFIGMAP_FILES = (
    b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12?\n\x12\n\x02c1\x12\x00\x1a\x00"\x00*\x002\x008\x00'
    b"B\x00\x12\x0e\n\x05f.txt\x12\x05hello\x12\x06\n\x01z\x12\x011"
    b'\x1a\x11\n\x07bin.dat\x12\x06bin\x00\xff\x01\x1a\x00"\x00'
)
# kubectl create serviceaccount sa1 --save-config
SERVICEACCOUNT_SAVED = (
    b'k8s\x00\n\x14\n\x02v1\x12\x0eServiceAccount\x12\xac\x01\n\xa9\x01\n\x03sa1\x12\x00\x1a\x00"\x00'
    b"*\x002\x008\x00B\x00b\x93\x01\n0kubectl.kubernetes.io/last-applied-configuration\x12_"
    b'{"kind":"ServiceAccount","apiVersion":"v1","metadata":{"name":"sa1",'
    b'"creationTimestamp":null}}\n\x1a\x00"\x00'
)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

VECTORS = [
    pytest.param(
        SECRET,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "myregistrykey"},
            "data": {
                ".dockerconfigjson": base64.b64encode(
                    b'{"auths":{"a":{"username":"b","password":"c","auth":"Yjpj"}}}'
                ).decode()
            },
            "type": "kubernetes.io/dockerconfigjson",
        },
        {18, 168, 170},
        id="secret-docker-registry",
    ),
    pytest.param(
        CONFIGMAP,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}},
        {21, 50, 52},
        id="configmap-literal",
    ),
    pytest.param(
        SERVICEACCOUNT,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "foo"}},
        {26, 49, 51},
        id="serviceaccount",
    ),
    pytest.param(
        SECRET_SAVED,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "s1",
                "namespace": "ns1",
                "annotations": {
                    LAST_APPLIED: '{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s1",'
                    '"namespace":"ns1","creationTimestamp":null},'
                    '"data":{"e":"","k":"dg=="}}\n'
                },
            },
            "data": {"e": "", "k": "dg=="},
        },
        {18, 249, 251},
        id="secret-generic-save-config",
    ),
    pytest.param(
        CONFIGMAP_FILES,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c1"},
            "data": {"f.txt": "hello", "z": "1"},
            "binaryData": {"bin.dat": base64.b64encode(b"bin\x00\xff\x01").decode()},
        },
        {21, 86, 88},
        id="configmap-from-files",
    ),
    pytest.param(
        SERVICEACCOUNT_SAVED,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": "sa1",
                "annotations": {
                    LAST_APPLIED: '{"kind":"ServiceAccount","apiVersion":"v1",'
                    '"metadata":{"name":"sa1","creationTimestamp":null}}\n'
                },
            },
        },
        {26, 201, 203},
        id="serviceaccount-save-config",
    ),
]


@pytest.mark.parametrize(("body", "expected", "boundaries"), VECTORS)
def test_kubectl_bodies_decode(body: bytes, expected: dict[str, Any], boundaries: set[int]) -> None:
    assert decode_object(body) == expected


@pytest.mark.parametrize(("body", "expected", "boundaries"), VECTORS)
def test_every_truncation_is_a_config_error_or_a_field_boundary(
    body: bytes, expected: dict[str, Any], boundaries: set[int]
) -> None:
    """A cut inside a field is an error; a cut between top-level fields (after typeMeta) is a
    shorter but well-formed envelope, which protobuf cannot tell from a whole one."""
    outcomes = {length: outcome(body[:length]) for length in range(len(body))}
    errors = {n: o for n, o in outcomes.items() if isinstance(o, ConfigError)}
    assert set(outcomes) - set(errors) == boundaries
    assert {(error.file, error.field) for error in errors.values()} == {(None, "body")}


# -- a test-only encoder ------------------------------------------------------------------


def varint(number: int) -> bytes:
    number &= (1 << 64) - 1
    out = bytearray()
    while number >= 0x80:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    return ld(number, value.encode())


def vint(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def entries(number: int, items: Mapping[str, str | bytes]) -> bytes:
    out = b""
    for key, value in items.items():
        raw = value.encode() if isinstance(value, str) else value
        out += ld(number, text(1, key) + ld(2, raw))
    return out


def meta(
    name: str = "",
    namespace: str = "",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    finalizers: Sequence[str] = (),
    generation: int = 0,
) -> bytes:
    """ObjectMeta as kubectl writes it: every empty string and a zero generation included."""
    return (
        text(1, name)
        + text(2, "")
        + text(3, namespace)
        + text(4, "")  # selfLink
        + text(5, "")
        + text(6, "")
        + vint(7, generation)
        + ld(8, b"")  # creationTimestamp
        + entries(11, labels or {})
        + entries(12, annotations or {})
        + b"".join(text(14, item) for item in finalizers)
    )


def envelope(kind: str, raw: bytes, api_version: str = "v1", tail: bytes = b"") -> bytes:
    type_meta = text(1, api_version) + text(2, kind)
    return MAGIC + ld(1, type_meta) + ld(2, raw) + text(3, "") + text(4, "") + tail


def b64(items: Mapping[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in items.items()}


def expected_meta(
    name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if name:
        out["name"] = name
    if namespace:
        out["namespace"] = namespace
    if labels:
        out["labels"] = dict(labels)
    if annotations:
        out["annotations"] = dict(annotations)
    return out


def test_the_encoder_reproduces_a_kubectl_capture() -> None:
    raw = ld(1, meta("x")) + entries(2, {"a": "b"})
    assert envelope("ConfigMap", raw) == CONFIGMAP


# -- round trips --------------------------------------------------------------------------

_TEXT = st.text(max_size=12)
_STRINGS = st.dictionaries(_TEXT, _TEXT, max_size=4)
_BYTES = st.dictionaries(_TEXT, st.binary(max_size=40), max_size=4)
_FLAG = st.one_of(st.none(), st.booleans())


@given(_TEXT, _TEXT, _STRINGS, _STRINGS, _BYTES, _STRINGS, _TEXT, _FLAG)
def test_a_secret_round_trips(
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    data: dict[str, bytes],
    string_data: dict[str, str],
    secret_type: str,
    immutable: bool | None,
) -> None:
    raw = (
        ld(1, meta(name, namespace, labels, annotations))
        + entries(2, data)
        + text(3, secret_type)
        + entries(4, string_data)
        + (b"" if immutable is None else vint(5, int(immutable)))
    )
    expected: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": expected_meta(name, namespace, labels, annotations),
    }
    if data:
        expected["data"] = b64(data)
    if secret_type:
        expected["type"] = secret_type
    if string_data:
        expected["stringData"] = string_data
    if immutable is not None:
        expected["immutable"] = immutable
    assert decode_object(envelope("Secret", raw)) == expected


@given(_TEXT, _STRINGS, _STRINGS, _BYTES, _FLAG)
def test_a_configmap_round_trips(
    name: str,
    labels: dict[str, str],
    data: dict[str, str],
    binary: dict[str, bytes],
    immutable: bool | None,
) -> None:
    raw = (
        ld(1, meta(name, labels=labels))
        + entries(2, data)
        + entries(3, binary)
        + (b"" if immutable is None else vint(4, int(immutable)))
    )
    expected: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": expected_meta(name, "", labels, {}),
    }
    if data:
        expected["data"] = data
    if binary:
        expected["binaryData"] = b64(binary)
    if immutable is not None:
        expected["immutable"] = immutable
    assert decode_object(envelope("ConfigMap", raw)) == expected


_REFERENCE_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
_REFERENCE = st.fixed_dictionaries({}, optional=dict.fromkeys(_REFERENCE_FIELDS, _TEXT))


@given(_TEXT, st.lists(_REFERENCE, max_size=3), st.lists(_TEXT, max_size=3), _FLAG)
def test_a_serviceaccount_round_trips(
    name: str, secrets: list[dict[str, str]], pull_secrets: list[str], automount: bool | None
) -> None:
    raw = ld(1, meta(name))
    for ref in secrets:
        raw += ld(2, b"".join(text(_REFERENCE_FIELDS.index(k) + 1, v) for k, v in ref.items()))
    raw += b"".join(ld(3, text(1, item)) for item in pull_secrets)
    raw += b"" if automount is None else vint(4, int(automount))
    expected: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": expected_meta(name, "", {}, {}),
    }
    if secrets:
        expected["secrets"] = [{k: v for k, v in ref.items() if v} for ref in secrets]
    if pull_secrets:
        expected["imagePullSecrets"] = [{"name": item} if item else {} for item in pull_secrets]
    if automount is not None:
        expected["automountServiceAccountToken"] = automount
    assert decode_object(envelope("ServiceAccount", raw)) == expected


# -- gogo semantics -----------------------------------------------------------------------

_UNMODELLED = (
    tag(9, 5) + b"\x01\x02\x03\x04" + tag(10, 1) + b"\x00" * 8 + vint(15, 300) + ld(16, b"\x08\x01")
)


@pytest.mark.parametrize(
    ("raw", "metadata"),
    [
        pytest.param(b"", {}, id="no-metadata-is-empty"),
        pytest.param(ld(1, b"") + ld(1, text(1, "a")), {"name": "a"}, id="empty-then-set"),
        pytest.param(
            ld(1, text(1, "a")) + ld(1, text(3, "n")),
            {"name": "a", "namespace": "n"},
            id="metadata-twice-merges",
        ),
        pytest.param(ld(1, text(1, "a") + text(1, "b")), {"name": "b"}, id="last-string-wins"),
        pytest.param(ld(1, text(1, "a") + text(1, "")), {}, id="emptied-string-omitted"),
        pytest.param(ld(1, vint(7, 5)), {"generation": 5}, id="generation"),
        pytest.param(ld(1, vint(7, -2)), {"generation": -2}, id="negative-generation"),
        pytest.param(ld(1, vint(7, 0)), {}, id="zero-generation-omitted"),
        pytest.param(
            ld(1, text(14, "b") + text(14, "") + text(14, "a")),
            {"finalizers": ["b", "", "a"]},
            id="finalizers-keep-order",
        ),
        pytest.param(
            ld(1, entries(11, {"k": "1"}) + entries(11, {"k": "2", "j": ""})),
            {"labels": {"k": "2", "j": ""}},
            id="map-last-value-wins",
        ),
        pytest.param(ld(1, ld(11, b"")), {"labels": {"": ""}}, id="empty-map-entry"),
        pytest.param(
            ld(1, ld(12, ld(2, b"v") + ld(1, b"k") + _UNMODELLED)),
            {"annotations": {"k": "v"}},
            id="entry-fields-any-order-unknown-skipped",
        ),
        pytest.param(
            ld(1, text(1, "n") + _UNMODELLED + ld(13, text(1, "o")) + ld(17, b"\x0a\x00")),
            {"name": "n"},
            id="unmodelled-metadata-fields-skipped",
        ),
        pytest.param(ld(1, text(1, "n")) + _UNMODELLED, {"name": "n"}, id="unknown-secret-fields"),
        pytest.param(
            ld(1, text(5, "u") + text(6, "7") + text(2, "g-")),
            {"uid": "u", "resourceVersion": "7", "generateName": "g-"},
            id="identity-fields",
        ),
    ],
)
def test_object_meta_semantics(raw: bytes, metadata: dict[str, Any]) -> None:
    assert decode_object(envelope("Secret", raw))["metadata"] == metadata


@pytest.mark.parametrize(
    ("raw", "immutable"),
    [
        pytest.param(vint(5, 0), False, id="false-is-sent"),
        pytest.param(vint(5, 1), True, id="true"),
        pytest.param(vint(5, 2), True, id="any-nonzero-is-true"),
        pytest.param(vint(5, 1) + vint(5, 0), False, id="last-wins"),
    ],
)
def test_a_sent_boolean_is_kept(raw: bytes, immutable: bool) -> None:
    assert decode_object(envelope("Secret", raw))["immutable"] is immutable


def test_the_envelope_may_name_the_protobuf_content_type_and_carry_unknown_fields() -> None:
    body = envelope(
        "ConfigMap", ld(1, meta("x")), tail=text(4, "application/vnd.kubernetes.protobuf")
    )
    assert decode_object(body + _UNMODELLED)["kind"] == "ConfigMap"
    assert decode_object(MAGIC + _UNMODELLED + body[len(MAGIC) :])["kind"] == "ConfigMap"


def test_an_empty_raw_is_an_empty_object() -> None:
    body = MAGIC + ld(1, text(1, "v1") + text(2, "Secret"))
    assert decode_object(body) == {"apiVersion": "v1", "kind": "Secret", "metadata": {}}


# -- the wire reader ----------------------------------------------------------------------

_MAX64 = (1 << 64) - 1
_MAX_FIELD = (1 << 29) - 1
_READS = [
    ("empty", b"", []),
    ("varint", b"\x08\x96\x01", [WireField(1, WireType.VARINT, 0, value=150)]),
    ("varint-max", vint(1, _MAX64), [WireField(1, WireType.VARINT, 0, value=_MAX64)]),
    ("varint-padded", b"\x08\x80\x00", [WireField(1, WireType.VARINT, 0, value=0)]),
    ("fixed32", tag(2, 5) + b"\x01\x00\x00\x80", [WireField(2, WireType.FIXED32, 0, 0x80000001)]),
    ("fixed64", tag(3, 1) + b"\xff" * 8, [WireField(3, WireType.FIXED64, 0, value=_MAX64)]),
    (
        "len-then-varint",
        b"\x12\x02hi\x08\x01",
        [WireField(2, WireType.LEN, 0, start=2, end=4), WireField(1, WireType.VARINT, 4, 1)],
    ),
    (
        "largest-field-number",
        tag(_MAX_FIELD, 0) + b"\x00",
        [WireField(_MAX_FIELD, WireType.VARINT, 0)],
    ),
]


@pytest.mark.parametrize(("data", "fields"), [pytest.param(d, f, id=i) for i, d, f in _READS])
def test_read_fields(data: bytes, fields: list[WireField]) -> None:
    assert list(read_fields(data)) == fields


# -- malformed and unsupported bodies -----------------------------------------------------

_GOOD_TYPE = ld(1, text(1, "v1") + text(2, "Secret"))
_BAD = [
    ("empty", b"", "magic"),
    ("json", b'{"kind":"Secret"}', "magic"),
    ("short-magic", b"k8s", "magic"),
    ("no-type-meta", MAGIC, "names no kind"),
    ("truncated-tag", MAGIC + b"\x80", "truncated varint at byte 4"),
    ("varint-past-64-bits", MAGIC + tag(9, 0) + b"\xff" * 9 + b"\x02", "overlong varint at byte 5"),
    ("varint-11-bytes", MAGIC + tag(9, 0) + b"\x80" * 10 + b"\x00", "overlong varint at byte 5"),
    ("overlong-tag", MAGIC + b"\x80" * 11, "overlong varint at byte 4"),
    ("start-group", MAGIC + tag(9, 3), "group (wire type 3) at byte 4"),
    ("end-group", MAGIC + tag(9, 4), "group (wire type 4) at byte 4"),
    ("wire-type-6", MAGIC + tag(9, 6), "invalid wire type 6 at byte 4"),
    ("wire-type-7", MAGIC + tag(9, 7), "invalid wire type 7 at byte 4"),
    ("field-zero", MAGIC + b"\x00\x00", "invalid field number 0 at byte 4"),
    ("field-too-big", MAGIC + tag(1 << 29, 0) + b"\x00", "invalid field number 536870912"),
    ("fixed64-cut", MAGIC + tag(9, 1) + b"\x00" * 7, "truncated 64-bit field 9 at byte 4"),
    ("fixed32-cut", MAGIC + tag(9, 5) + b"\x00" * 3, "truncated 32-bit field 9 at byte 4"),
    ("len-cut", MAGIC + tag(9, 2) + b"\x05ab", "field 9 at byte 4: 5 bytes announced, 2 left"),
    (
        "type-meta-varint",
        MAGIC + vint(1, 1),
        "Unknown.typeMeta (field 1) at byte 4 has wire type 0",
    ),
    ("raw-varint", MAGIC + _GOOD_TYPE + vint(2, 1), "Unknown.raw (field 2) at byte 18"),
    ("metadata-varint", envelope("Secret", vint(1, 0)), "Secret.metadata (field 1) at byte 20"),
    ("bool-as-len", envelope("Secret", ld(5, b"")), "Secret.immutable (field 5) at byte 20"),
    ("name-varint", envelope("Secret", ld(1, vint(1, 0))), "ObjectMeta.name (field 1)"),
    ("labels-varint", envelope("Secret", ld(1, vint(11, 0))), "ObjectMeta.labels (field 11)"),
    ("map-key-varint", envelope("ConfigMap", ld(2, vint(1, 0))), "ConfigMap.data key (field 1)"),
    ("map-value-varint", envelope("ConfigMap", ld(3, vint(2, 0))), "binaryData value (field 2)"),
    (
        "reference-name-varint",
        envelope("ServiceAccount", ld(2, vint(3, 0))),
        "ObjectReference.name (field 3)",
    ),
    (
        "metadata-past-raw",
        envelope("Secret", tag(1, 2) + b"\x0aabc"),
        "field 1 at byte 20: 10 bytes announced",
    ),
    (
        "name-not-utf8",
        envelope("Secret", ld(1, ld(1, b"\xff"))),
        "ObjectMeta.name at byte 22 is not valid UTF-8",
    ),
    (
        "label-value-not-utf8",
        envelope("Secret", ld(1, ld(11, text(1, "k") + ld(2, b"\xc3")))),
        "ObjectMeta.labels value at byte",
    ),
    ("kind-not-utf8", MAGIC + ld(1, ld(2, b"\xfe")), "TypeMeta.kind at byte 6 is not valid UTF-8"),
    ("pod", envelope("Pod", b""), 'protobuf body of kind "Pod" is not supported; send JSON'),
    ("apps-v1", envelope("Secret", b"", api_version="apps/v1"), 'apiVersion "apps/v1"'),
    ("no-version", envelope("Secret", b"", api_version=""), 'apiVersion ""'),
    ("deployment", envelope("Deployment", b"", "apps/v1"), 'kind "Deployment" is not supported'),
    ("long-kind", envelope("P" * 101, b""), "kind (not shown: 101 bytes)"),
    ("odd-kind", envelope("Pod\n", b""), "kind (not shown: 4 bytes)"),
    ("lowercase-kind", envelope("p", b""), "kind (not shown: 1 bytes)"),
    ("gzip", envelope("Secret", b"", tail=text(3, "gzip")), 'contentEncoding "gzip" is not'),
    (
        "json-content-type",
        envelope("Secret", b"", tail=text(4, "application/json")),
        'contentType "application/json" is not supported',
    ),
]


@pytest.mark.parametrize(("body", "names"), [pytest.param(b, n, id=i) for i, b, n in _BAD])
def test_a_bad_body_is_a_config_error_naming_the_problem(body: bytes, names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        decode_object(body)
    assert caught.value.file is None
    assert caught.value.field == "body"
    assert names in caught.value.message
    assert len(caught.value.message) < 300


_SECRET_TEXT = "hunter2-TOP-SECRET"
_LEAKY = envelope(
    "Secret",
    ld(1, meta("s"))
    + entries(2, {"password": _SECRET_TEXT.encode()})
    + entries(4, {"token": _SECRET_TEXT})
    + entries(4, {"broken": b"\xff" + _SECRET_TEXT.encode()}),
)


def test_secret_data_never_reaches_a_message() -> None:
    bodies = [_LEAKY[:length] for length in range(len(_LEAKY))]
    bodies += [
        _LEAKY[:index] + bytes([value]) + _LEAKY[index + 1 :]
        for index in range(len(MAGIC), len(_LEAKY))
        for value in (0x00, 0x07, 0x80, 0xFF)
    ]
    # Every value for the envelope's two lengths, which decide where its parse lands.
    bodies += [
        _LEAKY[:index] + bytes([value]) + _LEAKY[index + 1 :]
        for index in (5, 19)
        for value in range(256)
    ]
    messages = [str(o) for o in map(outcome, bodies) if isinstance(o, ConfigError)]
    assert len(messages) > len(_LEAKY)  # the invalid UTF-8 value alone fails every intact body
    assert not [message for message in messages if "hunter2" in message or "SECRET" in message]


# -- fuzzing ------------------------------------------------------------------------------

_ALL_VECTORS = [param.values[0] for param in VECTORS]


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_config_error(tail: bytes) -> None:
    result = outcome(MAGIC + tail)
    if isinstance(result, ConfigError):
        assert result.field == "body"
    else:
        assert result["apiVersion"] == "v1"
        assert result["kind"] in ("Secret", "ConfigMap", "ServiceAccount")


@given(st.sampled_from(_ALL_VECTORS), st.integers(min_value=0), st.integers(0, 255))
def test_a_corrupted_capture_decodes_or_raises_config_error(
    body: bytes, index: int, value: int
) -> None:
    index %= len(body)
    corrupted = body[:index] + bytes([value]) + body[index + 1 :]
    result = outcome(corrupted)
    if isinstance(result, ConfigError):
        assert result.field == "body"
    else:
        assert isinstance(result["metadata"], dict)
