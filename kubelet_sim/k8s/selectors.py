"""Label and field selectors: the ``labelSelector`` and ``fieldSelector`` list parameters.

:class:`LabelSelector` models apimachinery's ``pkg/labels/selector.go`` (its lexer, its
recursive-descent parser and ``Requirement.Matches``): equality (``a=b``, ``a==b``, ``a!=b``),
sets (``a in (x,y)``, ``a notin (x)``), existence (``a``, ``!a``) and the integer comparisons
(``a>1``, ``a<1``), joined by commas and all of them required. :class:`FieldSelector` models
``pkg/fields/selector.go``: ``field=value``, ``field==value`` and ``field!=value`` terms, where a
value escapes ``\\``, ``,`` and ``=`` with a backslash. Both sort their requirements as upstream
does, so equal selectors print alike; the empty string selects everything.

A selector that does not parse is a :class:`~kubelet_sim.errors.ConfigError` for the field
``labelSelector`` or ``fieldSelector`` whose message names the offending term (a quoted value is
cut at :data:`MAX_QUOTED` characters, so a hostile query stays one short answer).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from kubelet_sim.core.reference import go_quote
from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.hostname import is_qualified_name

__all__ = [
    "MAX_QUOTED",
    "FieldOperator",
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Operator",
    "Requirement",
]

MAX_QUOTED = 100
"""Most characters of a selector, term or value an error message quotes."""

_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)
_INT64 = re.compile(r"[+-]?[0-9]{1,19}")  # strconv.ParseInt(s, 10, 64), before the range check
_WHITESPACE = " \t\r\n"
_SPECIAL = "=!(),><"


def _shown(text: str) -> str:
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "..."


def _parse_int64(text: str) -> int | None:
    """``strconv.ParseInt(text, 10, 64)``; None where Go reports an error."""
    if not _INT64.fullmatch(text):
        return None
    number = int(text)
    return number if -(1 << 63) <= number < (1 << 63) else None


class Operator(StrEnum):
    """A label requirement's operator, spelt as ``selection.Operator`` spells it."""

    IN = "in"
    NOT_IN = "notin"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_UNARY = (Operator.EXISTS, Operator.DOES_NOT_EXIST)
_SPELLING = {
    Operator.IN: " in ",
    Operator.NOT_IN: " notin ",
    Operator.GREATER_THAN: ">",
    Operator.LESS_THAN: "<",
}


@dataclass(frozen=True, slots=True)
class Requirement:
    """One label requirement; ``values`` sorted and without repeats (upstream keeps a set)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """``Requirement.Matches``: ``!=`` and ``notin`` also match objects without the label."""
        value = labels.get(self.key)
        match self.operator:
            case Operator.IN | Operator.EQUALS | Operator.DOUBLE_EQUALS:
                return value is not None and value in self.values
            case Operator.NOT_IN | Operator.NOT_EQUALS:
                return value is None or value not in self.values
            case Operator.EXISTS:
                return value is not None
            case Operator.DOES_NOT_EXIST:
                return value is None
        have = _parse_int64(value) if value is not None else None
        want = _parse_int64(self.values[0]) if len(self.values) == 1 else None
        if have is None or want is None:
            return False  # a label that is not an integer never compares
        return have > want if self.operator is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        shown = ",".join(self.values)
        if self.operator in (Operator.IN, Operator.NOT_IN):
            shown = f"({shown})"
        return self.key + _SPELLING.get(self.operator, self.operator) + shown


class _Token(Enum):
    END = "end of string"
    IDENTIFIER = "identifier"
    IN = "in"
    NOT_IN = "notin"
    OPEN = "("
    CLOSE = ")"
    COMMA = ","
    BANG = "!"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    GREATER = ">"
    LESS = "<"


_SYMBOLS = {token.value: token for token in _Token if token.value[0] in _SPECIAL}
_KEYWORDS = {"in": _Token.IN, "notin": _Token.NOT_IN}
_OPERATORS = {_Token.GREATER: Operator.GREATER_THAN, _Token.LESS: Operator.LESS_THAN} | {
    token: Operator(token.value)
    for token in (_Token.IN, _Token.NOT_IN, _Token.EQUALS, _Token.DOUBLE_EQUALS, _Token.NOT_EQUALS)
}


def _lex(text: str) -> Iterator[tuple[_Token, str]]:
    """The selector's tokens, ending with one END; operators take the longest match."""
    pos = 0
    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos == len(text):
            yield _Token.END, ""
            return
        if text[pos] in _SPECIAL:
            symbol = text[pos : pos + 2] if text[pos : pos + 2] in _SYMBOLS else text[pos]
            pos += len(symbol)
            yield _SYMBOLS[symbol], symbol
            continue
        start = pos
        while pos < len(text) and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
            pos += 1
        word = text[start:pos]
        yield _KEYWORDS.get(word, _Token.IDENTIFIER), word


