"""What the source and each target must offer before dual-db creates any replication object.

`check_source` and `check_target` only read catalogs and settings; they return a typed record of what
they found, whose `problems` are one line each naming the fix, and whose `warnings` do not refuse.
`require_source` / `require_target` raise `ReplicationRefused` with every problem at once.

On the source:
- `wal_level = logical` (a restart; on AWS RDS the static parameter `rds.logical_replication = 1`);
- a free `max_replication_slots` and `max_wal_senders` for each target (a slot and a walsender each);
- the REPLICATION attribute, superuser, or membership of `rds_replication` (AWS RDS);
- a replica identity for every published table. A table without a primary key whose REPLICA IDENTITY
  is DEFAULT or NOTHING is refused by name: once published, the application's UPDATE and DELETE on it
  fail on the source. `REPLICA IDENTITY FULL` would avoid that but writes the whole old row to the WAL
  for every update and delete, and the target then finds the row by a scan; dual-db sets it only when
  asked (not yet offered), never by itself;
- `max_slot_wal_keep_size`: reported; a warning when it is -1 (unlimited), since an abandoned slot
  then keeps WAL until the disk is full.

On a target: the right to create a subscription: superuser, or on PostgreSQL 16+ membership of
`pg_create_subscription` plus CREATE on the database; and a free `max_logical_replication_workers`
for its apply worker.

`measure_wal_rate` samples the source's WAL write rate and `wal_hold` says how much WAL the slot will
hold back while the copy runs at that rate, against `max_slot_wal_keep_size` (past it, PostgreSQL
invalidates the slot and the catch-up must start over). Not yet checked: the leaf partitions of a
published partitioned table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from dual_db.db.names import TableName


class ReplicationRefused(RuntimeError):
    """A guard failed. The message has one line per failing guard, each naming its fix."""


@dataclass(frozen=True)
class TableIdentity:
    """How a published table's changed rows are identified: `relreplident` and what backs it."""

    table: TableName
    replica_identity: str  # default | nothing | full | index
    has_primary_key: bool
    has_identity_index: bool

    @property
    def usable(self) -> bool:
        if self.replica_identity == "full":
            return True
        if self.replica_identity == "index":
            return self.has_identity_index
        if self.replica_identity == "default":
            return self.has_primary_key
        return False


@dataclass(frozen=True)
class SourceFacts:
    server_version_num: int
    wal_level: str
    max_replication_slots: int
    replication_slots_used: int
    max_wal_senders: int
    wal_senders_used: int
    role: str
    replication_privilege: str | None  # superuser | replication | rds_replication, None when lacking
    max_slot_wal_keep_size_bytes: int | None  # None: -1, unlimited
    oldest_transaction_seconds: float | None  # a slot waits for transactions open when it is created
    tables: tuple[TableIdentity, ...]
    problems: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class TargetFacts:
    server_version_num: int
    role: str
    superuser: bool
    pg_create_subscription: bool
    create_on_database: bool
    max_logical_replication_workers: int
    logical_replication_workers_used: int
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


_IDENTITY = {"d": "default", "n": "nothing", "f": "full", "i": "index"}

_TABLE_IDENTITY_SQL = """
SELECT c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""

_SETTINGS_SQL = """
SELECT current_setting('wal_level'),
       current_setting('max_replication_slots')::int,
       (SELECT count(*) FROM pg_replication_slots)::int,
       current_setting('max_wal_senders')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int,
       current_user::text,
       server_version_num_text
FROM (SELECT current_setting('server_version_num') AS server_version_num_text) v
"""

_PRIVILEGE_SQL = """
SELECT r.rolsuper, r.rolreplication,
       EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication'
               AND pg_has_role(current_user, g.oid, 'MEMBER'))
