"""SQL scripts as lists of parsed statements, each keeping its original text.

Everything that reads SQL in dual-db goes through `statements_of`: the text is parsed by pglast (the
PostgreSQL 18 parser itself), never matched with regular expressions, so multi-line statements,
quoted identifiers, dollar-quoted bodies and string literals that happen to contain SQL-looking text
are all handled the way the server would handle them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pglast
from pglast import ast
from pglast.parser import ParseError

# psql meta-commands that pg_dump writes around a plain dump since the August 2025 minor releases
# (CVE-2025-8714: 13.22, 14.19, 15.14, 16.10, 17.6, and every 18):
# `\restrict <key>` as the first command and `\unrestrict <key>` as the last. They are not SQL, the
# parser rejects them, and an older psql or a driver would too.
_RESTRICT_FIRST = "\\restrict"
_RESTRICT_LAST = "\\unrestrict"


class SchemaParseError(ValueError):
    """A script that pglast cannot parse; the message names the line."""


@dataclass(frozen=True)
class Statement:
    """One statement of a script.

    `text` is the statement exactly as written (from its first token to just before its terminating
    semicolon), so types, defaults, literals and dollar-quoted bodies survive byte for byte; `leading`
    is the comment block written directly before it (pg_dump's `-- Name: ...; Type: ...` header).
    """

    text: str
    node: ast.Node
    leading: str = ""
    location: int = 0

    @property
    def sql(self) -> str:
        """The statement with its terminating semicolon, ready to be written to a script."""
        return self.text + ";"

    def render(self, *, with_leading: bool = True) -> str:
        if with_leading and self.leading:
            return f"{self.leading}\n\n{self.sql}"
        return self.sql

    @property
    def node_type(self) -> str:
        return type(self.node).__name__


def _is_restrict_line(line: str, command: str) -> bool:
    # `\restrict KEY`: exactly the meta-command and one alphanumeric key (pg_dump's format), so a line
    # inside a multi-line string literal that merely starts with the same characters is never taken.
    parts = line.strip().split()
    return len(parts) == 2 and parts[0] == command and parts[1].isalnum()


def _significant(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("--")


def strip_restrict_commands(text: str) -> str:
    """Blank out pg_dump's `\\restrict`/`\\unrestrict` lines.

    Only the first and last significant lines (not blank, not a `--` comment) are considered, and
    only when they are exactly that psql meta-command: anywhere else such a line is part of a
    statement (a string literal, a function body) and must stay. Lines are blanked rather than
    deleted so that line numbers in later error messages still match the input.
    """
    lines = text.split("\n")
    significant = [i for i, line in enumerate(lines) if _significant(line)]
    if not significant:
        return text
    first, last = significant[0], significant[-1]
    if _is_restrict_line(lines[first], _RESTRICT_FIRST):
        lines[first] = ""
    if last != first and _is_restrict_line(lines[last], _RESTRICT_LAST):
        lines[last] = ""
    return "\n".join(lines)


def _line_of(text: str, offset: int) -> tuple[int, str]:
    line_no = text.count("\n", 0, offset) + 1
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return line_no, text[start : end if end >= 0 else len(text)]


def statements_of(sql_text: str) -> list[Statement]:
    """Parse a script (pg_dump output or hand-written SQL) into statements with their original text.

    pg_dump's `\\restrict`/`\\unrestrict` lines are dropped first; any other psql meta-command is a
    parse error, as it would be for the server.
    """
    text = strip_restrict_commands(sql_text)
    try:
        raw_statements = pglast.parse_sql(text)
    except ParseError as exc:
        offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line_no, line = _line_of(text, offset)
        raise SchemaParseError(
            f"cannot parse SQL at line {line_no}: {exc.args[0]}: {line.strip()[:200]!r}"
        ) from exc
    if not raw_statements:
        return []
    # pglast reports statement locations in characters, without the terminating semicolon and
    # without the comments before the statement. The scanner finds the real semicolon tokens (a `;`
    # inside a comment or literal is not one), which separate each statement from the comment block
    # that precedes the next.
    semicolons = [tok.start for tok in pglast.scan(text) if tok.name == "ASCII_59"]
    statements: list[Statement] = []
    previous_end = 0
    sc = 0
    for raw in raw_statements:
        start = raw.stmt_location
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        body = text[start:end].rstrip()
        gap = text[previous_end:start]
        leading = "\n".join(line.rstrip() for line in gap.strip("\n").split("\n") if line.strip()).strip()
        while sc < len(semicolons) and semicolons[sc] < end:
            sc += 1
        if sc < len(semicolons):
            previous_end = semicolons[sc] + 1
            sc += 1
        else:
            previous_end = len(text)
        statements.append(Statement(text=body, node=raw.stmt, leading=leading, location=start))
    return statements


def render_script(statements: list[Statement], *, header: str = "", with_leading: bool = True) -> str:
    """Statements back into a script; empty when there are none (so an empty part is falsy)."""
    if not statements:
        return ""
    parts = [header.rstrip()] if header else []
    parts.extend(st.render(with_leading=with_leading) for st in statements)
    return "\n\n".join(parts) + "\n"


def is_set_config(node: ast.Node) -> bool:
    """`SELECT pg_catalog.set_config(...)`: how pg_dump sets search_path for the session."""
    if not isinstance(node, ast.SelectStmt):
        return False
    targets = node.targetList or ()
    if len(targets) != 1 or node.fromClause:
        return False
    val = getattr(targets[0], "val", None)
    names = (
        [n.sval for n in (val.funcname or ()) if isinstance(n, ast.String)]
        if isinstance(val, ast.FuncCall)
        else []
    )
    return names[-1:] == ["set_config"]


def is_session_setting(statement: Statement) -> bool:
    """pg_dump's session settings (SET ..., SELECT set_config(...)): every session of a script needs them."""
    return isinstance(statement.node, ast.VariableSetStmt) or is_set_config(statement.node)
