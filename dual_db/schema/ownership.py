"""What dual-db owns in a target database, and preparing a target for a run without touching the rest.

dual-db marks a target with a comment on the database (JSON): which role it plays, which source it
came from, the hash of the schema it applied, every object that schema created (by the server's own
identity, `pg_identify_object`), and, once the application was switched over, when. That record is
what makes a re-run safe:

- a re-run replaces only objects the record lists. A table someone else created (an audit log, notes
  written after the copy) is left alone and named, never dropped;
- when the source schema is unchanged since the last run, nothing is dropped at all: the previous good
  copy stays in place and each table is replaced atomically by its own copy, so a failure keeps the
  previous contents of every table not yet copied;
- when the schema changed, the previous copy's objects are dropped and the new schema applied in one
  transaction (without CASCADE: an object of someone else's that depends on them stops it);
- a target that was cut over belongs to the application: every write is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from dual_db.db.catalog import regclass_literal
from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.apply import execute_statements
from dual_db.schema.statements import Statement, statements_of

MARKER_KEY = "dual_db_target"


class OwnershipError(RuntimeError):
    """A target cannot be prepared without touching what dual-db does not own; nothing was written."""


@dataclass(frozen=True, order=True)
class OwnedObject:
    """An object by the server's identity: `kind` and `identity` as `pg_identify_object` gives them."""

    kind: str  # 'table', 'view', 'sequence', 'function', 'type', 'schema', 'extension', ...
    identity: str  # quoted and qualified by the server, e.g. 'public.users', '"Analytics"."Daily P&L"'


@dataclass(frozen=True)
class TargetMarker:
    role: str
    source_database: str = ""
    schema_hash: str = ""
    objects: tuple[OwnedObject, ...] = ()
    cutover_at: str | None = None

    @property
    def tables(self) -> set[TableName]:
        return {TableName.parse(o.identity) for o in self.objects if o.kind == "table"}

    def to_json(self) -> str:
        return json.dumps(
            {
                MARKER_KEY: self.role,
                "source_database": self.source_database,
                "schema_hash": self.schema_hash,
                "objects": [[o.kind, o.identity] for o in self.objects],
                "cutover_at": self.cutover_at,
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> TargetMarker | None:
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not isinstance(value, dict) or MARKER_KEY not in value:
            return None
        return cls(
            role=str(value[MARKER_KEY]),
            source_database=str(value.get("source_database") or ""),
            schema_hash=str(value.get("schema_hash") or ""),
            objects=tuple(OwnedObject(str(k), str(i)) for k, i in value.get("objects") or []),
            cutover_at=value.get("cutover_at") or None,
        )


def read_marker(conn: psycopg.Connection) -> TargetMarker | None:
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    return TargetMarker.from_json(row[0] if row else None)


def write_marker(conn: psycopg.Connection, marker: TargetMarker) -> None:
    dbname = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(dbname), sql.Literal(marker.to_json()))
    )


def mark_cut_over(conn: psycopg.Connection, when: dt.datetime | None = None) -> TargetMarker:
    """Record that the application now writes to this target: dual-db will refuse to write to it."""
    marker = read_marker(conn)
    if marker is None:
        raise OwnershipError("this database is not a dual-db target: nothing to mark as cut over")
    cut = TargetMarker(
        role=marker.role,
        source_database=marker.source_database,
        schema_hash=marker.schema_hash,
        objects=marker.objects,
        cutover_at=(when or dt.datetime.now(dt.UTC)).isoformat(),
    )
    write_marker(conn, cut)
    return cut