class _LabelParser:
    """``labels.Parser``: ``in`` and ``notin`` are operators after a key and words elsewhere."""

    def __init__(self, text: str) -> None:
        self._tokens = list(_lex(text))
        self._pos = 0

    def _peek(self, *, keywords: bool = False) -> tuple[_Token, str]:
        token, literal = self._tokens[self._pos]
        if not keywords and token in (_Token.IN, _Token.NOT_IN):
            token = _Token.IDENTIFIER
        return token, literal

    def _next(self, *, keywords: bool = False) -> tuple[_Token, str]:
        item = self._peek(keywords=keywords)
        self._pos = min(self._pos + 1, len(self._tokens) - 1)  # END repeats, never overruns
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token, literal = self._peek()
            if token is _Token.END:
                return requirements
            if token not in (_Token.IDENTIFIER, _Token.BANG):
                raise _fail(
                    f"found '{_shown(literal)}', expected: !, identifier, or 'end of string'"
                )
            try:
                requirements.append(self._requirement())
            except _RequirementError as exc:
                raise _fail(f"unable to parse requirement: {exc}") from None
            token, literal = self._next()
            if token is _Token.END:
                return requirements
            if token is not _Token.COMMA:
                raise _fail(f"found '{_shown(literal)}', expected: ',' or 'end of string'")
            token, literal = self._peek()
            if token not in (_Token.IDENTIFIER, _Token.BANG):
                raise _fail(f"found '{_shown(literal)}', expected: identifier after ','")

    def _requirement(self) -> Requirement:
        token, key = self._next()
        negated = token is _Token.BANG
        if negated:
            token, key = self._next()
        if token is not _Token.IDENTIFIER:
            raise _RequirementError(f"found '{_shown(key)}', expected: identifier")
        if problems := is_qualified_name(key):
            shown = go_quote(_shown(key))
            raise _RequirementError(f"invalid label key {shown}: {'; '.join(problems)}")
        if negated:
            return Requirement(key, Operator.DOES_NOT_EXIST)
        if self._peek()[0] in (_Token.END, _Token.COMMA):
            return Requirement(key, Operator.EXISTS)
        token, literal = self._next(keywords=True)
        operator = _OPERATORS.get(token)
        if operator is None:
            wanted = ", ".join(op for op in Operator if op not in _UNARY)
            raise _RequirementError(f"found '{_shown(literal)}', expected: {wanted}")
        set_based = operator in (Operator.IN, Operator.NOT_IN)
        values = self._set_values() if set_based else {self._exact_value()}
        return _requirement(key, operator, tuple(sorted(values)))

    def _set_values(self) -> set[str]:
        """``( a, b )``; an empty place in the list is the empty value (``()`` is ``("")``)."""
        token, literal = self._next()
        if token is not _Token.OPEN:
            raise _RequirementError(f"found '{_shown(literal)}' expected: '('")
        values: set[str] = set()
        token, literal = self._peek()
        if token is _Token.CLOSE:
            self._next()
            return {""}
        if token not in (_Token.IDENTIFIER, _Token.COMMA):
            raise _RequirementError(f"found '{_shown(literal)}', expected: ',', ')' or identifier")
        while True:
            token, literal = self._next()
            if token is _Token.IDENTIFIER:
                values.add(literal)
                following, shown = self._peek()
                if following is _Token.CLOSE:
                    break
                if following is not _Token.COMMA:
                    raise _RequirementError(f"found '{_shown(shown)}', expected: ',' or ')'")
            elif token is _Token.COMMA:
                following = self._peek()[0]
                if not values or following in (_Token.CLOSE, _Token.COMMA):
                    values.add("")
                if following is _Token.CLOSE:
                    break
            else:
                raise _RequirementError(f"found '{_shown(literal)}', expected: ',', or identifier")
        self._next()  # the ')'
        return values

    def _exact_value(self) -> str:
        if self._peek()[0] in (_Token.END, _Token.COMMA):
            return ""  # ``a=`` selects the empty value
        token, literal = self._next()
        if token is not _Token.IDENTIFIER:
            raise _RequirementError(f"found '{_shown(literal)}', expected: identifier")
        return literal


class _RequirementError(Exception):
    """A problem inside one requirement; the parser prefixes it as upstream does."""


