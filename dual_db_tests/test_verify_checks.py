"""count_parity and checksum_parity (with key-range bisection) against real servers.

Source side: the fingerprint taken on the source (as the copy records it), read through a SELECT-only
role on a read-only session, which is also what the bisection runs on. Target side: a database built
with the same script, then corrupted on purpose.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import psycopg
import pytest

from dual_db.db.catalog import ColumnInfo, table_columns
from dual_db.db.fingerprint import Fingerprint, table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedCluster
from dual_db.verify.bisect import first_differing_range
from dual_db.verify.checks import checksum_parity, count_parity
from dual_db.verify.outcome import CheckOutcome
from dual_db.verify.parity import table_parity
from dual_db_tests.conftest import DatabaseFactory
from dual_db_tests.verify_support import LazyDatabases, run_all, session, source_session

SCRIPT = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
-- composite key (int, text with spaces and quotes), 3000 rows: bisection needs two levels
CREATE TABLE positions (
    portfolio_id int NOT NULL,
    symbol text NOT NULL,
    qty numeric(18,4) NOT NULL,
    price float8,
    mood mood,
    PRIMARY KEY (portfolio_id, symbol)
);
INSERT INTO positions
SELECT g % 7, 'sym ' || g || CASE WHEN g % 5 = 0 THEN ' O''Reilly' ELSE '' END, g * 1.25, g / 3.0,
       (ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3]
FROM generate_series(1, 3000) AS g;
-- uuid key
CREATE TABLE users (id uuid PRIMARY KEY, email text NOT NULL);
INSERT INTO users SELECT md5('u' || g)::uuid, 'user' || g || '@example.com'
FROM generate_series(1, 2000) AS g;
-- text key with double quotes, single quotes and spaces
CREATE TABLE tags (name text PRIMARY KEY, note text);
INSERT INTO tags SELECT 'tag "' || g || '" x''y z', 'n' || g FROM generate_series(1, 1500) AS g;
-- no primary key
CREATE TABLE events (id int, payload text);
INSERT INTO events SELECT g, 'e' || g FROM generate_series(1, 100) AS g;
"""

VECTOR_SCRIPT = """
CREATE EXTENSION vector;
CREATE TABLE ai_kb_documents (id uuid PRIMARY KEY, title text NOT NULL, embedding vector(3));
INSERT INTO ai_kb_documents
SELECT md5('d' || g)::uuid, 'doc ' || g, ARRAY[g, g / 7.0, -g / 3.0]::real[]::vector
FROM generate_series(1, 300) AS g;
"""


@pytest.fixture
def dbs(servers: EmbeddedCluster, new_database: DatabaseFactory) -> LazyDatabases:
    return LazyDatabases(servers, new_database)


def _snapshot(source: DatabaseUrl, tables: list[str]) -> dict[str, tuple[Fingerprint, list[ColumnInfo]]]:
    """What the copy records at the snapshot: each table's columns and fingerprint, read on the source."""
    with source_session(source) as conn:
        out = {}
        for name in tables:
            table = TableName.parse(name)
            columns = table_columns(conn, table)
            out[name] = (table_fingerprint(conn, table, columns), columns)
        return out


@pytest.fixture
def copied(dbs: LazyDatabases) -> LazyDatabases:
    run_all([dbs.source, dbs.core], SCRIPT)
    return dbs


def _check(
    dbs: LazyDatabases,
    table: str,
    recorded: dict[str, tuple[Fingerprint, list[ColumnInfo]]],
    *,
    target: str = "core",
) -> CheckOutcome:
    expected, columns = recorded[table]
    with source_session(dbs.source) as src, session(getattr(dbs, target)) as tgt:
        outcome = checksum_parity(
            expected,
            tgt,
            TableName.parse(table),
            columns,
            source_conn=src,
            source_table=TableName.parse(table),
        )
    json.dumps(outcome.to_dict())  # the Dagster layer stores all of it as metadata
    return outcome


