"""source_drift_now proves a quiet source unchanged from transaction status, without reading its tables,
and reads them whenever anything the snapshot did not see may have committed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from dual_db.cutover import judge
from dual_db.db.catalog import list_tables, table_columns
from dual_db.db.connect import connect
from dual_db.db.fingerprint import Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.snapshot import ExportedSnapshot, SnapshotHolder, TransactionHorizon, snapshot_session
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedServer
from dual_db.verify.drift import source_drift_now
from dual_db.verify.outcome import CheckOutcome
from dual_db_tests.conftest import DatabaseFactory
from dual_db_tests.verify_support import run

SCRIPT = """
CREATE TABLE users (id int PRIMARY KEY, name text);
CREATE TABLE orders (id int PRIMARY KEY, user_id int, total numeric);
INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 50) g;
INSERT INTO orders SELECT g, g % 50 + 1, g * 1.5 FROM generate_series(1, 200) g;
"""


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    # The proof holds only while no transaction commits anywhere on the server; on the shared test
    # servers autovacuum commits an ANALYZE of other tests' tables at any moment, so these tests would
    # pass or fail by chance there.
    server = EmbeddedServer(
        name="quiet", root=tmp_path_factory.mktemp("quiet"), settings={"autovacuum": "off"}
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def source(quiet_server: EmbeddedServer, new_database: DatabaseFactory) -> DatabaseUrl:
    url = new_database(quiet_server)
    run(url, SCRIPT)
    return url


def _at_snapshot(url: DatabaseUrl) -> tuple[ExportedSnapshot, dict[TableName, Fingerprint]]:
    """The snapshot and every table's fingerprint in it, as a copy records them."""
    with SnapshotHolder(url) as exported, snapshot_session(url, exported.snapshot_id) as reader:
        tables = [info.table for info in list_tables(reader)]
        fingerprints = {t: table_fingerprint(reader, t, table_columns(reader, t)) for t in tables}
    return exported, fingerprints


def _seq_scans(url: DatabaseUrl) -> dict[str, int]:
    with connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT relname, seq_scan FROM pg_stat_user_tables").fetchall()
    return {name: int(scans) for name, scans in rows}


def _drift(
    url: DatabaseUrl, exported: ExportedSnapshot, expected: dict[TableName, Fingerprint]
) -> tuple[CheckOutcome, list[TableName]]:
    return source_drift_now(url, expected, workers=2, horizons={t: exported.horizon for t in expected})


def test_a_quiet_source_is_proved_unchanged_without_reading_a_table(source: DatabaseUrl) -> None:
    exported, expected = _at_snapshot(source)
    assert exported.horizon is not None
    before = _seq_scans(source)
    outcome, moved = _drift(source, exported, expected)
    assert outcome.passed and moved == []
    assert outcome.metadata["tables_proven_unchanged"] == 2 and outcome.metadata["tables_read"] == 0
    assert outcome.metadata["unchanged_proof"][0].startswith(  # type: ignore[index]
        "no transaction has committed on the source server since the snapshot"
    )
    assert _seq_scans(source) == before  # no table was read


def test_an_aborted_write_still_proves_nothing_changed(source: DatabaseUrl) -> None:
    exported, expected = _at_snapshot(source)
    with connect(source) as conn:
        conn.execute("INSERT INTO users VALUES (51, 'rolled back')")
        conn.rollback()
    outcome, _ = _drift(source, exported, expected)
    assert outcome.passed and outcome.metadata["tables_proven_unchanged"] == 2


def test_a_write_committed_since_the_snapshot_makes_every_table_be_read(source: DatabaseUrl) -> None:
    exported, expected = _at_snapshot(source)
    run(source, "UPDATE orders SET total = total + 1 WHERE id = 7")
    before = _seq_scans(source)
    outcome, moved = _drift(source, exported, expected)
    assert not outcome.passed and moved == [TableName("public", "orders")]
    assert outcome.metadata["tables_proven_unchanged"] == 0 and outcome.metadata["tables_read"] == 2
    assert outcome.metadata["unchanged_proof"][0].endswith("committed since the snapshot")  # type: ignore[index]
    after = _seq_scans(source)
    assert after["users"] > before["users"] and after["orders"] > before["orders"]


