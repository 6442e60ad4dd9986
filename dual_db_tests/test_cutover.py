"""The cutover asset: refused unless the pair is verified and nothing moved; on success, the switch."""

from __future__ import annotations

import stat
from pathlib import Path

import dagster as dg

from dual_db.db.connect import connection
from dual_db_tests.conftest import Databases
from dual_db_tests.job_support import run_job
from dual_db_tests.test_migrate_job import environment  # noqa: F401  (fixture)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(str(e.event_specific_data) for e in result.all_events if e.is_step_failure)


def _marked_cut_over(url) -> bool:  # type: ignore[no-untyped-def]
    from dual_db.schema.ownership import read_marker

    with connection(url) as conn:
        marker = read_marker(conn)
    return bool(marker and marker.cutover_at)


def test_cutover_refuses_after_a_source_write(environment: Databases) -> None:  # noqa: F811
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        with connection(dbs.source, autocommit=True) as conn:
            conn.execute("INSERT INTO users VALUES (gen_random_uuid(), 'late@example.com')")
        refused = run_job("migrate", instance, ["cutover"])
        assert not refused.success
        text = _failure(refused)
        assert "cutover refused" in text and "the source changed since the copy" in text and "users" in text
    assert not _marked_cut_over(dbs.core) and not _marked_cut_over(dbs.ai)


def test_cutover_refuses_after_a_failed_verification_and_a_changed_target(environment: Databases) -> None:  # noqa: F811
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        with connection(dbs.core, autocommit=True) as conn:
            conn.execute("UPDATE positions SET quantity = quantity + 1 WHERE id = 7")
        assert not run_job("verify", instance).success
        refused = run_job("migrate", instance, ["cutover"])
        assert not refused.success
        text = _failure(refused)
        assert "check(s) did not pass" in text and "core/positions:checksum_parity" in text
        assert "the core database no longer holds what was verified: positions" in text
    assert not _marked_cut_over(dbs.core)


def test_cutover_on_a_clean_pair_switches(environment: Databases, tmp_path: Path) -> None:  # noqa: F811
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        assert run_job("migrate", instance).success
        # migrate never cuts over by itself
        assert instance.get_latest_materialization_event(dg.AssetKey("cutover")) is None
        done = run_job("migrate", instance, ["cutover"])
        assert done.success, _failure(done)
        event = instance.get_latest_materialization_event(dg.AssetKey("cutover"))
        assert event is not None and event.asset_materialization is not None
        metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
        assert metadata["DATABASE_URL"] == dbs.core.masked()
        assert metadata["source_commits"] > 0 and "users" in str(metadata["source_change_counters"])
        # The guard checked the source with the snapshot's horizon first; whether that proved it or the
        # tables were read depends on the shared test server's autovacuum (test_drift_proof.py).
        unchanged = metadata["source_unchanged"]
        read = unchanged.startswith("read 9 table(s) (transaction ") and unchanged.endswith("snapshot)")
        assert unchanged.startswith("proved: no transaction has committed") or read, unchanged
        switch = Path(str(metadata["switch_file"]))
        assert stat.S_IMODE(switch.stat().st_mode) == 0o600
        text = switch.read_text()
        assert f"DATABASE_URL={dbs.core.application_url()}" in text
        assert f"AI_DATABASE_URL={dbs.ai.application_url()}" in text
        assert text.count("postgresql+asyncpg://") == 2
        rollback = Path(str(metadata["rollback_file"])).read_text()
        assert (
            f"DATABASE_URL={dbs.source.application_url()}" in rollback and "AI_DATABASE_URL=" not in rollback
        )
        for password in (dbs.source.password, dbs.core.password, dbs.ai.password):
            assert password and password not in str(metadata)
        # From now on the targets are the application's: dual-db refuses to write to them.
        assert _marked_cut_over(dbs.core) and _marked_cut_over(dbs.ai)
        again = run_job("migrate", instance)
        assert not again.success and "was cut over" in _failure(again)
