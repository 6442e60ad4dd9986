"""Helpers the checks share: relation kind, savepoints, identifiers and errors for messages.

Rules that hold for every function here:
- The source is only read (plain SELECTs: it runs as a role with SELECT privileges only, on a
  read-only session). Temporary tables are created on targets only (`soft_references`, and
  `schema_parity` to re-parse a differing source definition, in a transaction it rolls back).
- Every identifier is composed with `psycopg.sql`; catalog SQL is module-level constants.
- A check never raises for a finding: a missing table, column or sequence is a failure in the outcome.
  Queries that may fail on a target run inside a savepoint, so the caller's transaction survives.
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
