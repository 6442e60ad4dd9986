"""Definitions that differ only because PostgreSQL printed them and parsed the print again.

`pg_get_constraintdef`, `pg_get_expr`, `pg_get_indexdef` and `pg_get_triggerdef` print a stored
expression tree. A faithful copy (pg_dump, then restore) re-parses that text, and parse analysis does not
always give back the tree it printed. The classic case: `account_type IN ('a', 'b')` over a varchar
column is stored, and printed, as `(account_type)::text = ANY ((ARRAY['a'::character varying, ...])::text[])`;
parsing that text coerces each array element instead of the array, so the restored table prints
`(account_type)::text = ANY (ARRAY[('a'::character varying)::text, ...])`. Same meaning, other text.

So a definition that differs is not reported until the source's printed definition has been through the
target server's own parser: in a transaction on the target that is always rolled back, a temporary,
empty copy of the target table's columns (`CREATE TEMP TABLE ... (LIKE target)`) gets the source's
constraint, default, generated column, index or trigger exactly as the source printed it, and the
target prints it back with the same catalog function. When that equals the target's definition, the
target holds what the source's definition means on the target's server: the two are the same. Anything
else (another IN list, another default, another indexed column) stays a difference.

Nothing is written to the source; nothing persists on the target. Only definitions that already differ
cost round trips (one temporary table per table with differences, a few statements per definition).
Statements built from catalog text are parsed with pglast and must be exactly one statement of the
expected kind before they run; index and trigger statements are rebuilt from their parse tree with the
temporary table as their relation, and compared as parse trees with the relation (and the index name)
left out, since the target prints the temporary table's name where it prints the real one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pglast
import psycopg
from pglast import ast
from pglast.parser import ParseError
from pglast.stream import RawStream
from psycopg import sql

from dual_db.verify.schema import TableSchema

_TEMP_TABLE = "dual_db_reparse"
_TEMP = sql.Identifier("pg_temp", _TEMP_TABLE)
_TEMP_REGCLASS = f"pg_temp.{_TEMP_TABLE}"
# Only constraints that carry expressions can drift: check and exclusion (WHERE, expressions).
_EXPRESSION_CONSTRAINTS = frozenset({"c", "x"})

_CONSTRAINT_BACK = (
    "SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k "
    "WHERE k.conrelid = %(rel)s::regclass AND k.conname = %(name)s"
)
_DEFAULT_BACK = """
SELECT pg_get_expr(d.adbin, d.adrelid)
FROM pg_attrdef d
JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
WHERE d.adrelid = %(rel)s::regclass AND a.attname = %(name)s
"""
_INDEX_BACK = (
    "SELECT pg_get_indexdef(c.oid) FROM pg_class c "
    "WHERE c.relnamespace = pg_my_temp_schema() AND c.relname = %(name)s AND c.relkind IN ('i', 'I')"
)
_TRIGGER_BACK = (
    "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t "
    "WHERE t.tgrelid = %(rel)s::regclass AND t.tgname = %(name)s"
)


@dataclass
class _Item:
    """One source definition to put through the target's parser."""

    kind: str  # "column", "constraint", "index" or "trigger"
    label: str  # for the notes: "column tier default", "constraint ck_x", ...
    name: str  # the source's name for it
    statement: str  # runs on the target against the temporary table
    read_back: str  # one row, one column: the target's print of what `statement` created
    read_name: str
    candidates: dict[str, str]  # target name -> target definition it may turn out equal to
    same: Callable[[str, str], bool]  # (target's print of the source's, target's own) -> equal?


def _single(text: str, kind: type[ast.Node]) -> ast.Node | None:
    """The one statement in `text` if it is one statement of `kind`, else None."""
    try:
        statements = pglast.parse_sql(text)
    except ParseError:
        return None
    if len(statements) != 1 or not isinstance(statements[0].stmt, kind):
        return None
    return statements[0].stmt


def _shape(definition: str, kind: type[ast.Node]) -> ast.Node | None:
    """`definition`'s parse tree without the parts naming the table or the index (for comparing)."""
    node = _single(definition, kind)
    if node is None:
        return None
    node.relation = None  # type: ignore[attr-defined]
    if isinstance(node, ast.IndexStmt):
        node.idxname = None
    return node


