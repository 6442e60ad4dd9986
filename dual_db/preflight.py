"""Guards that run before anything is written: each fails with one clear error, naming the server by
its masked URL, and leaves every database as it was.

- every server reachable;
- the three URLs are three different databases (a target that is the source would be written to);
- each target has the source's encoding;
- core has no `vector` extension; AI can install it;
- a fresh target holds no tables (unless replacing is configured): tables there suggest a wrong URL;
- a target that was cut over is never written to again.

dual-db marks a target it prepared with a comment on the database listing what it created
(`dual_db.schema.ownership`), so a re-run recognises its own work and replaces only that, leaving
whatever else is there alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from dual_db.db.catalog import (
    extension_available,
    installed_extension,
    list_tables,
    tables_with_triggers_or_foreign_keys,
)
from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.ownership import TargetMarker, read_marker


class GuardError(RuntimeError):
    """A precondition failed; nothing was written."""


@dataclass(frozen=True)
class TargetState:
    role: str
    url: DatabaseUrl
    tables: list[TableName]
    marker: TargetMarker | None
    vector_installed: str | None
    vector_available: str | None
    identity: tuple[str, ...]
    encoding: str

    @property
    def created_by_dual_db(self) -> bool:
        return self.marker is not None and self.marker.role == self.role

    @property
    def foreign_tables(self) -> list[TableName]:
        """Tables here that dual-db did not create."""
        owned = self.marker.tables if self.created_by_dual_db and self.marker else set()
        return [t for t in self.tables if t not in owned]


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


def database_encoding(conn: psycopg.Connection) -> str:
    """The database's own encoding (what `server_encoding` shows), e.g. UTF8, LATIN1, SQL_ASCII."""
    row = conn.execute(
        "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return str(row[0])


def check_encoding(source_encoding: str, state: TargetState) -> None:
    """A target must have the source's encoding exactly.

    A narrower one (LATIN1, SQL_ASCII, ... for a UTF8 source) cannot hold every character the source
    can, and the copy would fail at the first such row, after the schema and other tables were written.
    A wider one (UTF8 for a LATIN1 source) would hold them, but the checksums hash text as each server
    stores its bytes, so the copy could not be proven identical; and a SQL_ASCII source holds bytes no
    encoding is promised to accept.
    """
    if state.encoding == source_encoding:
        return
    narrower = state.encoding != "UTF8" or source_encoding == "SQL_ASCII"
    why = (
        f"it cannot hold every character a {source_encoding} database can"
        if narrower
        else "the checksums compare text as each server stores it, so only the source's encoding "
        "can be proven identical"
    )
    raise GuardError(
        f"the {state.role} database {state.url.masked()} has encoding {state.encoding}; the source's is "
        f"{source_encoding}, and {why}. Create it anew with CREATE DATABASE <name> ENCODING "
        f"'{source_encoding}' TEMPLATE template0 (and a locale for {source_encoding}), then re-run."
    )


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
            encoding=database_encoding(conn),
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
    if state.marker is not None and state.marker.cutover_at:
        raise GuardError(
            f"the {state.role} database {state.url.masked()} was cut over at {state.marker.cutover_at}: "
            "the application writes there now, and dual-db never writes to it again. Migrate into fresh "
            "databases, or roll back first."
        )
    if state.marker is not None and not state.created_by_dual_db:
        raise GuardError(
            f"the {state.role} database {state.url.masked()} is marked as dual-db's {state.marker.role} "
            f"target, not {state.role}: check the {state.role.upper()}_DATABASE_URL."
        )
    # A re-run leaves tables it did not create alone (the schema step names them); a fresh target with
    # tables in it is more likely a wrong URL than a wish to share the database.
    if state.tables and state.marker is None and not replace_existing:
        sample = ", ".join(str(t) for t in state.tables[:5])
        more = f" and {len(state.tables) - 5} more" if len(state.tables) > 5 else ""
        raise GuardError(
            f"the {state.role} database {state.url.masked()} already holds {len(state.tables)} table(s) "
            f"that dual-db did not create: {sample}{more}. Point it at an empty database, or set "
            "replace_existing: true in the settings resource to use it anyway (tables the plan routes "
            "there are replaced; any other table is left alone)."
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
        source_encoding = database_encoding(conn)
        # The backup reads every table and sequence; the copy reads the planned ones.
        check_source_privileges(conn, source_url)
    states = {role: inspect_target(url, role) for role, url in targets.items()}
    check_distinct(source_identity, list(states.values()))
    for state in states.values():
        check_encoding(source_encoding, state)
    for state in states.values():
        check_target(state, replace_existing=replace_existing)
        with connection(
            state.url, autocommit=True, application_name=f"dual-db preflight {state.role}"
        ) as conn:
            check_target_ownership(conn, state.role, state.url)
            if state.role == "ai":
                check_vector_installable(conn, state.url)
            if state.created_by_dual_db and state.marker is not None:
                # A re-run copies into the tables it keeps, which carry their triggers and keys.
                check_replica_role_privilege(conn, state.role, state.url, sorted(state.marker.tables))
    return states


def _current_role(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"


# What the source role cannot read among what dual-db reads (every user schema with tables or
# sequences, every table, every sequence), by oid so that a schema without USAGE does not stop the
# query itself.
_UNREADABLE_SQL = """
SELECT 'schema' AS kind, format('%%I', n.nspname) AS name
FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
  AND EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'S'))
  AND NOT has_schema_privilege(n.oid, 'USAGE')
UNION ALL
SELECT CASE c.relkind WHEN 'S' THEN 'sequence' ELSE 'table' END, format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
  AND NOT CASE c.relkind WHEN 'S' THEN has_sequence_privilege(c.oid, 'SELECT')
                         ELSE has_table_privilege(c.oid, 'SELECT') END
ORDER BY 1, 2
"""

_GRANT = {
    "schema": "GRANT USAGE ON SCHEMA {name} TO {role}",
    "table": "GRANT SELECT ON {name} TO {role}",
    "sequence": "GRANT SELECT ON SEQUENCE {name} TO {role}",
}


def check_source_privileges(conn: psycopg.Connection, url: DatabaseUrl) -> None:
    """The source role can read every schema, table and sequence (the backup reads them all, the
    copy the planned ones). Raises GuardError naming the role and the exact GRANTs missing."""
    role = _current_role(conn)
    missing = [
        _GRANT[str(kind)].format(name=name, role=sql_ident(role))
        for kind, name in conn.execute(_UNREADABLE_SQL, {})
    ]
    if missing:
        shown = "; ".join(missing[:10]) + (f"; and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise GuardError(
            f"the source role {role} on {url.masked()} cannot read {len(missing)} object(s) dual-db must "
            f"copy: {shown}. Run those (as the objects' owner), or connect as a role that can "
            "(GRANT pg_read_all_data covers all of it on PostgreSQL 14+)."
        )


def check_vector_installable(conn: psycopg.Connection, url: DatabaseUrl) -> None:
    """The AI role can install pgvector (unless it is installed already). pgvector's control file is
    not `trusted`, and managed services allow it by their own lists, so the only exact test is to try,
    in a transaction that is rolled back."""
    if installed_extension(conn, "vector"):
        return
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("CREATE EXTENSION vector")
    except psycopg.errors.InsufficientPrivilege as exc:
        role = _current_role(conn)
        hint = exc.diag.message_hint or "pgvector is not a trusted extension"
        raise GuardError(
            f"the AI role {role} on {url.masked()} may not run CREATE EXTENSION vector "
            f"({exc.diag.message_primary}; {hint}): "
            "have a superuser (or the managed service's extension setting) install it in that database "
            "first, then re-run."
        ) from None


def needs_replica_role(conn: psycopg.Connection, tables: Sequence[TableName]) -> list[TableName]:
    """Tables whose load must skip triggers and foreign-key checks (they exist on the target)."""
    return tables_with_triggers_or_foreign_keys(conn, tables)


def check_replica_role_privilege(
    conn: psycopg.Connection, role_name: str, url: DatabaseUrl, tables: Sequence[TableName]
) -> None:
    """Loading into a table that has triggers or foreign keys sets `session_replication_role`, which
    needs superuser or, since PostgreSQL 15, `GRANT SET ON PARAMETER`. Raises GuardError before any
    write when the target role has neither."""
    blocked = needs_replica_role(conn, tables)
    if not blocked:
        return
    row = conn.execute(
        "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
        "current_setting('server_version_num')::int"
    ).fetchone()
    assert row is not None
    user, superuser, version = str(row[0]), bool(row[1]), int(row[2])
    if superuser:
        return
    if version >= 150000:
        allowed = conn.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')").fetchone()
        if allowed and allowed[0]:
            return
        fix = (
            f"GRANT SET ON PARAMETER session_replication_role TO {sql_ident(user)} (as a superuser or the "
            "managed service's admin role)"
        )
    else:
        fix = "connect as a superuser (PostgreSQL before 15 has no GRANT SET ON PARAMETER)"
    names = ", ".join(str(t) for t in blocked[:5]) + (
        f" and {len(blocked) - 5} more" if len(blocked) > 5 else ""
    )
    raise GuardError(
        f"the {role_name} role {user} on {url.masked()} may not set session_replication_role, which "
        f"loading {names} needs (they have triggers or foreign keys, which a load must not fire): {fix}."
    )


def check_target_ownership(conn: psycopg.Connection, role_name: str, url: DatabaseUrl) -> None:
    """dual-db marks its targets with COMMENT ON DATABASE, which only the database's owner may run."""
    row = conn.execute(
        "SELECT current_user, pg_has_role(current_user, d.datdba, 'USAGE'), "
        "has_database_privilege(current_database(), 'CREATE'), pg_get_userbyid(d.datdba) "
        "FROM pg_database d WHERE d.datname = current_database()"
    ).fetchone()
    assert row is not None
    user, owns, can_create, owner = str(row[0]), bool(row[1]), bool(row[2]), str(row[3])
    if not owns:
        raise GuardError(
            f"the {role_name} role {user} does not own the database {url.masked()} (its owner is {owner}): "
            f"dual-db records what it created there with COMMENT ON DATABASE, which needs ownership. "
            f"Run ALTER DATABASE {sql_ident(url.dbname or '')} OWNER TO {sql_ident(user)}, or connect as "
            f"{owner}."
        )
    if not can_create:
        raise GuardError(
            f"the {role_name} role {user} may not create schemas in {url.masked()}: "
            f"GRANT CREATE ON DATABASE {sql_ident(url.dbname or '')} TO {sql_ident(user)}."
        )


def sql_ident(name: str) -> str:
    """An identifier quoted for a message the user pastes into psql (never executed by dual-db)."""
    return TableName("public", name).display


# What makes a database not empty for a restore: any relation, function or type in a user schema, or a
# schema besides `public`, that no extension created (managed services pre-install extensions, and the
# dump re-creates its own with IF NOT EXISTS).
_USER_OBJECTS_SQL = """
WITH user_schemas AS (
    SELECT n.oid, n.nspname FROM pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'
), objects AS (
    SELECT 'schema' AS kind, format('%%I', s.nspname) AS name, 'pg_namespace'::regclass AS classid,
           s.oid AS objid
    FROM user_schemas s WHERE s.nspname <> 'public'
    UNION ALL
    SELECT 'relation', format('%%I.%%I', s.nspname, c.relname), 'pg_class'::regclass, c.oid
    FROM pg_class c JOIN user_schemas s ON s.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
    UNION ALL
    SELECT 'function', format('%%I.%%I', s.nspname, p.proname), 'pg_proc'::regclass, p.oid
    FROM pg_proc p JOIN user_schemas s ON s.oid = p.pronamespace
    UNION ALL
    SELECT 'type', format('%%I.%%I', s.nspname, t.typname), 'pg_type'::regclass, t.oid
    FROM pg_type t JOIN user_schemas s ON s.oid = t.typnamespace
    WHERE t.typtype IN ('e', 'd', 'c', 'r', 'm') AND t.typrelid = 0
)
SELECT o.kind, o.name FROM objects o
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.classid AND d.objid = o.objid
                  AND d.deptype = 'e')
ORDER BY 1, 2
"""


def check_rollback_target(url: DatabaseUrl, others: dict[str, tuple[str, ...]]) -> None:
    """Refuse (GuardError, nothing written) to restore the backup into `url` unless it is an empty
    database distinct from every database in `others` (role → `database_identity`: the source, core,
    AI as far as they could be reached) and not one dual-db prepared as a target."""
    with connection(url, read_only=True, application_name="dual-db preflight rollback") as conn:
        identity = database_identity(conn)
        marker = read_marker(conn)
        objects = [(str(kind), str(name)) for kind, name in conn.execute(_USER_OBJECTS_SQL, {})]
    for role, other in others.items():
        if identity == other:
            raise GuardError(
                f"the rollback database {url.masked()} is the {role} database: restore into a new, empty "
                "database (CREATE DATABASE …), never over the source or a target."
            )
    if marker is not None:
        raise GuardError(
            f"the rollback database {url.masked()} is dual-db's {marker.role} target: restore into a new, "
            "empty database (CREATE DATABASE …)."
        )
    if objects:
        shown = ", ".join(f"{kind} {name}" for kind, name in objects[:5])
        more = f" and {len(objects) - 5} more" if len(objects) > 5 else ""
        raise GuardError(
            f"the rollback database {url.masked()} is not empty ({len(objects)} object(s): {shown}{more}): "
            "restore into a new, empty database (CREATE DATABASE …)."
        )