def _differences(outcome: CheckOutcome) -> list[tuple[str, list[str]]]:
    key_range = outcome.metadata["key_range"]
    assert isinstance(key_range, dict)
    return [(d["kind"], d["key"]) for d in key_range["differences"]]  # type: ignore[index,union-attr]


def test_count_parity_passes_on_a_faithful_copy_and_fails_on_a_deleted_or_inserted_row(
    copied: LazyDatabases,
) -> None:
    recorded = _snapshot(copied.source, ["positions", "users"])
    with session(copied.core) as tgt:
        ok = count_parity(
            recorded["positions"][0], tgt, TableName.parse("positions"), recorded["positions"][1]
        )
        assert ok.passed, ok.summary
        assert ok.metadata["target_rows"] == 3000

        tgt.execute("DELETE FROM positions WHERE portfolio_id = 3 AND symbol = 'sym 3 '")  # no such row
        tgt.execute("DELETE FROM positions WHERE portfolio_id = 3 AND symbol = 'sym 10 O''Reilly'")
        deleted = count_parity(recorded["positions"][0], tgt, TableName.parse("positions"))
        assert not deleted.passed
        assert deleted.failures and "positions" in deleted.failures[0] and "1 missing" in deleted.failures[0]
        assert deleted.metadata["missing_rows"] == 1

        tgt.execute("INSERT INTO users VALUES (gen_random_uuid(), 'new@example.com')")
        inserted = count_parity(recorded["users"][0], tgt, TableName.parse("users"))
        assert not inserted.passed and "users" in inserted.summary and inserted.metadata["extra_rows"] == 1

        tgt.execute("DROP TABLE users")
        gone = count_parity(recorded["users"][0], tgt, TableName.parse("users"))
        assert not gone.passed and "missing on target" in gone.summary


def test_checksum_parity_passes_on_a_faithful_copy(copied: LazyDatabases) -> None:
    recorded = _snapshot(copied.source, ["positions", "users", "tags", "events"])
    for table in recorded:
        outcome = _check(copied, table, recorded)
        assert outcome.passed, outcome.summary
        assert outcome.failures == []


def test_checksum_parity_locates_one_changed_numeric_digit_in_a_composite_key(copied: LazyDatabases) -> None:
    recorded = _snapshot(copied.source, ["positions"])
    # g = 1000: portfolio 1000 % 7 = 6, qty 1250.0000 -> 1251.0000, count unchanged
    with session(copied.core) as tgt:
        tgt.execute(
            "UPDATE positions SET qty = 1251 WHERE portfolio_id = 6 AND symbol = 'sym 1000 O''Reilly'"
        )
    outcome = _check(copied, "positions", recorded)
    assert not outcome.passed
    assert outcome.metadata["source_rows"] == outcome.metadata["target_rows"] == 3000
    assert _differences(outcome) == [("changed", ["6", "sym 1000 O'Reilly"])]
    key_range = outcome.metadata["key_range"]
    assert isinstance(key_range, dict)
    assert key_range["key_columns"] == ["portfolio_id", "symbol"]
    assert key_range["source_rows_in_range"] <= 64  # type: ignore[operator]
    assert key_range["depth"] == 2  # 3000 rows -> ~188 -> ~12
    # The range is reported with both bounds, as text, and the failure names table and range.
    assert key_range["lower"] is not None and key_range["upper"] is not None
    assert any(
        "positions" in f and "first differing key range (portfolio_id, symbol) >= ('" in f
        for f in outcome.failures
    )
    # And the reported range really holds the changed row (checked on the source, in key order C).
    lower, upper = key_range["lower"], key_range["upper"]
    with source_session(copied.source) as src:
        inside = src.execute(
            "SELECT ROW(6, 'sym 1000 O''Reilly' COLLATE \"C\") >= ROW(%s::int, %s::text) "
            "AND ROW(6, 'sym 1000 O''Reilly' COLLATE \"C\") < ROW(%s::int, %s::text)",
            [*lower, *upper],  # type: ignore[misc]
        ).fetchone()
    assert inside == (True,)


