"""Table names: the one type every engine uses to name a table."""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True, order=True)
class TableName:
    """A schema-qualified table name, exactly as in the catalog (case and spaces preserved)."""

    schema: str
    name: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        """`name` (schema public) or `schema.name`; double quotes keep dots and case: `"My.Schema"."T"`."""
        parts = _split_qualified(text.strip())
        if len(parts) == 1:
            return cls("public", parts[0])
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        raise ValueError(f"not a table name: {text!r}")

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def qualified(self) -> str:
        """`schema.name` with identifiers quoted only where PostgreSQL needs it."""
        return f"{_quote_if_needed(self.schema)}.{_quote_if_needed(self.name)}"

    @property
    def display(self) -> str:
        """`name` for public tables, `schema.name` otherwise (the plan file's form)."""
        return _quote_if_needed(self.name) if self.schema == "public" else self.qualified

    def __str__(self) -> str:
        return self.display


def _quote_if_needed(identifier: str) -> str:
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", identifier) and identifier not in _RESERVED:
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


def _split_qualified(text: str) -> list[str]:
    parts: list[str] = []
    current = ""
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"':
                if i + 1 < len(text) and text[i + 1] == '"':
                    current += '"'
                    i += 1
                else:
                    quoted = False
            else:
                current += ch
        elif ch == '"':
            quoted = True
        elif ch == ".":
            parts.append(current)
            current = ""
        else:
            current += ch.lower()
        i += 1
    if quoted:
        raise ValueError(f"unbalanced quotes in table name: {text!r}")
    parts.append(current)
    if any(not part for part in parts):
        raise ValueError(f"not a table name: {text!r}")
    return parts


# Keywords that must be quoted as identifiers (a conservative subset is enough: over-quoting is harmless).
_RESERVED = frozenset(
    """all analyse analyze and any array as asc asymmetric authorization binary both case cast check
    collate collation column concurrently constraint create cross current_catalog current_date
    current_role current_schema current_time current_timestamp current_user default deferrable desc
    distinct do else end except false fetch for foreign freeze from full grant group having ilike in
    initially inner intersect into is isnull join lateral leading left like limit localtime
    localtimestamp natural not notnull null offset on only or order outer overlaps placing primary
    references returning right select session_user similar some symmetric system_user table tablesample
    then to trailing true union unique user using variadic verbose when where window with""".split()
)
