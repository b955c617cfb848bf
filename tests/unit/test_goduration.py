"""Go duration parsing and formatting, checked against Go's own test tables (src/time/time_test.go)."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubelet_sim.core.durations import (
    HOUR,
    MAX_DURATION_NS,
    MICROSECOND,
    MILLISECOND,
    MIN_DURATION_NS,
    MINUTE,
    NANOSECOND,
    SECOND,
    format_go_duration,
    format_go_duration_ns,
    parse_go_duration,
    parse_go_duration_ns,
    seconds_to_ns,
)

UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "µs": MICROSECOND,
    "μs": MICROSECOND,
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}


@pytest.mark.parametrize(
    ("text", "expected_ns"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("5s", 5 * SECOND, id="seconds"),
        pytest.param("30s", 30 * SECOND, id="thirty-seconds"),
        pytest.param("1478s", 1478 * SECOND, id="many-seconds"),
        pytest.param("-5s", -5 * SECOND, id="negative"),
        pytest.param("+5s", 5 * SECOND, id="plus-sign"),
        pytest.param("-0", 0, id="minus-zero"),
        pytest.param("+0", 0, id="plus-zero"),
        pytest.param("5.0s", 5 * SECOND, id="decimal-zero"),
        pytest.param("5.6s", 5 * SECOND + 600 * MILLISECOND, id="decimal"),
        pytest.param("5.s", 5 * SECOND, id="trailing-dot"),
        pytest.param(".5s", 500 * MILLISECOND, id="leading-dot"),
        pytest.param("1.004s", 1004 * MILLISECOND, id="fraction-ms"),
        pytest.param("1.0040s", 1004 * MILLISECOND, id="fraction-trailing-zero"),
        pytest.param("100.00100s", 100 * SECOND + MILLISECOND, id="fraction-inner-zeros"),
        pytest.param("10ns", 10, id="ns"),
        pytest.param("11us", 11 * MICROSECOND, id="us"),
        pytest.param("12µs", 12 * MICROSECOND, id="micro-sign"),
        pytest.param("12μs", 12 * MICROSECOND, id="greek-mu"),
        pytest.param("13ms", 13 * MILLISECOND, id="ms"),
        pytest.param("15m", 15 * MINUTE, id="minutes"),
        pytest.param("16h", 16 * HOUR, id="hours"),
        pytest.param("2m0s", 2 * MINUTE, id="kubelet-style"),
        pytest.param("1h30m", 90 * MINUTE, id="hours-minutes"),
        pytest.param("1.5h", 90 * MINUTE, id="fractional-hours"),
        pytest.param("300ms", 300 * MILLISECOND, id="300ms"),
        pytest.param("-1s", -SECOND, id="minus-one-second"),
        pytest.param("10.5s4m", 4 * MINUTE + 10 * SECOND + 500 * MILLISECOND, id="any-order"),
        pytest.param("-2m3.4s", -(2 * MINUTE + 3 * SECOND + 400 * MILLISECOND), id="neg-mixed"),
        pytest.param(
            "1h2m3s4ms5us6ns",
            HOUR + 2 * MINUTE + 3 * SECOND + 4 * MILLISECOND + 5 * MICROSECOND + 6,
            id="all-units",
        ),
        pytest.param(
            "39h9m14.425s",
            39 * HOUR + 9 * MINUTE + 14 * SECOND + 425 * MILLISECOND,
            id="large-mixed",
        ),
        pytest.param("52763797000ns", 52763797000, id="big-ns"),
        pytest.param("0.3333333333333333333h", 20 * MINUTE, id="float64-fraction"),
        pytest.param("9007199254740993ns", (1 << 53) + 1, id="beyond-float53"),
        pytest.param("9223372036854775807ns", MAX_DURATION_NS, id="max"),
        pytest.param("9223372036854775.807us", MAX_DURATION_NS, id="max-us"),
        pytest.param("9223372036s854ms775us807ns", MAX_DURATION_NS, id="max-parts"),
        pytest.param("-9223372036854775808ns", MIN_DURATION_NS, id="min"),
        pytest.param("-9223372036854775.808us", MIN_DURATION_NS, id="min-us"),
        pytest.param("-2562047h47m16.854775808s", MIN_DURATION_NS, id="min-hms"),
        pytest.param("0.100000000000000000000h", 6 * MINUTE, id="many-zeros"),
        pytest.param(
            "0.830103483285477580700h",
            49 * MINUTE + 48 * SECOND + 372539827,
            id="go-float-truncation",
        ),
    ],
)
def test_parse_matches_go(text: str, expected_ns: int) -> None:
    assert parse_go_duration_ns(text) == expected_ns
    assert parse_go_duration(text) == expected_ns / SECOND


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", 'time: invalid duration ""', id="empty"),
        pytest.param("3", 'time: missing unit in duration "3"', id="no-unit"),
        pytest.param("-", 'time: invalid duration "-"', id="sign-only"),
        pytest.param("s", 'time: invalid duration "s"', id="unit-only"),
        pytest.param(".", 'time: invalid duration "."', id="dot"),
        pytest.param("-.", 'time: invalid duration "-."', id="minus-dot"),
        pytest.param(".s", 'time: invalid duration ".s"', id="dot-unit"),
        pytest.param("+.s", 'time: invalid duration "+.s"', id="plus-dot-unit"),
        pytest.param("1d", 'time: unknown unit "d" in duration "1d"', id="days"),
        pytest.param("1 s", 'time: unknown unit " s" in duration "1 s"', id="space"),
        pytest.param(
            "1µ",
            'time: unknown unit "\\xc2\\xb5" in duration "1\\xc2\\xb5"',
            id="non-ascii-quoted-as-bytes",
        ),
        pytest.param('2m"', 'time: unknown unit "m\\"" in duration "2m\\""', id="quote-escaped"),
        pytest.param("1s-1s", 'time: unknown unit "s-" in duration "1s-1s"', id="inner-sign"),
        pytest.param(
            "9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"', id="overflow"
        ),
        pytest.param(
            "9223372036854775.808us",
            'time: invalid duration "9223372036854775.808us"',
            id="overflow-fraction",
        ),
        pytest.param(
            "9223372036854ms775us808ns",
            'time: invalid duration "9223372036854ms775us808ns"',
            id="overflow-sum",
        ),
        pytest.param(
            "-9223372036854775809ns",
            'time: invalid duration "-9223372036854775809ns"',
            id="underflow",
        ),
        pytest.param(
            "99999999999999999999s",
            'time: invalid duration "99999999999999999999s"',
            id="leading-int-overflow",
        ),
    ],
)
def test_parse_errors_match_go(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^time: ") as info:
        parse_go_duration_ns(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(1, "1ns", id="ns"),
        pytest.param(1100, "1.1µs", id="us"),
        pytest.param(2200 * MICROSECOND, "2.2ms", id="ms"),
        pytest.param(3300 * MILLISECOND, "3.3s", id="s"),
        pytest.param(4 * MINUTE + 5 * SECOND, "4m5s", id="m-s"),
        pytest.param(4 * MINUTE + 5001 * MILLISECOND, "4m5.001s", id="m-fraction"),
        pytest.param(5 * HOUR + 6 * MINUTE + 7001 * MILLISECOND, "5h6m7.001s", id="h-m-s"),
        pytest.param(8 * MINUTE + 1, "8m0.000000001s", id="m-ns"),
        pytest.param(2 * MINUTE, "2m0s", id="kubelet-default"),
        pytest.param(90 * MINUTE, "1h30m0s", id="hour-and-half"),
        pytest.param(-SECOND, "-1s", id="negative"),
        pytest.param(-1, "-1ns", id="negative-ns"),
        pytest.param(MAX_DURATION_NS, "2562047h47m16.854775807s", id="max"),
        pytest.param(MIN_DURATION_NS, "-2562047h47m16.854775808s", id="min"),
    ],
)
def test_format_matches_go(ns: int, text: str) -> None:
    assert format_go_duration_ns(ns) == text
    if abs(ns) < 2**53:  # exactly representable as float seconds
        assert format_go_duration(ns / SECOND) == text


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(math.inf, id="inf"),
        pytest.param(-math.inf, id="minus-inf"),
        pytest.param(math.nan, id="nan"),
        pytest.param(1e10, id="beyond-int64-ns"),
    ],
)
def test_unrepresentable_seconds_are_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        format_go_duration(seconds)


@pytest.mark.parametrize("ns", [MAX_DURATION_NS + 1, MIN_DURATION_NS - 1], ids=["above", "below"])
def test_format_refuses_out_of_range_ns(ns: int) -> None:
    with pytest.raises(ValueError, match="outside the range"):
        format_go_duration_ns(ns)


@given(st.integers(min_value=MIN_DURATION_NS, max_value=MAX_DURATION_NS))
def test_format_then_parse_is_identity(ns: int) -> None:
    assert parse_go_duration_ns(format_go_duration_ns(ns)) == ns


@given(st.floats(min_value=-9e9, max_value=9e9, allow_nan=False))
def test_seconds_round_trip_to_the_nanosecond(seconds: float) -> None:
    parsed = parse_go_duration(format_go_duration(seconds))
    assert parsed == seconds_to_ns(seconds) / SECOND
    assert abs(parsed - seconds) <= 1e-9 + abs(seconds) * 1e-15


@given(
    st.sampled_from(["", "+", "-"]),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from(sorted(UNITS))),
        min_size=1,
        max_size=6,
    ),
)
def test_integer_components_sum_exactly(sign: str, parts: list[tuple[int, str]]) -> None:
    text = sign + "".join(f"{value}{unit}" for value, unit in parts)
    total = sum(value * UNITS[unit] for value, unit in parts)
    assert parse_go_duration_ns(text) == (-total if sign == "-" else total)


@given(
    st.integers(min_value=0, max_value=10**6),
    st.text(alphabet="0123456789", min_size=1, max_size=12),
    st.sampled_from(sorted(UNITS)),
)
def test_fractions_truncate_to_within_a_nanosecond(whole: int, frac: str, unit: str) -> None:
    exact = (Decimal(f"{whole}.{frac}") * UNITS[unit]).to_integral_value(rounding="ROUND_FLOOR")
    assert abs(parse_go_duration_ns(f"{whole}.{frac}{unit}") - int(exact)) <= 1
