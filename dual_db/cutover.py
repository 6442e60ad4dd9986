"""Cutover: switching the application from the old database to the new pair, only when that is safe.

It is safe when nothing written to the old database would be lost and nothing in the new pair differs
from what was verified. dual-db proves both with the fingerprints recorded inside the copy's snapshot:
- the source now still has exactly the snapshot's content (no write since the copy), and
- each target still has exactly the snapshot's content (nothing changed it since the copy was checked).
Statistics counters (`pg_stat_user_tables`) would be cheaper, but PostgreSQL flushes them with a delay of
up to seconds and counts rolled-back writes, so they name the tables that moved; the fingerprints prove.

When it goes ahead, the change counters of the old database are recorded (the soak week proves from
them that no write reaches it afterwards), both targets are marked as cut over (dual-db never writes to
them again), and the settings the application switches to, and back, are written to owner-only files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from dual_db.db.connect import connection
from dual_db.db.env import write_private_text
from dual_db.db.fingerprint import Fingerprint
from dual_db.db.names import TableName
from dual_db.db.snapshot import TransactionHorizon
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.ownership import mark_cut_over
from dual_db.verify.drift import source_drift_now


@dataclass(frozen=True)
class TableCounters:
    """A table's cumulative write counters; a changed relfilenode means TRUNCATE or a rewrite."""

    inserted: int
    updated: int
    deleted: int
    relfilenode: int


@dataclass(frozen=True)
class ChangeCounters:
    tables: dict[TableName, TableCounters]
    commits: int  # pg_stat_database.xact_commit of the database
    read_at: str

    def to_json(self) -> dict[str, object]:
        return {
            "read_at": self.read_at,
            "commits": self.commits,
            "tables": {
                t.qualified: [c.inserted, c.updated, c.deleted, c.relfilenode]
                for t, c in sorted(self.tables.items())
            },
        }

    @classmethod
    def from_json(cls, value: Mapping[str, object]) -> ChangeCounters:
        tables = {
            TableName.parse(name): TableCounters(*(int(x) for x in counts))  # type: ignore[arg-type]
            for name, counts in dict(value.get("tables") or {}).items()  # type: ignore[call-overload]
        }
        return cls(tables, int(value.get("commits") or 0), str(value.get("read_at") or ""))  # type: ignore[call-overload]

    def moved_since(self, earlier: ChangeCounters) -> list[TableName]:
        """Tables whose counters differ from `earlier` (or that appeared or vanished)."""
        names = set(self.tables) | set(earlier.tables)
        return sorted(t for t in names if self.tables.get(t) != earlier.tables.get(t))


_COUNTERS_SQL = """
SELECT s.schemaname, s.relname, s.n_tup_ins, s.n_tup_upd, s.n_tup_del, c.relfilenode
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
"""


def change_counters(conn: psycopg.Connection) -> ChangeCounters:
    # A fresh statistics snapshot: within a transaction PostgreSQL would keep serving the first one.
    conn.execute("SELECT pg_stat_clear_snapshot()")
    tables = {
        TableName(r[0], r[1]): TableCounters(int(r[2]), int(r[3]), int(r[4]), int(r[5]))
        for r in conn.execute(_COUNTERS_SQL)
    }
    row = conn.execute(
        "SELECT xact_commit, now() FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return ChangeCounters(tables, int(row[0]), row[1].astimezone(dt.UTC).isoformat())


@dataclass
class CutoverVerdict:
    ready: bool
    reasons: list[str] = field(default_factory=list)
    source_moved: list[TableName] = field(default_factory=list)
    targets_changed: dict[str, list[TableName]] = field(default_factory=dict)
    # How the source was found unchanged: proved from transaction status, or by reading its tables.
    source_unchanged_by: str = ""


def judge(
    source_url: DatabaseUrl,
    targets: Mapping[str, DatabaseUrl],
    recorded: Mapping[str, Mapping[TableName, Fingerprint]],
    *,
    workers: int = 4,
    horizons: Mapping[TableName, TransactionHorizon | None] | None = None,
) -> CutoverVerdict:
    """Whether the source and every target still hold exactly the snapshot's content.

    `recorded` maps each target ('core', 'ai') to its tables' source fingerprints at the snapshot;
    `horizons` each table's snapshot horizon, with which a source whose writes have stopped is proved
    unchanged without reading it (dual_db.verify.drift). The targets are always read: dual-db itself
    wrote them after their snapshots.
    """
    verdict = CutoverVerdict(ready=True)
    everything = {t: f for per_target in recorded.values() for t, f in per_target.items()}
    drift, moved = source_drift_now(source_url, everything, workers=workers, horizons=horizons)
    verdict.source_unchanged_by = str(drift.metadata.get("checked_by") or "")
    if not drift.passed:
        verdict.ready = False
        verdict.source_moved = moved
        verdict.reasons.append(
            drift.summary
            if not moved
            else f"the source changed since the copy in {len(moved)} table(s): "
            f"{', '.join(str(t) for t in moved)}; a cutover now would lose those writes. Stop the "
            "application's writes, re-run migrate (or those tables), verify, then cut over"
        )
    for role, url in targets.items():
        outcome, changed = source_drift_now(url, recorded.get(role, {}), workers=workers)
        if not outcome.passed:
            verdict.ready = False
            verdict.targets_changed[role] = changed
            verdict.reasons.append(
                f"the {role} database no longer holds what was verified: "
                + (", ".join(str(t) for t in changed) if changed else outcome.summary)
                + " changed since the copy. Re-materialize those tables and verify again"
            )
    return verdict


@dataclass(frozen=True)
class CutoverFiles:
    switch: Path
    rollback: Path


def write_switch_files(
    directory: Path, *, source_url: DatabaseUrl, core_url: DatabaseUrl, ai_url: DatabaseUrl, when: str
) -> CutoverFiles:
    """The application's settings after the switch, and to switch back, readable by the owner only."""
    directory.mkdir(parents=True, exist_ok=True)
    switch = directory / "switch.env"
    rollback = directory / "rollback.env"
    write_private_text(
        switch,
        f"# dual-db cutover at {when}: the application's settings from now on\n"
        f"DATABASE_URL={core_url.application_url()}\n"
        f"AI_DATABASE_URL={ai_url.application_url()}\n",
    )
    write_private_text(
        rollback,
        f"# dual-db cutover at {when}: to switch back to the old database, set DATABASE_URL and unset\n"
        "# AI_DATABASE_URL (the application then reads AI tables from the old database again)\n"
        f"DATABASE_URL={source_url.application_url()}\n",
    )
    return CutoverFiles(switch, rollback)


def mark_targets_cut_over(targets: Mapping[str, DatabaseUrl], when: dt.datetime) -> None:
    for url in targets.values():
        with connection(url, autocommit=True, application_name="dual-db cutover") as conn:
            mark_cut_over(conn, when)