def test_checksum_parity_locates_a_deleted_row_by_uuid_key(copied: LazyDatabases) -> None:
    recorded = _snapshot(copied.source, ["users"])
    with session(copied.core) as tgt:
        row = tgt.execute("DELETE FROM users WHERE id = md5('u1234')::uuid RETURNING id::text").fetchone()
    assert row is not None
    outcome = _check(copied, "users", recorded)
    assert not outcome.passed
    assert _differences(outcome) == [("missing_in_target", [row[0]])]
    assert any("users" in f and "first differing key range id >= '" in f for f in outcome.failures)


def test_checksum_parity_finds_extra_rows_first_in_key_order_with_quoted_text_keys(
    copied: LazyDatabases,
) -> None:
    recorded = _snapshot(copied.source, ["tags"])
    with session(copied.core) as tgt:
        # one extra row in the middle of the key space, many at its end: the middle one comes first
        tgt.execute("INSERT INTO tags VALUES ('tag \"500\" x''y z!', 'extra')")
        tgt.execute("INSERT INTO tags SELECT 'zz extra ' || g, 'extra' FROM generate_series(1, 2000) AS g")
    outcome = _check(copied, "tags", recorded)
    assert not outcome.passed
    assert _differences(outcome) == [("extra_in_target", ['tag "500" x\'y z!'])]


def test_checksum_parity_narrows_rows_only_the_target_has(copied: LazyDatabases) -> None:
    recorded = _snapshot(copied.source, ["tags"])
    with session(copied.core) as tgt:
        tgt.execute(
            "INSERT INTO tags SELECT 'zz extra ' || lpad(g::text, 4, '0'), 'x' "
            "FROM generate_series(1, 2000) AS g"
        )
    outcome = _check(copied, "tags", recorded)
    key_range = outcome.metadata["key_range"]
    assert isinstance(key_range, dict)
    # The target has 3500 rows, the source 1500: cut at the target's quantiles down to a small range
    # that the source has (almost) nothing in.
    assert key_range["target_rows_in_range"] <= 64  # type: ignore[operator]
    assert _differences(outcome)[0] == ("extra_in_target", ["zz extra 0001"])


def test_checksum_parity_locates_one_changed_embedding_component(dbs: LazyDatabases) -> None:
    run_all([dbs.source, dbs.ai], VECTOR_SCRIPT)
    recorded = _snapshot(dbs.source, ["ai_kb_documents"])
    assert recorded["ai_kb_documents"][1][2].vector_type == "vector"
    with session(dbs.ai) as tgt:
        # g = 42: [42, 6, -14] -> [42, 6.0001, -14]
        tgt.execute("UPDATE ai_kb_documents SET embedding = '[42,6.0001,-14]' WHERE id = md5('d42')::uuid")
        key = tgt.execute("SELECT md5('d42')::uuid::text").fetchone()
    assert key is not None
    outcome = _check(dbs, "ai_kb_documents", recorded, target="ai")
    assert not outcome.passed
    assert outcome.metadata["target_rows"] == 300
    assert _differences(outcome) == [("changed", [key[0]])]
    assert "ai_kb_documents" in outcome.summary


def test_checksum_parity_without_primary_key_reports_the_mismatch_without_a_range(
    copied: LazyDatabases,
) -> None:
    recorded = _snapshot(copied.source, ["events"])
    with session(copied.core) as tgt:
        tgt.execute("UPDATE events SET payload = 'E50' WHERE id = 50")
    outcome = _check(copied, "events", recorded)
    assert not outcome.passed
    assert outcome.metadata["key_range"] is None
    assert any("events" in f and "no primary key" in f for f in outcome.failures)


