"""Go ``time.Duration`` strings: parse and format exactly as Go's ``time`` package does.

Kubernetes config files carry durations as Go duration strings (``metav1.Duration``):
``"2m0s"``, ``"1h30m"``, ``"300ms"``, ``"1.5h"``, ``"-1s"``, ``"0"``. This module models
``time.ParseDuration`` and ``Duration.String`` from Go's ``src/time/format.go`` and
``src/time/time.go``, down to the integer-nanosecond arithmetic, the float64 handling of
fractions, the int64 overflow limits and the error texts.

Durations are integers of nanoseconds in ``[-2**63, 2**63 - 1]``; the ``*_ns`` functions are
exact, the float-seconds wrappers are what the rest of kubelet-sim uses.
"""

from __future__ import annotations

from typing import Final

NANOSECOND: Final = 1
MICROSECOND: Final = 1_000 * NANOSECOND
MILLISECOND: Final = 1_000 * MICROSECOND
SECOND: Final = 1_000 * MILLISECOND
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE

MIN_DURATION_NS: Final = -(1 << 63)
MAX_DURATION_NS: Final = (1 << 63) - 1

# Go's unitMap: both the micro sign U+00B5 and the Greek mu U+03BC spell microseconds.
_UNITS: Final[dict[str, int]] = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,
    "\u03bcs": MICROSECOND,
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_DIGITS: Final = frozenset("0123456789")
_LIMIT: Final = 1 << 63


def _quote(s: str) -> str:
    """Go's ``time.quote``: quotes, backslash escapes, and ``\\xNN`` per non-ASCII byte."""
    out = ['"']
    for ch in s:
        if ord(ch) >= 0x80 or ch < " ":
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            if ch in '"\\':
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def _leading_int(s: str) -> tuple[int, str] | None:
    """Go's ``leadingInt``: consume ``[0-9]*``; ``None`` on uint64 overflow."""
    x = 0
    i = 0
    while i < len(s) and s[i] in _DIGITS:
        if x > _LIMIT // 10:
            return None
        x = x * 10 + int(s[i])
        if x > _LIMIT:
            return None
        i += 1
    return x, s[i:]


def _leading_fraction(s: str) -> tuple[int, float, str]:
    """Go's ``leadingFraction``: consume ``[0-9]*``, silently dropping digits past overflow."""
    x = 0
    scale = 1.0
    overflow = False
    i = 0
    while i < len(s) and s[i] in _DIGITS:
        if not overflow:
            if x > (_LIMIT - 1) // 10:
                overflow = True
            else:
                y = x * 10 + int(s[i])
                if y > _LIMIT:
                    overflow = True
                else:
                    x = y
                    scale *= 10
        i += 1
    return x, scale, s[i:]


def parse_go_duration_ns(s: str) -> int:
    """Parse a Go duration string into integer nanoseconds, like ``time.ParseDuration``.

    Raises:
        ValueError: with Go's message, e.g. ``time: missing unit in duration "3"``.
    """
    orig = s
    invalid = f"time: invalid duration {_quote(orig)}"
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(invalid)
    total = 0
    while s:
        if not (s[0] == "." or s[0] in _DIGITS):
            raise ValueError(invalid)
        before = len(s)
        leading = _leading_int(s)
        if leading is None:
            raise ValueError(invalid)
        value, s = leading
        pre = before != len(s)
        frac, scale, post = 0, 1.0, False
        if s and s[0] == ".":
            s = s[1:]
            before = len(s)
            frac, scale, s = _leading_fraction(s)
            post = before != len(s)
        if not pre and not post:
            raise ValueError(invalid)
        i = 0
        while i < len(s) and not (s[i] == "." or s[i] in _DIGITS):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {_quote(orig)}")
        unit_name, s = s[:i], s[i:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise ValueError(f"time: unknown unit {_quote(unit_name)} in duration {_quote(orig)}")
        if value > _LIMIT // unit:
            raise ValueError(invalid)
        value *= unit
        if frac > 0:
            # Go computes the fraction in float64 and truncates: nanosecond-exact up to hours.
            value += int(float(frac) * (float(unit) / scale))
            if value > _LIMIT:
                raise ValueError(invalid)
        total += value
        if total > _LIMIT:
            raise ValueError(invalid)
    if neg:
        return -total
    if total > MAX_DURATION_NS:
        raise ValueError(invalid)
    return total


def parse_go_duration(s: str) -> float:
    """Parse a Go duration string into seconds (a float).

    Raises:
        ValueError: with Go's message, e.g. ``time: unknown unit "d" in duration "1d"``.
    """
    return parse_go_duration_ns(s) / SECOND


def _frac(v: int, prec: int) -> tuple[str, int]:
    """Go's ``fmtFrac``: the fraction ``v / 10**prec`` without trailing zeros, and the quotient."""
    digits: list[str] = []
    printing = False
    for _ in range(prec):
        v, digit = divmod(v, 10)
        printing = printing or digit != 0
        if printing:
            digits.append(str(digit))
    text = "." + "".join(reversed(digits)) if printing else ""
    return text, v


def format_go_duration_ns(ns: int) -> str:
    """Format integer nanoseconds like Go's ``Duration.String`` (``"1h30m0s"``, ``"1.5µs"``).

    Raises:
        ValueError: ``ns`` is outside the int64 range of a Go duration.
    """
    if not MIN_DURATION_NS <= ns <= MAX_DURATION_NS:
        raise ValueError(f"duration {ns}ns is outside the range of a Go time.Duration")
    u = abs(ns)
    sign = "-" if ns < 0 else ""
    if u < SECOND:
        if u == 0:
            return "0s"
        if u < MICROSECOND:
            prec, unit = 0, "ns"
        elif u < MILLISECOND:
            prec, unit = 3, "\u00b5s"
        else:
            prec, unit = 6, "ms"
        frac, whole = _frac(u, prec)
        return f"{sign}{whole}{frac}{unit}"
    frac, whole_seconds = _frac(u, 9)
    minutes, seconds = divmod(whole_seconds, 60)
    text = f"{seconds}{frac}s"
    if minutes:
        hours, minutes = divmod(minutes, 60)
        text = f"{minutes}m{text}"
        if hours:
            text = f"{hours}h{text}"
    return sign + text


def seconds_to_ns(seconds: float) -> int:
    """Seconds as the nearest whole number of nanoseconds.

    Raises:
        ValueError: not finite, or outside the int64 range of a Go duration.
    """
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"duration {seconds!r} is not a finite number of seconds")
    ns = round(seconds * SECOND)
    if ns == _LIMIT and seconds <= MAX_DURATION_NS / SECOND:
        # The float nearest the longest duration (what parsing "9223372036854775807ns" gives)
        # rounds to 2**63 ns, one past it: it stands for the longest duration.
        ns = MAX_DURATION_NS
    if not MIN_DURATION_NS <= ns <= MAX_DURATION_NS:
        raise ValueError(f"duration {seconds!r}s is outside the range of a Go time.Duration")
    return ns


def format_go_duration(seconds: float) -> str:
    """Format seconds like Go's ``Duration.String`` after rounding to whole nanoseconds.

    Raises:
        ValueError: not finite, or outside the int64 range of a Go duration.
    """
    return format_go_duration_ns(seconds_to_ns(seconds))
