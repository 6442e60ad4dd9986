"""Re-runs touch only what dual-db created, keep the previous good copy, and stop at a cutover."""

from __future__ import annotations

import threading
import time

import dagster as dg

from dual_db.db.connect import connection
from dual_db.schema.ownership import mark_cut_over
from dual_db_tests.conftest import Databases
from dual_db_tests.job_support import run_job
from dual_db_tests.test_migrate_job import environment  # noqa: F401  (fixture)

FOREIGN_SQL = """
CREATE SCHEMA app_extra;
CREATE TABLE app_extra.audit_log (id serial PRIMARY KEY, note text);
INSERT INTO app_extra.audit_log (note) SELECT 'written by the app ' || i FROM generate_series(1, 25) i;
CREATE TABLE public.cutover_notes (note text);
INSERT INTO public.cutover_notes VALUES ('do not lose me');
"""


def _count(url, table: str) -> int:  # type: ignore[no-untyped-def]
    with connection(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 (test constant)
        return int(row[0]) if row else -1


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(str(e.event_specific_data) for e in result.all_events if e.is_step_failure)


def _summary(instance: dg.DagsterInstance) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey("verification_report"))
    assert event is not None and event.asset_materialization is not None
    return str(event.asset_materialization.metadata["summary"].value)


def test_a_rerun_leaves_tables_dual_db_did_not_create_alone(environment: Databases) -> None:  # noqa: F811
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        with connection(dbs.core, autocommit=True) as conn:
            conn.execute(FOREIGN_SQL)  # type: ignore[arg-type]

        # Same schema: the previous copy is kept and replaced table by table.
        again = run_job("migrate", instance)
        assert again.success, _failure_text(again)
        assert _count(dbs.core, "app_extra.audit_log") == 25
        assert _count(dbs.core, "public.cutover_notes") == 1
        schema = instance.get_latest_materialization_event(dg.AssetKey(["core", "core_schema"]))
        assert schema is not None and schema.asset_materialization is not None
        metadata = schema.asset_materialization.metadata
        assert metadata["schema_kept"].value is True
        assert metadata["left_alone"].value == ["app_extra.audit_log", "cutover_notes"]

        # The source schema changed: dual-db's own objects are rebuilt, the others still left alone.
        with connection(dbs.source, autocommit=True) as conn:
            conn.execute("ALTER TABLE positions ADD COLUMN note text DEFAULT 'new'")
        rebuilt = run_job("migrate", instance)
        assert rebuilt.success, _failure_text(rebuilt)
        assert _count(dbs.core, "app_extra.audit_log") == 25
        assert _count(dbs.core, "public.cutover_notes") == 1
        with connection(dbs.core) as conn:
            assert conn.execute("SELECT count(note) FROM positions").fetchone() == (4000,)
        assert _summary(instance) == "9/9 tables identical, 0 rows missing"


def test_rematerializing_the_schema_keeps_the_previous_copy(environment: Databases) -> None:  # noqa: F811
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        assert run_job("migrate", instance, ["core/core_schema"]).success
        # Nothing was dropped: rows and indexes of the previous copy are all there.
        assert _count(dbs.core, "positions") == 4000
        with connection(dbs.core) as conn:
            assert conn.execute("SELECT to_regclass('public.ix_positions_symbol')").fetchone() == (
                "ix_positions_symbol",
            )


def _terminate_the_first_blocked_copy(url, stop: threading.Event, killed: list[int]) -> None:  # type: ignore[no-untyped-def]
    """Hold a lock on positions; kill the first dual-db session that waits for it, then let go."""
    with connection(url) as holder, connection(url, autocommit=True) as watcher:
        holder.execute("LOCK TABLE positions IN ACCESS SHARE MODE")
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'dual-db%%' "
                "AND wait_event_type = 'Lock' AND datname = current_database() LIMIT 1"
            ).fetchone()
            if row:
                watcher.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                killed.append(int(row[0]))
                break
            time.sleep(0.05)
        holder.rollback()