FROM pg_roles r WHERE r.rolname = current_user
"""

# pg_settings gives the value in its unit (MB for max_slot_wal_keep_size); -1 is unlimited.
_KEEP_SIZE_SQL = """
SELECT setting::bigint, unit FROM pg_settings WHERE name = 'max_slot_wal_keep_size'
"""

_OLDEST_XACT_SQL = """
SELECT extract(epoch FROM now() - min(xact_start))::float8
FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
"""

_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def table_identity(conn: psycopg.Connection, table: TableName) -> TableIdentity | None:
    row = conn.execute(_TABLE_IDENTITY_SQL, (table.schema, table.name)).fetchone()
    if row is None:
        return None
    return TableIdentity(
        table=table,
        replica_identity=_IDENTITY.get(str(row[0]), str(row[0])),
        has_primary_key=bool(row[1]),
        has_identity_index=bool(row[2]),
    )


def check_source(
    conn: psycopg.Connection, tables: Sequence[TableName], *, slots_needed: int = 1
) -> SourceFacts:
    """Read what logical replication needs from the source; nothing is created or changed."""
    settings = conn.execute(_SETTINGS_SQL).fetchone()
    assert settings is not None
    wal_level, max_slots, slots_used, max_senders, senders_used, role, version_text = settings
    privilege_row = conn.execute(_PRIVILEGE_SQL).fetchone()
    superuser, replication, rds = privilege_row if privilege_row else (False, False, False)
    privilege = (
        "superuser" if superuser else "replication" if replication else "rds_replication" if rds else None
    )
    keep_row = conn.execute(_KEEP_SIZE_SQL).fetchone()
    keep_bytes: int | None = None
    if keep_row is not None and int(keep_row[0]) >= 0:
        keep_bytes = int(keep_row[0]) * _UNITS.get(str(keep_row[1] or "B"), 1)
    oldest_row = conn.execute(_OLDEST_XACT_SQL).fetchone()
    oldest = float(oldest_row[0]) if oldest_row and oldest_row[0] is not None else None

    problems: list[str] = []
    warnings: list[str] = []
    if wal_level != "logical":
        problems.append(
            f"wal_level is {wal_level}, logical replication needs logical: set wal_level = logical and "
            "restart the source (AWS RDS: rds.logical_replication = 1 in the parameter group, then reboot)"
        )
    free_slots = int(max_slots) - int(slots_used)
    if free_slots < slots_needed:
        problems.append(
            f"max_replication_slots is {max_slots} with {slots_used} in use: dual-db needs {slots_needed} "
            f"free; raise max_replication_slots (a restart) or drop unused slots"
        )
    free_senders = int(max_senders) - int(senders_used)
    if free_senders < slots_needed:
        problems.append(
            f"max_wal_senders is {max_senders} with {senders_used} in use: dual-db needs {slots_needed} "
            "free; raise max_wal_senders (a restart)"
        )
    if privilege is None:
        problems.append(
            f"role {role} may not replicate: ALTER ROLE {role} REPLICATION "
            f"(AWS RDS: GRANT rds_replication TO {role})"
        )
    identities: list[TableIdentity] = []
    for table in tables:
        found = table_identity(conn, table)
        if found is None:
            problems.append(f"table {table.qualified} does not exist on the source: fix the routing plan")
            continue
        identities.append(found)
        if not found.usable:
            problems.append(
                f"table {table.qualified} has no replica identity (no primary key, REPLICA IDENTITY "
                f"{found.replica_identity.upper()}): once published, the application's UPDATE and DELETE "
                "on it fail; add a primary key, or ALTER TABLE ... REPLICA IDENTITY USING INDEX <unique "
                "index>. REPLICA IDENTITY FULL is possible only on request: it writes every updated or "
                "deleted row whole to the WAL and the target finds each row by a scan"
            )
    if keep_bytes is None:
        warnings.append(
            "max_slot_wal_keep_size is -1 (unlimited): a slot left behind keeps WAL until the source's "
            "disk is full; set a limit, and run `dual-db cleanup-replication` after an interrupted run"
        )
    return SourceFacts(
        server_version_num=int(version_text),
        wal_level=str(wal_level),
        max_replication_slots=int(max_slots),
        replication_slots_used=int(slots_used),
        max_wal_senders=int(max_senders),
        wal_senders_used=int(senders_used),
        role=str(role),
        replication_privilege=privilege,
        max_slot_wal_keep_size_bytes=keep_bytes,
        oldest_transaction_seconds=oldest,
        tables=tuple(identities),
        problems=tuple(problems),
        warnings=tuple(warnings),
    )


_TARGET_SQL = """
SELECT current_setting('server_version_num')::int, current_user::text, r.rolsuper,
       EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'pg_create_subscription'
               AND pg_has_role(current_user, g.oid, 'MEMBER')),
       has_database_privilege(current_database(), 'CREATE'),
       current_setting('max_logical_replication_workers')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'logical replication%%worker')::int