def test_checksum_parity_reports_a_target_without_a_source_column(copied: LazyDatabases) -> None:
    recorded = _snapshot(copied.source, ["users"])
    with session(copied.core) as tgt:
        tgt.execute("ALTER TABLE users DROP COLUMN email")
        outcome = checksum_parity(recorded["users"][0], tgt, TableName.parse("users"), recorded["users"][1])
        # the failed query ran in a savepoint: the session is still usable
        assert tgt.execute("SELECT 1").fetchone() == (1,)
    assert not outcome.passed and "users" in outcome.summary and "email" in outcome.summary


def test_the_verifier_role_cannot_write_to_the_source(copied: LazyDatabases) -> None:
    """The source-side functions in these tests run as a role that cannot change anything."""
    with source_session(copied.source) as src:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            src.execute("CREATE TEMP TABLE t (a int)")
        src.rollback()
        src.execute("SET TRANSACTION READ WRITE")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            src.execute("DELETE FROM users")


def test_checksum_parity_against_the_source_now_says_when_the_source_moved_on(copied: LazyDatabases) -> None:
    """Without the snapshot, the bisection reads the source as it is now; a table written on both sides
    after the snapshot then matches the source now but not the recorded fingerprint."""
    recorded = _snapshot(copied.source, ["users"])
    change = "UPDATE users SET email = 'changed@example.com' WHERE id = md5('u5')::uuid"
    run_all([copied.source, copied.core], change)
    expected, columns = recorded["users"]
    with source_session(copied.source) as src, session(copied.core) as tgt:
        outcome = checksum_parity(
            expected, tgt, TableName.parse("users"), columns, source_conn=src, source_at_snapshot=False
        )
    assert not outcome.passed
    assert outcome.metadata["compared_against"] == "the source now"
    assert outcome.metadata["source_read_matches_snapshot"] is False
    assert any("users: the target equals the source as read now" in f for f in outcome.failures)
    assert any("has changed since the copy" in w for w in outcome.warnings)


def test_first_differing_range_gives_the_dagster_layer_a_json_summary(copied: LazyDatabases) -> None:
    recorded = _snapshot(copied.source, ["users"])
    columns = recorded["users"][1]
    with source_session(copied.source) as src, session(copied.core) as tgt:
        assert first_differing_range(src, tgt, TableName.parse("users"), columns) is None
        tgt.execute("DELETE FROM users WHERE id = md5('u77')::uuid")
        found = first_differing_range(src, tgt, TableName.parse("users"), columns)
        assert (
            first_differing_range(src, tgt, TableName.parse("events"), recorded["users"][1]) is None
        )  # no key
    assert found is not None
    json.dumps(found)
    assert "id >= '" in str(found["range"]) or "id < '" in str(found["range"])
    deleted = str(uuid.UUID(hashlib.md5(b"u77").hexdigest()))
    assert found["differences"] == [{"kind": "missing_in_target", "key": [deleted]}]


def test_a_recheck_reads_each_target_table_once(copied: LazyDatabases) -> None:
    """`verify` re-checks count and checksum from one fingerprint scan of the target, not two scans."""
    recorded = _snapshot(copied.source, ["positions", "users"])

    def scans() -> dict[str, int]:
        with session(copied.core) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            rows = conn.execute(
                "SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname IN ('positions', 'users')"
            ).fetchall()
        return {name: int(n) for name, n in rows}

    before = scans()
    for name in ("positions", "users"):
        expected, columns = recorded[name]
        outcomes = table_parity(
            expected,
            TableName.parse(name),
            columns,
            source_url=copied.source,
            target_url=copied.core,
            snapshot_id=None,
        )
        assert all(o.passed for o in outcomes.values()), outcomes
        assert outcomes["count_parity"].metadata["target_rows"] == expected.rows
    after = scans()  # table_parity's session has ended: its counters are flushed
    assert {name: after[name] - before[name] for name in after} == {"positions": 1, "users": 1}