def _same_tree(kind: type[ast.Node]) -> Callable[[str, str], bool]:
    def same(reparsed: str, target: str) -> bool:
        left, right = _shape(reparsed, kind), _shape(target, kind)
        return left is not None and left == right

    return same


def _same_text(reparsed: str, target: str) -> bool:
    return reparsed == target


def _on_temp_table(definition: str, kind: type[ast.Node], **changes: object) -> str | None:
    """`definition` (an index or trigger as printed) rebuilt with the temporary table as its relation."""
    node = _single(definition, kind)
    if node is None:
        return None
    node.relation = ast.RangeVar(  # type: ignore[attr-defined]
        schemaname="pg_temp", relname=_TEMP_TABLE, inh=True, relpersistence="p"
    )
    for attribute, value in changes.items():
        setattr(node, attribute, value)
    try:
        text = str(RawStream()(node))
    except Exception:  # a node pglast cannot print: leave the difference as it is
        return None
    return text if _single(text, kind) is not None else None


def _composed(conn: psycopg.Connection, statement: sql.Composable, kind: type[ast.Node]) -> str | None:
    """`statement` as text if it is exactly one statement of `kind` (catalog text is spliced into it)."""
    text = statement.as_string(conn)
    return text if _single(text, kind) is not None else None


def _items(conn: psycopg.Connection, source: TableSchema, target: TableSchema) -> list[_Item]:
    items: list[_Item] = []

    # column defaults and generation expressions, where they are a column's only difference
    target_columns = {c.name: c for c in target.columns}
    for number, column in enumerate(source.columns):
        other = target_columns.get(column.name)
        if (
            other is None
            or column == other
            or column.default is None
            or other.default is None
            or column.identity
            or dataclasses.replace(column, default=other.default) != other
        ):
            continue
        if column.generated:
            # a fresh column: the generation expression may only use the table's other columns
            added = f"{_TEMP_TABLE}_generated_{number}"
            statement = (
                sql.SQL("ALTER TABLE {} ADD COLUMN {} ").format(_TEMP, sql.Identifier(added))
                + sql.SQL(other.type_sql)  # type: ignore[arg-type]
                + sql.SQL(" GENERATED ALWAYS AS (")
                + sql.SQL(column.default)  # type: ignore[arg-type]
                + sql.SQL(") VIRTUAL" if column.generated == "v" else ") STORED")
            )
            read_name = added
        else:
            statement = sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT ").format(
                _TEMP, sql.Identifier(column.name)
            ) + sql.SQL(column.default)  # type: ignore[arg-type]
            read_name = column.name
        text = _composed(conn, statement, ast.AlterTableStmt)
        if text is not None:
            what = "generation expression" if column.generated else "default"
            items.append(
                _Item(
                    "column",
                    f"column {column.name} {what}",
                    column.name,
                    text,
                    _DEFAULT_BACK,
                    read_name,
                    {column.name: other.default},
                    _same_text,
                )
            )

    # check and exclusion constraints: same name and other text, or only on the source while the
    # target has constraints of that kind under other names (a rename)
    for number, (name, constraint) in enumerate(sorted(source.constraints.items())):
        if constraint.kind not in _EXPRESSION_CONSTRAINTS:
            continue
        candidates = _candidates(
            name,
            {n: c.definition for n, c in source.constraints.items()},
            {n: c.definition for n, c in target.constraints.items() if c.kind == constraint.kind},
        )
        if not candidates:
            continue
        temp_name = f"{_TEMP_TABLE}_constraint_{number}"
        statement = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
            _TEMP, sql.Identifier(temp_name)
        ) + sql.SQL(constraint.definition)  # type: ignore[arg-type]
        text = _composed(conn, statement, ast.AlterTableStmt)
        if text is not None:
            items.append(
                _Item(
                    "constraint",
                    f"constraint {name}",
                    name,
                    text,
                    _CONSTRAINT_BACK,
                    temp_name,
                    candidates,
                    _same_text,
                )
            )

    for number, (name, definition) in enumerate(sorted(source.indexes.items())):
        candidates = _candidates(name, source.indexes, target.indexes)
        temp_name = f"{_TEMP_TABLE}_index_{number}"
        index = _on_temp_table(definition, ast.IndexStmt, idxname=temp_name) if candidates else None
        if index is not None:
            items.append(
                _Item(
                    "index",
                    f"index {name}",
                    name,
                    index,
                    _INDEX_BACK,
                    temp_name,
                    candidates,
                    _same_tree(ast.IndexStmt),
                )
            )

    # triggers carry their name in the definition: only the same name can be the same trigger
    for name, (definition, _state) in sorted(source.triggers.items()):
        other = target.triggers.get(name)
        if other is None or other[0] == definition:
            continue
        trigger = _on_temp_table(definition, ast.CreateTrigStmt)
        if trigger is not None:
            items.append(
                _Item(
                    "trigger",
                    f"trigger {name}",
                    name,
                    trigger,
                    _TRIGGER_BACK,
                    name,
                    {name: other[0]},
                    _same_tree(ast.CreateTrigStmt),
                )
            )
    return items


