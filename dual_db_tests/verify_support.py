"""Helpers for the verification tests: run SQL scripts, and a SELECT-only role for the source.

The "faithful copy" in these tests is built by running the same script on a source and a target
database; the real copy engine is tested on its own.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property

import psycopg
from psycopg import sql

from dual_db.db.connect import connect
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedCluster, EmbeddedServer

VERIFIER = "verifier"
# Generated per test session: the role only exists on the throwaway embedded test servers.
_VERIFIER_PASSWORD = secrets.token_urlsafe(18)


def run(url: DatabaseUrl, script: str) -> None:
    """Execute `script` (several statements) on `url` as the superuser, autocommit."""
    with connect(url, autocommit=True) as conn:
        conn.execute(script)  # type: ignore[arg-type]


def run_all(urls: list[DatabaseUrl], script: str) -> None:
    for url in urls:
        run(url, script)


def readonly_url(url: DatabaseUrl) -> DatabaseUrl:
    """`url` as a role that may only connect, look up schemas and SELECT (tables and sequences).

    Grants cover what exists now: call it after the test data is in place.
    """
    with connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (VERIFIER,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(VERIFIER), sql.Literal(_VERIFIER_PASSWORD)
            )
        )
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(url.dbname or "postgres"), sql.Identifier(VERIFIER)
            )
        )
        schemas = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname <> 'information_schema'"
            ).fetchall()
        ]
        for schema in schemas:
            ident, role = sql.Identifier(schema), sql.Identifier(VERIFIER)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(ident, role))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(ident, role))
            conn.execute(sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(ident, role))
    return replace(url, user=VERIFIER, password=_VERIFIER_PASSWORD)


@contextmanager
def source_session(url: DatabaseUrl) -> Iterator[psycopg.Connection]:
    """A read-only session on the source as the SELECT-only role, as the verification runs it."""
    conn = connect(readonly_url(url), read_only=True)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def session(url: DatabaseUrl, *, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    conn = connect(url, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


class LazyDatabases:
    """Like the `databases` fixture (source/core/ai on their own servers), but each database is only
    created when a test first uses it: most tests need two of the three."""

    def __init__(
        self, servers: EmbeddedCluster, new_database: Callable[[EmbeddedServer], DatabaseUrl]
    ) -> None:
        self._servers = servers
        self._new_database = new_database

    @cached_property
    def source(self) -> DatabaseUrl:
        return self._new_database(self._servers["source"])

    @cached_property
    def core(self) -> DatabaseUrl:
        return self._new_database(self._servers["core"])

    @cached_property
    def ai(self) -> DatabaseUrl:
        return self._new_database(self._servers["ai"])