# Objects a schema script creates, by the server's identity. Members of extensions, and objects that
# exist only as part of another (a table's row type and array type, a serial or identity sequence, an
# index, a constraint) are left out: they go with their owner.
_OBJECTS_SQL = """
WITH user_namespaces AS (
    SELECT oid FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema')
      AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'
), candidates AS (
    SELECT 'pg_class'::regclass AS classid, c.oid AS objid FROM pg_class c
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relnamespace IN (SELECT oid FROM user_namespaces)
  UNION ALL
    SELECT 'pg_type'::regclass, t.oid FROM pg_type t
    WHERE t.typnamespace IN (SELECT oid FROM user_namespaces)
      AND (t.typtype IN ('e', 'd', 'r', 'm')
           OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
  UNION ALL
    SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM user_namespaces)
  UNION ALL
    SELECT 'pg_namespace'::regclass, n.oid FROM pg_namespace n
    WHERE n.oid IN (SELECT oid FROM user_namespaces) AND n.nspname <> 'public'
  UNION ALL
    SELECT 'pg_extension'::regclass, e.oid FROM pg_extension e WHERE e.extname <> 'plpgsql'
)
SELECT (pg_identify_object(c.classid, c.objid, 0)).type,
       (pg_identify_object(c.classid, c.objid, 0)).identity
FROM candidates c
WHERE NOT EXISTS (
    SELECT 1 FROM pg_depend d
    WHERE d.classid = c.classid AND d.objid = c.objid AND d.deptype IN ('e', 'i', 'a')
      -- a partitioned table depends internally on itself (on its partition key's columns): that
      -- makes it no part of another object
      AND NOT (d.refclassid = d.classid AND d.refobjid = d.objid)
      -- a partition depends automatically on its parent, yet it is a table of its own that a copy
      -- loads: listed, so that loading it is loading into dual-db's table, and a re-run replaces it
      AND NOT (d.deptype = 'a' AND d.refclassid = 'pg_class'::regclass
               AND c.classid = 'pg_class'::regclass
               AND (SELECT relispartition FROM pg_class WHERE oid = c.objid))
)
"""


def catalog_objects(conn: psycopg.Connection) -> set[OwnedObject]:
    return {OwnedObject(str(kind), str(identity)) for kind, identity in conn.execute(_OBJECTS_SQL)}