def _candidates(name: str, source: dict[str, str], target: dict[str, str]) -> dict[str, str]:
    """The target definitions the source's `name` may turn out equal to once re-parsed."""
    if name in target:
        return {} if target[name] == source[name] else {name: target[name]}
    # only on the source: any target definition that is not already some source definition's twin
    taken = set(source.values())
    return {n: d for n, d in target.items() if n not in source and d not in taken}


def _reparse(conn: psycopg.Connection, target: TableSchema, items: list[_Item]) -> dict[int, str]:
    """Index into `items` -> the target name it equals once re-parsed by the target's server."""
    matched: dict[int, str] = {}
    with conn.transaction() as outer:
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {})").format(
                        sql.Identifier(_TEMP_TABLE), target.table.ident
                    )
                )
        except psycopg.Error:
            # no TEMP privilege, a read-only session, ...: the differences stay as they are
            raise psycopg.Rollback(outer) from None
        for number, item in enumerate(items):
            try:
                with conn.transaction():
                    conn.execute(item.statement)  # type: ignore[arg-type]
                    row = conn.execute(
                        item.read_back,  # type: ignore[arg-type]
                        {"rel": _TEMP_REGCLASS, "name": item.read_name},
                    ).fetchone()
            except psycopg.Error:
                # e.g. a function or column the target does not have: a real difference anyway
                continue
            if row is None or row[0] is None:
                continue
            twin = next((n for n, d in sorted(item.candidates.items()) if item.same(row[0], d)), None)
            if twin is not None:
                matched[number] = twin
        raise psycopg.Rollback(outer)  # nothing of this stays on the target
    return matched


def reconcile_reparse_drift(
    conn: psycopg.Connection, source: TableSchema, target: TableSchema
) -> tuple[TableSchema, list[str]]:
    """`source` with every definition that the target's server parses into the target's own definition
    replaced by the target's text, plus a note per replacement. `conn` is the target's connection (it
    may be autocommit or inside a transaction: everything here is rolled back).

    With no differing expression-bearing definitions this costs no round trip at all."""
    if not (source.exists and target.exists) or target.relkind not in ("r", "p"):
        return source, []
    items = _items(conn, source, target)
    if not items:
        return source, []
    matched = _reparse(conn, target, items)
    if not matched:
        return source, []

    columns = list(source.columns)
    constraints = dict(source.constraints)
    indexes = dict(source.indexes)
    triggers = dict(source.triggers)
    notes: list[str] = []
    claimed: set[tuple[str, str]] = set()  # a target definition is the twin of one source definition
    for number, twin in sorted(matched.items()):
        item = items[number]
        if (item.kind, twin) in claimed:
            continue
        claimed.add((item.kind, twin))
        if item.kind == "column":
            columns = [
                dataclasses.replace(c, default=item.candidates[twin]) if c.name == item.name else c
                for c in columns
            ]
        elif item.kind == "constraint":
            constraints[item.name] = dataclasses.replace(
                constraints[item.name], definition=target.constraints[twin].definition
            )
        elif item.kind == "index":
            indexes[item.name] = target.indexes[twin]
        else:
            triggers[item.name] = (target.triggers[twin][0], triggers[item.name][1])
        notes.append(f"{source.table}: {item.label} equal once re-parsed by the target's server")
    reconciled = dataclasses.replace(
        source, columns=columns, constraints=constraints, indexes=indexes, triggers=triggers
    )
    return reconciled, notes