def _fail(message: str) -> ConfigError:
    return ConfigError(None, "labelSelector", message)


def _field_fail(message: str) -> ConfigError:
    return ConfigError(None, "fieldSelector", message)


def _requirement(key: str, operator: Operator, values: tuple[str, ...]) -> Requirement:
    """``NewRequirement``'s value checks: integers for ``gt``/``lt``, label values for all."""
    if operator in (Operator.GREATER_THAN, Operator.LESS_THAN):
        for value in values:
            if _parse_int64(value) is None:
                raise _RequirementError(
                    f"invalid value {go_quote(_shown(value))}: for 'Gt', 'Lt' operators, "
                    "the value must be an integer"
                )
    for value in values:
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            problem = "must be no more than 63 characters" if len(value) > 63 else _LABEL_VALUE_MSG
            raise _RequirementError(f"invalid label value {go_quote(_shown(value))}: {problem}")
    return Requirement(key, operator, values)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed label selector: every requirement must match (an empty one matches all)."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """``labels.Parse``: the ``labelSelector`` query parameter.

        Raises:
            ConfigError: for the field ``labelSelector``, naming the term that does not parse.
        """
        requirements = _LabelParser(text).parse()
        return cls(tuple(sorted(requirements, key=lambda requirement: requirement.key)))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)


class FieldOperator(StrEnum):
    """A field requirement's operator; ``==`` is read as ``=``."""

    EQUALS = "="
    NOT_EQUALS = "!="


# ``!=`` and ``==`` are tried before ``=`` at each place, so ``a==b`` leaves no ``=`` on the value.
_FIELD_OPERATORS = (
    ("!=", FieldOperator.NOT_EQUALS),
    ("==", FieldOperator.EQUALS),
    ("=", FieldOperator.EQUALS),
)
_ESCAPED = {"\\": "\\\\", ",": "\\,", "=": "\\="}
_BAD_ESCAPE = "invalid field selector: invalid escape sequence"


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    """One ``field=value`` or ``field!=value`` term, its value unescaped."""

    field: str
    operator: FieldOperator
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        equal = fields.get(self.field, "") == self.value
        return equal if self.operator is FieldOperator.EQUALS else not equal

    def __str__(self) -> str:
        escaped = "".join(_ESCAPED.get(char, char) for char in self.value)
        return f"{self.field}{self.operator}{escaped}"


def _split_terms(text: str) -> list[str]:
    """``splitTerms``: split at commas not escaped by a backslash, keeping the escapes."""
    terms: list[str] = []
    start = 0
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, FieldOperator, str] | None:
    """``splitTerm``: the field ends at the first operator (fields have no escapes)."""
    for index in range(len(term)):
        for spelling, operator in _FIELD_OPERATORS:
            if term.startswith(spelling, index):
                return term[:index], operator, term[index + len(spelling) :]
    return None


def _unescape(value: str, term: str) -> str:
    """``UnescapeValue``: ``\\\\``, ``\\,`` and ``\\=`` stand for themselves; any other escape,
    a trailing backslash, or a bare ``,`` or ``=`` is an error."""
    out: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            if char not in _ESCAPED:
                raise _field_fail(f"{_BAD_ESCAPE} '\\{char}' in '{_shown(term)}'")
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",=":
            raise _field_fail(
                f"invalid field selector: unescaped '{char}' in the value of '{_shown(term)}'"
            )
        else:
            out.append(char)
    if escaped:
        raise _field_fail(f"{_BAD_ESCAPE} '\\' in '{_shown(term)}'")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """A parsed field selector: every term must match (an empty one matches all)."""

    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FieldSelector:
        """``fields.ParseSelector``: the ``fieldSelector`` query parameter.

        Raises:
            ConfigError: for the field ``fieldSelector``, naming the term that does not parse.
        """
        requirements: list[FieldRequirement] = []
        for term in sorted(_split_terms(text)):
            if not term:
                continue  # ``a=b,`` and ``,`` are fine
            split = _split_term(term)
            if split is None:
                raise _field_fail(
                    f"invalid selector: '{_shown(text)}'; can't understand '{_shown(term)}'"
                )
            field, operator, value = split
            requirements.append(FieldRequirement(field, operator, _unescape(value, term)))
        return cls(tuple(requirements))

    def fields(self) -> frozenset[str]:
        """The field names the selector uses (the API answers 400 for unsupported ones)."""
        return frozenset(requirement.field for requirement in self.requirements)

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether every term holds; a field absent from ``fields`` has the empty value."""
        return all(requirement.matches(fields) for requirement in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(requirement) for requirement in self.requirements)
