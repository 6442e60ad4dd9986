"""Guards that run before anything is written: each fails with one clear error, naming the server by
its masked URL, and leaves every database as it was.

- every server reachable;
- the three URLs are three different databases (a target that is the source would be written to);
- core has no `vector` extension; AI can install it;
- a target holds no tables that dual-db did not create (unless replacing is configured).

dual-db marks a target it prepared with a comment on the database, so a re-run recognises its own
work and replaces it, while a database that belongs to something else is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dual_db.db.catalog import extension_available, installed_extension, list_tables
from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl

MARKER_KEY = "dual_db_target"


class GuardError(RuntimeError):
    """A precondition failed; nothing was written."""


@dataclass(frozen=True)
class TargetState:
    role: str
    url: DatabaseUrl
    tables: list[TableName]
    marker: dict[str, str] | None
    vector_installed: str | None
    vector_available: str | None
    identity: tuple[str, ...]

    @property
    def created_by_dual_db(self) -> bool:
        return bool(self.marker) and self.marker.get(MARKER_KEY) == self.role  # type: ignore[union-attr]


_IDENTITY_SQL = """
SELECT coalesce(host(inet_server_addr()), 'local'), current_setting('port'),
       pg_postmaster_start_time()::text, current_database(),
       (SELECT oid::text FROM pg_database WHERE datname = current_database())
"""


def database_identity(conn: psycopg.Connection) -> tuple[str, ...]:
    """What makes a database this database, as the server sees it (URLs can alias each other)."""
    row = conn.execute(_IDENTITY_SQL).fetchone()
    assert row is not None
    return tuple(str(v) for v in row)


def read_marker(conn: psycopg.Connection) -> dict[str, str] | None:
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    if not row or not row[0]:
        return None
    try:
        value = json.loads(row[0])
    except ValueError:
        return None
    return value if isinstance(value, dict) and MARKER_KEY in value else None


def write_marker(conn: psycopg.Connection, role: str, source_database: str) -> None:
    dbname = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    marker = json.dumps({MARKER_KEY: role, "source_database": source_database})
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(dbname), sql.Literal(marker)))


def inspect_target(url: DatabaseUrl, role: str) -> TargetState:
    with connection(url, autocommit=True, application_name=f"dual-db preflight {role}") as conn:
        return TargetState(
            role=role,
            url=url,
            tables=[info.table for info in list_tables(conn)],
            marker=read_marker(conn),
            vector_installed=(installed_extension(conn, "vector") or (None,))[0],
            vector_available=extension_available(conn, "vector"),
            identity=database_identity(conn),
        )


def check_target(state: TargetState, *, replace_existing: bool) -> None:
    """Raise GuardError if `state` must not be written to."""
    if state.role == "core" and state.vector_installed:
        raise GuardError(
            f"the core database {state.url.masked()} already has the vector extension "
            f"(version {state.vector_installed}); core must never have pgvector. Use a fresh database, or "
            "remove it with DROP EXTENSION vector if nothing there uses it."
        )
    if state.role == "ai" and not (state.vector_installed or state.vector_available):
        raise GuardError(
            f"pgvector is not available on the AI server {state.url.masked()}: install the pgvector "
            "package on that server (or enable it on the managed service), then re-run."
        )
    if state.tables and not state.created_by_dual_db and not replace_existing:
        sample = ", ".join(str(t) for t in state.tables[:5])
        more = f" and {len(state.tables) - 5} more" if len(state.tables) > 5 else ""
        other = ""
        if state.marker:
            other = f" (it is marked as dual-db's {state.marker.get(MARKER_KEY)} target, not {state.role})"
        raise GuardError(
            f"the {state.role} database {state.url.masked()} already holds {len(state.tables)} table(s) "
            f"that dual-db did not create{other}: {sample}{more}. Point it at an empty database, or set "
            "replace_existing: true in the settings resource to replace them."
        )


def check_distinct(source_identity: tuple[str, ...], targets: list[TargetState]) -> None:
    seen = {source_identity: "source"}
    for state in targets:
        other = seen.get(state.identity)
        if other is not None:
            raise GuardError(
                f"the {state.role} URL {state.url.masked()} points at the same database as the {other} URL: "
                "source, core and AI must be three different databases."
            )
        seen[state.identity] = state.role


def preflight(
    source_url: DatabaseUrl,
    targets: dict[str, DatabaseUrl],
    *,
    replace_existing: bool = False,
) -> dict[str, TargetState]:
    """Check the source and the given targets ('core', 'ai'). Reads only; raises GuardError."""
    with connection(source_url, read_only=True, application_name="dual-db preflight source") as conn:
        source_identity = database_identity(conn)
    states = {role: inspect_target(url, role) for role, url in targets.items()}
    check_distinct(source_identity, list(states.values()))
    for state in states.values():
        check_target(state, replace_existing=replace_existing)
    return states


def reset_target(url: DatabaseUrl, schemas: list[str]) -> None:
    """Drop what a previous run created in `schemas`, so the schema can be applied afresh.

    Only called after `check_target` passed: the target is dual-db's own, or replacing was asked for.
    """
    with connection(url, autocommit=True, application_name="dual-db reset") as conn, conn.transaction():
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            if schema == "public":
                # As initdb creates it (PostgreSQL 15+): owned by the database owner, usable by all.
                conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
                conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
