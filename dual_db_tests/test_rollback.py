"""The rollback job: the latest full backup restored into a new, empty database and proven equal to the
source at the backup's snapshot, against real servers after a real migrate."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dual_db.db.catalog import list_tables
from dual_db.db.connect import connection
from dual_db.db.fingerprint import Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.defs.constants import table_key
from dual_db.defs.state import TableCopyRecord
from dual_db.embedded import EmbeddedCluster, EmbeddedServer, pg_bin_dir
from dual_db.routing import TARGETS, RoutingPlan
from dual_db.verify.restored import restored_matches_snapshot
from dual_db_tests.conftest import Databases
from dual_db_tests.job_support import run_job
from dual_db_tests.test_migrate_job import environment  # noqa: F401  (fixture)

ROLLBACK = dg.AssetKey(["rollback", "restored_source"])
DatabaseFactory = Callable[[EmbeddedServer], DatabaseUrl]

# Written to the source after the copy: none of it may reach the restored database.
LATER_WRITES = """
INSERT INTO users VALUES (gen_random_uuid(), 'late@example.com');
UPDATE positions SET quantity = quantity + 1 WHERE id <= 10;
DELETE FROM ai_feedback WHERE rating = 'up' AND message_id = md5('m2')::uuid;
INSERT INTO portfolios (user_id, name) SELECT id, 'late' FROM users LIMIT 3;
"""


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(str(e.event_specific_data) for e in result.all_events if e.is_step_failure)


def _metadata(instance: dg.DagsterInstance) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(ROLLBACK)
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _recorded(instance: dg.DagsterInstance) -> dict[TableName, Fingerprint]:
    plan = RoutingPlan.load()
    recorded = {}
    for target in TARGETS:
        for table in plan.tables(target):
            record = TableCopyRecord.latest(instance, table_key(target, table), table)
            assert record is not None
            recorded[table] = record.source
    return recorded


def _objects(url: DatabaseUrl) -> list[tuple[str, ...]]:
    """Everything a restore could have written: relations, schemas, the database comment."""
    with connection(url) as conn:
        rows = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
            "UNION ALL SELECT nspname, '', 'schema' FROM pg_namespace "
            "UNION ALL SELECT coalesce(shobj_description(oid, 'pg_database'), ''), '', 'comment' "
            "FROM pg_database WHERE datname = current_database() ORDER BY 1, 2, 3"
        ).fetchall()
    return [tuple(str(v) for v in row) for row in rows]


def _recording_pg_restore(bin_dir: Path, log_dir: Path) -> None:
    """A pg_restore that writes down its command line and environment, then is pg_restore."""
    bin_dir.mkdir()
    log_dir.mkdir()
    wrapper = bin_dir / "pg_restore"
    wrapper.write_text(
        f'#!/bin/sh\necho "$@" > "{log_dir}/$$.argv"\nenv > "{log_dir}/$$.env"\n'
        f'exec "{pg_bin_dir(18) / "pg_restore"}" "$@"\n'
    )
    wrapper.chmod(0o700)


def test_rollback_restores_the_source_as_of_the_snapshot(
    environment: Databases,  # noqa: F811
    servers: EmbeddedCluster,
    new_database: DatabaseFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    dbs = environment
    target = new_database(servers["core"])
    monkeypatch.setenv("ROLLBACK_DATABASE_URL", target.uri())
    tool_log = tmp_path / "pg-restore-calls"
    _recording_pg_restore(tmp_path / "pg-bin", tool_log)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        recorded = _recorded(instance)
        with connection(dbs.source, autocommit=True) as conn:
            conn.execute(LATER_WRITES)  # type: ignore[arg-type]
            now = {t: table_fingerprint(conn, t) for t in recorded}
        moved = {t for t in recorded if now[t] != recorded[t]}
        assert {str(t) for t in moved} == {"users", "positions", "ai_feedback", "portfolios"}

        # migrate never restores; the rollback job does nothing else
        assert instance.get_latest_materialization_event(ROLLBACK) is None
        # The rollback's tools (pg_restore alone) come from the configured bin directory.
        monkeypatch.setenv("DUAL_DB_PG_BIN_DIR", str(tmp_path / "pg-bin"))
        result = run_job("rollback", instance)
        assert result.success, _failure(result)
        metadata = _metadata(instance)
        logs = " ".join(entry.user_message for entry in instance.all_logs(result.run_id))

    assert metadata["summary"].startswith("9/9 tables identical to the source at the snapshot")
    assert all(row["equal"] for row in metadata["tables"]) and len(metadata["tables"]) == 9
    with connection(target) as conn:
        restored = {t: table_fingerprint(conn, t) for t in recorded}
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (50,)
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)
        # The sequence of portfolios continues after the restored rows, not over them.
        assert conn.execute("SELECT nextval('portfolios_id_seq') > max(id) FROM portfolios").fetchone() == (
            True,
        )
    assert restored == recorded
    assert all(restored[t] != now[t] for t in moved)

    # The values to switch back: masked in metadata, in full in an owner-only file.
    assert metadata["DATABASE_URL"] == "postgresql+asyncpg://" + target.masked().split("://", 1)[1]
    assert metadata["AI_DATABASE_URL"] == "unset"
    values = Path(str(metadata["values_file"]))
    assert stat.S_IMODE(values.stat().st_mode) == 0o600
    assert stat.S_IMODE(values.parent.stat().st_mode) == 0o700
    text = values.read_text()
    assert f"DATABASE_URL={target.application_url()}\n" in text
    assert "AI_DATABASE_URL=" not in text and "unset AI_DATABASE_URL" in text
    for password in (dbs.source.password, dbs.core.password, dbs.ai.password, target.password):
        assert password and password not in str(metadata)
    assert target.password and target.password not in logs
    # pg_restore got the password in a passfile: not in its command line, not in its environment.
    calls = {path.name: path.read_text() for path in tool_log.iterdir()}
    restores = [text for name, text in calls.items() if name.endswith(".argv") and "--no-owner" in text]
    assert len(restores) == 1 and f"dbname={target.dbname}" in restores[0] and "--jobs=2" in restores[0]
    assert sum("PGPASSFILE=" in text for name, text in calls.items() if name.endswith(".env")) == 1
    for text in calls.values():
        assert target.password not in text and "DATABASE_URL" not in text
    assert f"DATABASE_URL={metadata['DATABASE_URL']} and unset AI_DATABASE_URL" in logs

    # The proof names what differs: a restored row changed afterwards is caught, by table.
    with connection(target, autocommit=True) as conn:
        conn.execute("UPDATE positions SET symbol = 'CHANGED' WHERE id = 3")
        outcome = restored_matches_snapshot(conn, recorded, {})
    assert not outcome.passed
    assert outcome.summary == "1/9 table(s) differ from the source at the snapshot: positions"


def test_rollback_refuses_a_database_that_is_not_empty_or_is_the_source(
    environment: Databases,  # noqa: F811
    servers: EmbeddedCluster,
    new_database: DatabaseFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dbs = environment
    busy = new_database(servers["core"])
    with connection(busy, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes VALUES (1, 'keep me')")
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        cases = {
            busy: "is not empty (1 object(s): relation public.notes)",
            dbs.source: "is the source database",
            dbs.core: "is the core database",
            dbs.ai: "is the ai database",
        }
        for url, reason in cases.items():
            before = _objects(url)
            with connection(url) as conn:
                tables_before = {i.table: table_fingerprint(conn, i.table) for i in list_tables(conn)}
            monkeypatch.setenv("ROLLBACK_DATABASE_URL", url.uri())
            refused = run_job("rollback", instance)
            assert not refused.success
            text = _failure(refused)
            assert f"the rollback database {url.masked()} {reason}" in text, text
            assert url.password and url.password not in text
            assert _objects(url) == before
            with connection(url) as conn:
                assert {i.table: table_fingerprint(conn, i.table) for i in list_tables(conn)} == tables_before
        assert instance.get_latest_materialization_event(ROLLBACK) is None

        # The latest backup deleted (keep_backups, or by hand): said so, nothing written.
        backup = instance.get_latest_materialization_event(dg.AssetKey(["source", "full_backup"]))
        assert backup is not None and backup.asset_materialization is not None
        backup_path = Path(str(backup.asset_materialization.metadata["path"].value))
        shutil.rmtree(backup_path)
        fresh = new_database(servers["core"])
        empty = _objects(fresh)
        monkeypatch.setenv("ROLLBACK_DATABASE_URL", fresh.uri())
        refused = run_job("rollback", instance)
        assert not refused.success
        assert f"{backup_path} is not a pg_dump directory archive (no toc.dat)" in _failure(refused)
        assert _objects(fresh) == empty


def test_rollback_refuses_when_a_table_was_copied_from_another_snapshot(
    environment: Databases,  # noqa: F811
    servers: EmbeddedCluster,
    new_database: DatabaseFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = new_database(servers["core"])
    empty = _objects(target)
    monkeypatch.setenv("ROLLBACK_DATABASE_URL", target.uri())
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        # One table re-copied alone: its fingerprint is from a newer snapshot than the backup's.
        assert run_job("migrate", instance, ["core/users"]).success
        refused = run_job("rollback", instance)
        assert not refused.success
        text = _failure(refused)
        assert "1 table(s) have no fingerprint from it: users (copied from snapshot" in text, text
    assert _objects(target) == empty


def test_rollback_with_the_source_gone_and_sequences_behind_the_copy(
    environment: Databases,  # noqa: F811
    servers: EmbeddedCluster,
    new_database: DatabaseFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = new_database(servers["core"])
    monkeypatch.setenv("ROLLBACK_DATABASE_URL", target.uri())
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        # The plan's full rollback: the old database is gone. What cannot be reached is not compared.
        monkeypatch.setenv("SOURCE_DATABASE_URL", "postgresql://app:Gone-Pw-3@127.0.0.1:1/railway")
        result = run_job("rollback", instance)
        assert result.success, _failure(result)
        logs = " ".join(entry.user_message for entry in instance.all_logs(result.run_id))
    assert "the source database was not compared with the rollback database (cannot connect to " in logs
    assert "postgresql://app:***@127.0.0.1:1/railway" in logs and "Gone-Pw-3" not in logs
    sequence = TableName("public", "portfolios_id_seq")
    with connection(target, autocommit=True) as conn:
        # The copy read the sequence later than the backup, after the source handed out more values:
        # no restored row uses them, so the restore is still right.
        ahead = restored_matches_snapshot(conn, {}, {sequence: (1000, True)})
        assert ahead.passed
        assert ahead.warnings[0].startswith("portfolios_id_seq: restored at 51 next, the copy recorded 1001")
        # A sequence behind a restored row: the next insert would collide.
        conn.execute("SELECT setval('portfolios_id_seq', 10)")
        behind = restored_matches_snapshot(conn, {}, {sequence: (50, True)})
    assert not behind.passed
    assert behind.failures == [
        "portfolios_id_seq: the restored database would hand out 11 next, but a restored row already uses 50"
    ]
