"""Apply a (cleaned) schema script to a database through psycopg, in one transaction.

No psql: the system psql may be older than the dump (psql 15 rejects pg_dump 18's `\\restrict`), and a
script run statement by statement inside one transaction either creates everything or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from dual_db.db.connect import connect
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.statements import Statement, statements_of

_HEAD = 200


class SchemaApplyError(RuntimeError):
    """A statement failed; nothing of the script was kept (single transaction)."""

    def __init__(self, url: DatabaseUrl, number: int, total: int, statement: str, error: str) -> None:
        self.number = number
        self.statement = statement
        self.error = error
        head = " ".join(statement.split())[:_HEAD]
        super().__init__(
            f"statement {number} of {total} failed on {url.masked()}: {error}\n  statement: {head}"
        )


def _server_message(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [diag.message_primary or str(exc).strip()]
    if diag.message_detail:
        parts.append(f"DETAIL: {diag.message_detail}")
    if diag.message_hint:
        parts.append(f"HINT: {diag.message_hint}")
    if diag.sqlstate:
        parts.append(f"(SQLSTATE {diag.sqlstate})")
    return " ".join(parts)


def execute_statements(conn: psycopg.Connection, url: DatabaseUrl, statements: Sequence[Statement]) -> int:
    """Execute `statements` on `conn` in order; a failure raises SchemaApplyError naming the statement.

    The caller owns the transaction: inside one, a failure leaves nothing of the script behind.
    """
    with conn.cursor() as cur:
        for number, st in enumerate(statements, start=1):
            try:
                # The statement text is executed as written (no parameters, so psycopg does not
                # interpret `%`); it comes from a parsed script, never from string formatting.
                cur.execute(st.text)  # type: ignore[arg-type]
            except psycopg.Error as exc:
                raise SchemaApplyError(url, number, len(statements), st.text, _server_message(exc)) from exc
    return len(statements)


def apply_sql(url: DatabaseUrl, sql_text: str, *, single_transaction: bool = True) -> int:
    """Execute every statement of `sql_text` on `url`; returns how many ran.

    Statements are split with pglast (pg_dump's `\\restrict` lines are dropped, any other psql
    meta-command is an error before anything runs). With `single_transaction` a failure rolls back
    the whole script; without it, each statement commits on its own (for statements that cannot run
    in a transaction block).
    """
    statements = statements_of(sql_text)
    if not statements:
        return 0
    conn = connect(url, autocommit=not single_transaction, application_name="dual-db schema apply")
    try:
        try:
            execute_statements(conn, url, statements)
        except SchemaApplyError:
            if not conn.autocommit:
                conn.rollback()
            raise
        if not conn.autocommit:
            conn.commit()
    finally:
        conn.close()
    return len(statements)
