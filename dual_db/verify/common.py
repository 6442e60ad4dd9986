"""Helpers the checks share: relation kind, savepoints, identifiers and errors for messages.

The rules of `dual_db.verify` (its package docstring) hold here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from dual_db.db.catalog import (
    regclass_literal,
)
from dual_db.db.names import TableName


def relkind(conn: psycopg.Connection, table: TableName) -> str | None:
    row = conn.execute(
        "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(%s)", (regclass_literal(table),)
    ).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def savepoint(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction (or a savepoint inside the caller's): an error rolls back only what ran here."""
    with conn.transaction():
        yield


def message_ident(name: str) -> str:
    """An identifier for messages, double-quoted only where PostgreSQL would need it."""
    return TableName("public", name).display


def error_text(exc: psycopg.Error) -> str:
    # The server's primary message: names objects, never connection details.
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return str(primary or exc).strip().splitlines()[0]
