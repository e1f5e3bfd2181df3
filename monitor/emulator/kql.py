"""The emulator's Kusto (KQL) subset for Azure Resource Graph: parse a query into a `Query`.

Deliberately small: what a poller of Backup vault jobs sends, and nothing else.

    RecoveryServicesResources
    | where type =~ '<literal>'                 (or: type in~ ('<a>', '<b>', ...))
    | where todatetime(properties.startTime) >= datetime(<ISO 8601 UTC>)   (or: >)
    | where properties.status in~ ('<a>', ...)
    | project id, name, type, subscriptionId, resourceGroup, properties   (any subset, in order)
    | order by id asc                           (or: desc; KQL's default direction is desc)

The table name is case-insensitive, keywords and column names are not (as in KQL). Anything else
raises `KqlError` with the line and 0-based position ARG's `ParserFailure` detail reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

TABLE = "recoveryservicesresources"
COLUMNS = ("id", "name", "type", "subscriptionId", "resourceGroup", "properties")

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<datetime>datetime\s*\(\s*(?P<iso>[^)]*?)\s*\))
    | (?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
    | (?P<op>in~|=~|>=|==|!=|<=|[|(),.<>=])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>\d+(?:\.\d+)?)
    """,
    re.VERBOSE,
)
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z")


class KqlError(ValueError):
    """A query outside the emulator's KQL subset; `position` is the character offset in it."""

    def __init__(self, query: str, position: int, message: str, token: str) -> None:
        super().__init__(message)
        self.message, self.token = message, token
        before = query[:position]
        self.line = before.count("\n") + 1
        self.column = position - (before.rfind("\n") + 1)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # datetime, string, op, ident, number, end
    text: str
    position: int
    value: str = ""  # a string's content, a datetime's ISO text


@dataclass(slots=True)
class Query:
    """A parsed query: its filters, projected columns and order."""

    types: list[frozenset[str]] = field(default_factory=list)  # lower-cased; every one must hold
    started_after: list[tuple[datetime, bool]] = field(default_factory=list)  # (at, inclusive)
    statuses: list[frozenset[str]] = field(default_factory=list)  # lower-cased
    columns: tuple[str, ...] = COLUMNS
    descending: bool = False


def _tokens(query: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(query):
        m = _TOKEN.match(query, position)
        if m is None:
            raise KqlError(
                query, position, f"unexpected character {query[position]!r}", query[position]
            )
        kind = m.lastgroup or ""  # the outer group: "datetime", not its "iso"
        if kind != "space":
            text = m.group(0)
            value = ""
            if kind == "string":
                value = re.sub(r"\\(.)", r"\1", text[1:-1])
            elif kind == "datetime":
                value = m.group("iso")
            tokens.append(Token(kind, text, position, value))
        position = m.end()
    tokens.append(Token("end", "", len(query)))
    return tokens


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = _tokens(query)
        self.at = 0
        self.result = Query()
        self.available = set(COLUMNS)

    def peek(self) -> Token:
        return self.tokens[self.at]

    def fail(self, token: Token, message: str) -> KqlError:
        return KqlError(self.query, token.position, message, token.text)

    def take(self, kind: str, text: str | None = None, what: str | None = None) -> Token:
        token = self.peek()
        if token.kind != kind or (text is not None and token.text != text):
            expected = what or (repr(text) if text is not None else kind)
            found = repr(token.text) if token.kind != "end" else "the end of the query"
            raise self.fail(token, f"expected {expected}, found {found}")
        self.at += 1
        return token

    def need(self, column: str, token: Token) -> None:
        if column not in self.available:
            raise self.fail(token, f"'{column}' is not a column here (projected away)")

    def parse(self) -> Query:
        table = self.take("ident", what="a table name")
        if table.text.lower() != TABLE:
            raise self.fail(
                table,
                f"unsupported table '{table.text}' (the emulator has RecoveryServicesResources)",
            )
        while self.peek().kind != "end":
            self.take("op", "|")
            operator = self.take("ident", what="an operator (where, project, order)")
            match operator.text:
                case "where":
                    self.where()
                case "project":
                    self.project()
                case "order" | "sort":
                    self.order()
                case _:
                    raise self.fail(operator, f"unsupported operator '{operator.text}'")
        return self.result

    def strings(self) -> frozenset[str]:
        self.take("op", "(")
        values = [self.take("string", what="a string literal").value.lower()]
        while self.peek().text == ",":
            self.at += 1
            values.append(self.take("string", what="a string literal").value.lower())
        self.take("op", ")")
        return frozenset(values)

    def where(self) -> None:
        first = self.peek()
        if first.kind == "ident" and first.text == "type":
            self.at += 1
            self.need("type", first)
            op = self.take("op", what="=~ or in~")
            if op.text == "=~":
                self.result.types.append(
                    frozenset({self.take("string", what="a string literal").value.lower()})
                )
            elif op.text == "in~":
                self.result.types.append(self.strings())
            else:
                raise self.fail(op, f"unsupported comparison '{op.text}' on type (use =~ or in~)")
        elif first.kind == "ident" and first.text == "todatetime":
            self.at += 1
            self.need("properties", first)
            self.take("op", "(")
            self.property_path("startTime")
            self.take("op", ")")
            op = self.take("op", what=">= or >")
            if op.text not in (">=", ">"):
                raise self.fail(
                    op, f"unsupported comparison '{op.text}' on startTime (use >= or >)"
                )
            literal = self.take("datetime", what="datetime(<ISO 8601 UTC>)")
            if not _ISO.fullmatch(literal.value):
                raise self.fail(literal, f"unsupported datetime literal '{literal.value}'")
            self.result.started_after.append((_parse_iso(literal.value), op.text == ">="))
        elif first.kind == "ident" and first.text == "properties":
            self.need("properties", first)
            self.property_path("status")
            self.take("op", "in~", what="in~")
            self.result.statuses.append(self.strings())
        else:
            raise self.fail(first, f"unsupported condition starting with '{first.text}'")
        if self.peek().kind == "ident" and self.peek().text in ("and", "or"):
            raise self.fail(self.peek(), "'and'/'or' are not supported: use one where per test")

    def property_path(self, name: str) -> None:
        self.take("ident", "properties")
        self.take("op", ".")
        self.take("ident", name, what=f"'{name}'")

    def project(self) -> None:
        columns = [self.column()]
        while self.peek().text == ",":
            self.at += 1
            columns.append(self.column())
        self.result.columns = tuple(columns)
        self.available = set(columns)

    def column(self) -> str:
        token = self.take("ident", what="a column name")
        if token.text not in COLUMNS:
            raise self.fail(
                token, f"unsupported column '{token.text}' (supported: {', '.join(COLUMNS)})"
            )
        self.need(token.text, token)
        return token.text

    def order(self) -> None:
        self.take("ident", "by")
        column = self.take("ident", "id", what="'id' (the only supported sort column)")
        self.need("id", column)
        direction = self.peek()
        if direction.kind == "ident" and direction.text in ("asc", "desc"):
            self.at += 1
            self.result.descending = direction.text == "desc"
        else:
            self.result.descending = True  # KQL's default


def _parse_iso(text: str) -> datetime:
    main, _, frac = text.rstrip("Z").partition(".")
    at = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    if frac:
        at = at.replace(microsecond=int(frac[:6].ljust(6, "0")))
    return at


def parse(query: str) -> Query:
    """Parse one query of the subset.

    Raises:
        KqlError: the query is outside the subset or malformed.
    """
    return _Parser(query).parse()
