"""WWW-Authenticate challenges and token scopes: the pure parsing half of registry auth.

Models containerd ``core/remotes/docker/auth/parse.go`` (but RFC 7235 ``1#challenge``: several
challenges may share one header value) and distribution ``docs/spec/auth/scope.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Challenge", "parse_challenges", "pick_challenge", "scope_for"]

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_ACTIONS = frozenset({"pull", "push", "delete", "*"})


@dataclass(frozen=True, slots=True)
class Challenge:
    """One auth challenge from a WWW-Authenticate header (scheme lowercased, keys lowercased)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str = ""

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> list[str]:
        """The space-separated ``scope`` parameter as a list (empty when absent)."""
        return self.params.get("scope", "").split()

    @property
    def error(self) -> str:
        return self.params.get("error", "")


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def _token(s: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(s) and s[i] in _TCHAR:
        i += 1
    return s[start:i], i


def _quoted(s: str, i: int) -> tuple[str | None, int]:
    """Parse a quoted-string starting at the opening quote; None when unterminated."""
    out: list[str] = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return None, i


def _param_ahead(s: str, i: int) -> bool:
    """True when ``token BWS "="`` starts at i (an auth-param, not the next challenge's scheme)."""
    name, j = _token(s, i)
    j = _skip_ws(s, j)
    return bool(name) and j < len(s) and s[j] == "="


def _parse_one_value(s: str) -> list[Challenge]:
    """RFC 7235 ``1#challenge``: several comma-separated challenges may share one header value."""
    challenges: list[Challenge] = []
    i = 0
    while True:
        while i < len(s) and s[i] in " \t\r\n,":
            i += 1
        scheme, i = _token(s, i)
        if not scheme:
            return challenges  # end of value, or garbage we cannot resync from
        params: dict[str, str] = {}
        token68 = ""
        i = _skip_ws(s, i)
        t68 = _TOKEN68.match(s, i)
        if t68:  # RFC 7235: token68 only when it is all there is before the next comma
            end = _skip_ws(s, t68.end())
            if end >= len(s) or s[end] == ",":
                token68, i = t68.group(), end
        while not token68 and _param_ahead(s, i):
            name, i = _token(s, i)
            i = _skip_ws(s, _skip_ws(s, i) + 1)
            value: str | None
            if i < len(s) and s[i] == '"':
                value, i = _quoted(s, i)
                if value is None:
                    return challenges  # unterminated quote: drop this challenge and the rest
            else:  # lenient: a bare value runs to the next comma/space (unquoted realm URLs)
                start = i
                while i < len(s) and s[i] not in ' \t\r\n,"':
                    i += 1
                value = s[start:i]
            params.setdefault(name.lower(), value)
            i = _skip_ws(s, i)
            if i < len(s) and s[i] == ",":
                i = _skip_ws(s, i + 1)
                while i < len(s) and s[i] == ",":  # empty list elements are allowed
                    i = _skip_ws(s, i + 1)
            elif i < len(s):
                challenges.append(Challenge(scheme.lower(), params, token68))
                return challenges  # junk after a param: keep what parsed, stop here
        challenges.append(Challenge(scheme.lower(), params, token68))


def parse_challenges(headers: Sequence[str]) -> list[Challenge]:
    """Parse every WWW-Authenticate header value into challenges, in order of appearance.

    Unlike containerd ``auth/parse.go`` (one challenge per header value) this follows RFC 7235 and
    accepts several challenges in one value; schemes and parameter names are case-insensitive
    (lowercased here), values may be tokens or quoted strings with backslash escapes. Malformed
    tails are dropped rather than guessed at.
    """
    out: list[Challenge] = []
    for value in headers:
        out.extend(_parse_one_value(value))
    return out


def pick_challenge(challenges: Sequence[Challenge]) -> Challenge | None:
    """Bearer (with a realm) over Basic, as containerd sorts them; None when neither is usable."""
    for c in challenges:
        if c.scheme == "bearer" and c.realm:
            return c
    for c in challenges:
        if c.scheme == "basic":
            return c
    return None


def scope_for(repository: str, actions: Sequence[str]) -> str:
    """``repository:<name>:<actions>`` (distribution ``scope.md``), actions deduplicated, sorted.

    Raises:
        ValueError: for an empty/ill-formed name or an unknown action (a programming error).
    """
    if not repository or any(c in repository for c in ' ,\t\r\n"'):
        raise ValueError(f"repository name not usable in a token scope: {repository!r}")
    wanted = sorted(set(actions))
    if not wanted or not set(wanted) <= _ACTIONS:
        raise ValueError(f"token scope actions must be among {sorted(_ACTIONS)}: {list(actions)!r}")
    return f"repository:{repository}:{','.join(wanted)}"