def test_a_transaction_open_at_the_snapshot_that_commits_later_is_found(
    source: DatabaseUrl, quiet_server: EmbeddedServer, new_database: DatabaseFactory
) -> None:
    """A later transaction commits before the snapshot, so the writer's transaction id is below the
    snapshot's xmax: only the snapshot's in-progress list (where the subtransaction's parent is) shows
    that it was not seen."""
    writer = connect(source)
    try:
        writer.execute("SAVEPOINT s")
        writer.execute("INSERT INTO users VALUES (52, 'written in a subtransaction before the snapshot')")
        writer.execute("RELEASE SAVEPOINT s")
        run(new_database(quiet_server), "CREATE TABLE later (id int)")
        exported, expected = _at_snapshot(source)
        assert exported.horizon is not None and not exported.horizon.transactions.endswith(":")
        writer.commit()
    finally:
        writer.close()
    outcome, moved = _drift(source, exported, expected)
    assert not outcome.passed and moved == [TableName("public", "users")]
    assert outcome.metadata["tables_proven_unchanged"] == 0


def test_a_write_on_another_database_of_the_server_makes_the_tables_be_read(
    source: DatabaseUrl, quiet_server: EmbeddedServer, new_database: DatabaseFactory
) -> None:
    """Transaction ids are the cluster's: the proof cannot tell which database a commit wrote to, so it
    does not hold, and the tables (unchanged) are read."""
    exported, expected = _at_snapshot(source)
    run(new_database(quiet_server), "CREATE TABLE elsewhere (id int)")
    outcome, moved = _drift(source, exported, expected)
    assert outcome.passed and moved == []
    assert outcome.metadata["tables_proven_unchanged"] == 0 and outcome.metadata["tables_read"] == 2


@pytest.mark.parametrize(
    ("field", "recorded", "reason"),
    [
        # transaction ids mean something only on their own cluster
        ("system_identifier", "1", "the source is cluster {now}, the snapshot was taken on 1"),
        # databases of one cluster share its ids: a source URL changed to another database there must not
        # be proved unchanged against the first one's fingerprints
        ("database_oid", "1", "the source is database {now}, the snapshot was taken in database 1"),
        # crash recovery empties unlogged tables without any transaction
        (
            "server_started_at",
            "2000-01-01 00:00:00+00",
            "the source server has restarted since the snapshot (a crash recovery empties unlogged tables)",
        ),
    ],
)
def test_a_horizon_from_elsewhere_or_before_a_restart_proves_nothing(
    source: DatabaseUrl, field: str, recorded: str, reason: str
) -> None:
    exported, expected = _at_snapshot(source)
    assert exported.horizon is not None
    now = getattr(exported.horizon, field)
    elsewhere = replace(exported, horizon=replace(exported.horizon, **{field: recorded}))
    outcome, _ = _drift(source, elsewhere, expected)
    assert outcome.passed and outcome.metadata["tables_proven_unchanged"] == 0
    assert outcome.metadata["unchanged_proof"] == [reason.format(now=now)]  # type: ignore[comparison-overlap]


def test_tables_without_a_recorded_horizon_are_read(source: DatabaseUrl) -> None:
    """Records written before dual-db kept the horizon."""
    _, expected = _at_snapshot(source)
    outcome, _ = source_drift_now(source, expected, workers=2)
    assert outcome.passed and outcome.metadata["tables_read"] == 2


def test_the_horizon_is_the_exported_snapshots_own(source: DatabaseUrl) -> None:
    with connect(source, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()), "
            "(SELECT oid::text FROM pg_database WHERE datname = current_database()), "
            "pg_postmaster_start_time()::text"
        ).fetchone()
    assert row is not None
    with SnapshotHolder(source) as exported, snapshot_session(source, exported.snapshot_id) as reader:
        seen = reader.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert seen is not None
    assert exported.horizon == TransactionHorizon(
        transactions=seen[0], system_identifier=row[0], database_oid=row[1], server_started_at=row[2]
    )


def test_the_cutover_guard_proves_a_quiet_source_unchanged(source: DatabaseUrl) -> None:
    exported, expected = _at_snapshot(source)
    horizons = {t: exported.horizon for t in expected}
    verdict = judge(source, {}, {"core": expected}, workers=2, horizons=horizons)
    assert verdict.ready and verdict.source_unchanged_by.startswith("proved: no transaction has committed")
    run(source, "DELETE FROM users WHERE id = 3")
    refused = judge(source, {}, {"core": expected}, workers=2, horizons=horizons)
    assert not refused.ready and refused.source_moved == [TableName("public", "users")]
    assert refused.source_unchanged_by.startswith("read 2 table(s) (transaction ")