def schema_hash(statements: Sequence[Statement]) -> str:
    """Identifies a schema script by its statements (pg_dump's comments and headers vary per run)."""
    digest = hashlib.sha256()
    for statement in statements:
        digest.update(statement.text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


# DROP order: what depends on others first. Within a kind, one statement per object, so a dependency
# error names the object.
_DROP_ORDER = (
    "materialized view",
    "view",
    "foreign table",
    "table",
    "sequence",
    "aggregate",
    "procedure",
    "function",
    "domain",
    "type",
    "composite type",
    "schema",
    "extension",
)
_DROP_KEYWORD = {
    "composite type": "TYPE",
    "domain": "DOMAIN",
}


def _drop_statement(kind: str, objects: Sequence[OwnedObject]) -> sql.Composed:
    keyword = _DROP_KEYWORD.get(kind, kind.upper())
    # `identity` is the server's own quoted, qualified name from pg_identify_object (the form made to
    # be fed back into DDL), never text from a user or a file.
    return sql.SQL("DROP {} IF EXISTS {}").format(
        sql.SQL(keyword), sql.SQL(", ").join(sql.SQL(o.identity) for o in objects)
    )


def drop_objects(conn: psycopg.Connection, objects: Iterable[OwnedObject]) -> list[OwnedObject]:
    """Drop `objects` (never CASCADE) inside the caller's transaction, one statement per kind (so that
    keys between dropped tables do not matter); raises OwnershipError naming what something else still
    depends on."""
    by_kind: dict[str, list[OwnedObject]] = {}
    for obj in sorted(objects):
        by_kind.setdefault(obj.kind, []).append(obj)
    order = sorted(by_kind, key=lambda k: _DROP_ORDER.index(k) if k in _DROP_ORDER else len(_DROP_ORDER))
    dropped: list[OwnedObject] = []
    for kind in order:
        try:
            with conn.transaction():
                conn.execute(_drop_statement(kind, by_kind[kind]))
        except psycopg.errors.DependentObjectsStillExist as exc:
            detail = (exc.diag.message_detail or exc.diag.message_primary or "").replace("\n", "; ")
            raise OwnershipError(
                f"cannot replace the previous copy's {kind}(s): objects dual-db did not create depend on "
                f"them ({detail}). dual-db never drops those: remove that dependency, or use a fresh "
                "database."
            ) from None
        dropped.extend(by_kind[kind])
    return dropped


@dataclass
class TargetPreparation:
    """What preparing a target did."""

    kept: bool  # the schema was unchanged: nothing dropped, tables are replaced one by one
    statements: int = 0
    dropped: list[OwnedObject] = field(default_factory=list)
    created: list[OwnedObject] = field(default_factory=list)
    left_alone: list[TableName] = field(default_factory=list)
    replaced_foreign: list[TableName] = field(default_factory=list)


def refuse_if_cut_over(marker: TargetMarker | None, role: str, url: DatabaseUrl) -> None:
    if marker is not None and marker.cutover_at:
        raise OwnershipError(
            f"the {role} database {url.masked()} was cut over at {marker.cutover_at}: the application "
            "writes there now, and dual-db never writes to it again. Migrate into fresh databases, or "
            "roll back first."
        )


def prepare_target(
    url: DatabaseUrl,
    role: str,
    pre_data: str,
    *,
    source_database: str,
    planned_tables: Sequence[TableName],
    replace_existing: bool = False,
    log: Callable[[str], None] = lambda _line: None,
) -> TargetPreparation:
    """Make `url` hold `pre_data`'s schema, touching only what dual-db created (see the module doc).

    Tables that the plan routes here and that exist without being dual-db's are replaced only with
    `replace_existing`; every other table dual-db did not create is left alone.
    """
    statements = statements_of(pre_data)
    new_hash = schema_hash(statements)
    with connection(url, autocommit=True, application_name=f"dual-db schema {role}") as conn:
        with conn.transaction():
            marker = read_marker(conn)
            refuse_if_cut_over(marker, role, url)
            if marker is not None and marker.role != role:
                raise OwnershipError(
                    f"the {role} database {url.masked()} is marked as dual-db's {marker.role} target"
                )
            existing = catalog_objects(conn)
            owned = set(marker.objects) if marker else set()
            if marker is not None and marker.schema_hash == new_hash and owned <= existing:
                left = _foreign_tables(existing - owned)
                for table in left:
                    log(f"left alone (not created by dual-db): {table}")
                return TargetPreparation(kept=True, left_alone=left)

            planned = set(planned_tables)
            foreign = existing - owned
            colliding = {o for o in foreign if o.kind == "table" and TableName.parse(o.identity) in planned}
            if colliding and not replace_existing:
                names = ", ".join(sorted(o.identity for o in colliding))
                raise OwnershipError(
                    f"the {role} database {url.masked()} already holds table(s) dual-db did not create "
                    f"with the names it must create: {names}. Point it at an empty database, or set "
                    "replace_existing: true in the settings resource to replace them."
                )
            to_drop = (owned & existing) | colliding
            if to_drop:
                log(
                    f"the schema changed since the previous copy into {url.masked()}: dropping its "
                    f"{len(to_drop)} object(s) and applying the new schema; until every table is copied "
                    "again this target is incomplete"
                )
            dropped = drop_objects(conn, to_drop)
            before = catalog_objects(conn)
            applied = execute_statements(conn, url, statements)
            created = sorted(catalog_objects(conn) - before)
            write_marker(
                conn,
                TargetMarker(
                    role=role,
                    source_database=source_database,
                    schema_hash=new_hash,
                    objects=tuple(created),
                ),
            )
            left = _foreign_tables(catalog_objects(conn) - set(created))
            for table in left:
                log(f"left alone (not created by dual-db): {table}")
            return TargetPreparation(
                kept=False,
                statements=applied,
                dropped=dropped,
                created=created,
                left_alone=left,
                replaced_foreign=[TableName.parse(o.identity) for o in sorted(colliding)],
            )


def _foreign_tables(objects: Iterable[OwnedObject]) -> list[TableName]:
    return sorted(TableName.parse(o.identity) for o in objects if o.kind == "table")


def owned_tables_guard(
    conn: psycopg.Connection, role: str, url: DatabaseUrl, tables: Sequence[TableName]
) -> None:
    """Before copying `tables` into a target: it must be dual-db's `role` target, not cut over, and
    every table must be one dual-db created there. Raises OwnershipError; reads only."""
    marker = read_marker(conn)
    refuse_if_cut_over(marker, role, url)
    if marker is None or marker.role != role:
        raise OwnershipError(
            f"the {role} database {url.masked()} was not prepared by dual-db as its {role} target: "
            f"materialize {role}/{role}_schema first (the migrate job does)"
        )
    owned = marker.tables
    strangers = [t for t in tables if t not in owned and _partition_root(conn, t) not in owned]
    if strangers:
        raise OwnershipError(
            f"table(s) {', '.join(str(t) for t in strangers)} in the {role} database {url.masked()} "
            f"were not created by dual-db: re-materialize {role}/{role}_schema first"
        )


def _partition_root(conn: psycopg.Connection, table: TableName) -> TableName | None:
    """The root of `table`'s partition tree when it is a partition (a record written before dual-db
    listed partitions holds only the root, which owns them), else None."""
    row = conn.execute(
        "SELECT n.nspname, r.relname FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace "
        "WHERE r.oid = pg_partition_root(to_regclass(%s)) AND r.oid <> to_regclass(%s)",
        (regclass_literal(table), regclass_literal(table)),
    ).fetchone()
    return TableName(row[0], row[1]) if row else None