FROM pg_roles r WHERE r.rolname = current_user
"""


def check_target(conn: psycopg.Connection, *, workers_needed: int = 1) -> TargetFacts:
    """Whether the connected role may create a subscription in the connected database, and run it."""
    row = conn.execute(_TARGET_SQL).fetchone()
    assert row is not None
    version, role = int(row[0]), str(row[1])
    superuser, member, create = bool(row[2]), bool(row[3]), bool(row[4])
    max_workers, workers_used = int(row[5]), int(row[6])
    problems: list[str] = []
    if max_workers - workers_used < workers_needed:
        problems.append(
            f"max_logical_replication_workers is {max_workers} with {workers_used} in use: a subscription "
            f"needs {workers_needed} free; raise it on the target (a restart)"
        )
    if not superuser:
        if version < 160000:
            problems.append(
                f"role {role} is not a superuser: before PostgreSQL 16 only a superuser may create a "
                "subscription; connect to the target as one"
            )
        else:
            if not member:
                problems.append(
                    f"role {role} may not create a subscription: GRANT pg_create_subscription TO {role}"
                )
            if not create:
                problems.append(
                    f"role {role} lacks CREATE on the target database, which a subscription needs: "
                    f"GRANT CREATE ON DATABASE <target database> TO {role}"
                )
    return TargetFacts(
        server_version_num=version,
        role=role,
        superuser=superuser,
        pg_create_subscription=member,
        create_on_database=create,
        max_logical_replication_workers=max_workers,
        logical_replication_workers_used=workers_used,
        problems=tuple(problems),
    )


def measure_wal_rate(conn: psycopg.Connection, seconds: float = 1.0) -> float:
    """The source's WAL write rate in bytes per second, sampled over `seconds` (autocommit `conn`)."""
    first = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    started = time.monotonic()
    time.sleep(seconds)
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", first).fetchone()
    elapsed = time.monotonic() - started
    return float(row[0]) / elapsed if row and row[0] is not None and elapsed > 0 else 0.0


@dataclass(frozen=True)
class WalHold:
    """The WAL a slot holds back while the copy runs: `bytes` at the measured rate."""

    bytes: int
    keep_size_bytes: int | None
    problem: str | None  # set when it would pass max_slot_wal_keep_size

    @property
    def line(self) -> str:
        held = f"the copy will hold back about {_size(self.bytes)} of WAL at the current write rate"
        if self.keep_size_bytes is None:
            return held + " (max_slot_wal_keep_size unlimited: the source's disk is the limit)"
        return held + f" (max_slot_wal_keep_size {_size(self.keep_size_bytes)})"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024:
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TB"


def wal_hold(facts: SourceFacts, bytes_per_second: float, copy_seconds: float) -> WalHold:
    """How much WAL the slot will hold during a copy of `copy_seconds`, and whether the limit allows it."""
    held = int(bytes_per_second * copy_seconds)
    keep = facts.max_slot_wal_keep_size_bytes
    problem = None
    if keep is not None and held > keep:
        problem = (
            f"the copy will hold back about {_size(held)} of WAL ({bytes_per_second / 1024:.0f} kB/s for "
            f"{copy_seconds:.0f}s) but max_slot_wal_keep_size is {_size(keep)}: the slot would be "
            "invalidated mid-copy; raise max_slot_wal_keep_size, or copy when the source writes less"
        )
    return WalHold(bytes=held, keep_size_bytes=keep, problem=problem)


def require_source(
    conn: psycopg.Connection, tables: Sequence[TableName], *, slots_needed: int = 1
) -> SourceFacts:
    facts = check_source(conn, tables, slots_needed=slots_needed)
    if facts.problems:
        raise ReplicationRefused("the source cannot be replicated from:\n" + "\n".join(facts.problems))
    return facts


def require_target(conn: psycopg.Connection, name: str) -> TargetFacts:
    facts = check_target(conn)
    if facts.problems:
        raise ReplicationRefused(f"the {name} target cannot subscribe:\n" + "\n".join(facts.problems))
    return facts