def test_a_failed_rerun_keeps_the_previous_contents(environment: Databases) -> None:  # noqa: F811
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        with connection(dbs.core, autocommit=True) as conn:
            conn.execute("DELETE FROM users WHERE false")  # nothing: the data stays as copied
        stop, killed = threading.Event(), []
        killer = threading.Thread(target=_terminate_the_first_blocked_copy, args=(dbs.core, stop, killed))
        killer.start()
        try:
            failed = run_job("migrate", instance)
        finally:
            stop.set()
            killer.join()
        assert killed, "no dual-db session waited for the lock on positions"
        assert not failed.success
        text = _failure_text(failed)
        assert "positions" in text and "keeps its previous contents" in text
        # The table whose copy was killed, and every other table, still hold the previous copy.
        assert _count(dbs.core, "positions") == 4000
        assert _count(dbs.core, "users") == 50
        assert _count(dbs.ai, "ai_kb_documents") == 500

        # Redo only what failed (the UI's "materialize failed"): that table alone, then verify all.
        redo = run_job("migrate", instance, ["core/positions"])
        assert redo.success, _failure_text(redo)
        materialized = {e.asset_key.to_user_string() for e in redo.get_asset_materialization_events()}
        assert materialized == {"core/positions"}
        assert _count(dbs.core, "positions") == 4000
        assert run_job("verify", instance).success
        assert _summary(instance) == "9/9 tables identical, 0 rows missing"


def test_after_cutover_every_write_is_refused(environment: Databases) -> None:  # noqa: F811
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        with connection(dbs.core, autocommit=True) as conn:
            mark_cut_over(conn)
            conn.execute("INSERT INTO users VALUES (gen_random_uuid(), 'after-cutover@example.com')")

        refused = run_job("migrate", instance)
        assert not refused.success
        assert "was cut over" in _failure_text(refused)
        one_table = run_job("migrate", instance, ["core/users"])
        assert not one_table.success
        assert "was cut over" in _failure_text(one_table)
        # The application's write is still there.
        assert _count(dbs.core, "users") == 51


def test_guards_run_before_the_backup(environment: Databases, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A refused run (here: vector already in core) dumps nothing: the guards run first."""
    with connection(environment.core, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    with dg.DagsterInstance.ephemeral() as instance:
        refused = run_job("migrate", instance)
        assert not refused.success
        assert "already has the vector extension" in _failure_text(refused)
    assert not list((tmp_path / ".dual_db" / "dumps").glob("*/full_backup"))


def test_backups_are_kept_to_keep_backups(environment: Databases, tmp_path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from dual_db.definitions import build_definitions
    from dual_db.routing import RoutingPlan

    job = build_definitions(RoutingPlan.load()).resolve_job_def("migrate")
    config = {"resources": {"settings": {"config": {"keep_backups": 2}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(3):
            assert job.execute_in_process(instance=instance, run_config=config).success
    assert len(list((tmp_path / ".dual_db" / "dumps").glob("*/full_backup"))) == 2


def test_the_source_snapshot_is_released_after_the_last_copy(environment: Databases) -> None:  # noqa: F811
    """The snapshot holds back the source's vacuum and locks every table: it must be gone before
    indexes are built and checks run, not held to the end of the run."""
    seen_at: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        with connection(environment.source, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dual-db snapshot'"
                ).fetchone()
                if row and row[0]:
                    seen_at.append(time.time())
                time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            result = run_job("migrate", instance)
            assert result.success
            starts = {
                e.step_key: e.timestamp
                for e in instance.all_logs(result.run_id)
                if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_START
            }
    finally:
        stop.set()
        watcher.join()
    assert seen_at, "the snapshot session was never seen"
    first_post_data = min(starts["core__post_data"], starts["ai__vector_indexes"])
    assert max(seen_at) < first_post_data
