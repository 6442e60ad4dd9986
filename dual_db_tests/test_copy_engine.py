"""The copy engine against real servers: one snapshot, atomic replacement, no cascades, tricky names."""

from __future__ import annotations

import psycopg
import pytest

from dual_db.copy.engine import CopyError, CopyProgress, align_all_sequences, copy_table, copy_tables
from dual_db.db.connect import connection
from dual_db.db.fingerprint import table_fingerprint
from dual_db.db.names import TableName
from dual_db.db.snapshot import SnapshotHolder, close_snapshot_session, snapshot_session_connection
from dual_db_tests.conftest import Databases

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE SCHEMA "Analytics";
CREATE TABLE "Analytics"."Daily P&L" (
    id serial PRIMARY KEY, "select" text, m mood, moods mood[], amount numeric(18,4),
    doubled int GENERATED ALWAYS AS (id * 2) STORED, at timestamptz
);
CREATE TABLE parent (id uuid PRIMARY KEY, name text);
CREATE TABLE child (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id uuid REFERENCES parent(id) ON DELETE CASCADE, note text, v vector(3)
);
CREATE TABLE "order" (k text PRIMARY KEY, "group" jsonb);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.name := 'rewritten by trigger'; RETURN NEW; END $$;
"""

DATA = """
INSERT INTO "Analytics"."Daily P&L" ("select", m, moods, amount, at)
SELECT 'row ' || i, 'happy', '{happy,sad}', i * 1.5, '2024-01-01'::timestamptz + i * interval '1 minute'
FROM generate_series(1, 5000) i;
INSERT INTO parent SELECT md5(i::text)::uuid, 'p' || i FROM generate_series(1, 300) i;
INSERT INTO child (parent_id, note, v)
SELECT p.id, 'n', ARRAY[g, g + 0.5, -g]::vector FROM parent p, generate_series(1, 10) g;
INSERT INTO "order" VALUES ('a b', '{"x": 1}'), ('ü "quoted"', '[]'), ('', 'null');
"""

TABLES = [
    TableName("Analytics", "Daily P&L"),
    TableName("public", "parent"),
    TableName("public", "child"),
    TableName("public", "order"),
]


@pytest.fixture
def pair(databases: Databases) -> Databases:
    for url in (databases.source, databases.core):
        with connection(url, autocommit=True) as conn:
            conn.execute(SCHEMA)  # type: ignore[arg-type]
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(DATA)  # type: ignore[arg-type]
    return databases


def _fingerprints(url, tables):  # type: ignore[no-untyped-def]
    with connection(url) as conn:
        return {t: table_fingerprint(conn, t) for t in tables}


def test_copies_every_table_identically_from_one_snapshot(pair: Databases) -> None:
    with SnapshotHolder(pair.source, lock_tables=TABLES) as snapshot:
        # Written after the snapshot was exported: must not reach the target.
        with connection(pair.source, autocommit=True) as conn:
            conn.execute("INSERT INTO parent VALUES (gen_random_uuid(), 'late')")
            conn.execute("INSERT INTO child (parent_id, note) SELECT id, 'late' FROM parent LIMIT 1")
        run = copy_tables(pair.source, pair.core, TABLES, snapshot_id=snapshot.snapshot_id, workers=3)
    assert run.ok, run.errors
    by_table = {r.table: r for r in run.results}
    assert by_table[TableName("public", "parent")].rows == 300
    assert by_table[TableName("public", "child")].rows == 3000
    for result in run.results:
        assert result.snapshot_id == snapshot.snapshot_id
        assert result.source_fingerprint == result.target_fingerprint
    # arrays of an enum carry server-specific OIDs in binary: that table must travel as text
    assert by_table[TableName("Analytics", "Daily P&L")].copy_format == "text"
    assert by_table[TableName("public", "child")].copy_format == "binary"
    with connection(pair.core) as conn:
        assert conn.execute("SELECT count(*) FROM parent WHERE name = 'late'").fetchone() == (0,)
        # the generated column is computed by the target, not copied
        assert conn.execute('SELECT bool_and(doubled = id * 2) FROM "Analytics"."Daily P&L"').fetchone() == (
            True,
        )
        # identity and serial sequences continue after the source's, not at 1. Sequences are not
        # transactional: the late insert's id (3001) is already taken on the source, so 3002.
        assert conn.execute("SELECT nextval(pg_get_serial_sequence('child', 'id'))").fetchone() == (3002,)
        assert conn.execute(
            """SELECT nextval(pg_get_serial_sequence('"Analytics"."Daily P&L"', 'id'))"""
        ).fetchone() == (5001,)


def test_progress_and_timings_are_reported_as_tables_land(pair: Databases) -> None:
    """Each table landing is reported (tables done of the total, bytes streamed so far), and so is the
    stream itself between landings; each table's seconds split into fingerprints and the COPY."""
    reports: list[CopyProgress] = []
    run = copy_tables(
        pair.source,
        pair.core,
        TABLES,
        snapshot_id=None,
        workers=2,
        on_progress=reports.append,
        progress_every=0,
    )
    assert run.ok, run.errors
    landed = [r for r in reports if r.landed is not None]
    assert [r.tables_done for r in landed] == [1, 2, 3, 4]
    assert all(r.tables_total == 4 for r in reports)
    assert {r.landed.table for r in landed if r.landed} == set(TABLES)
    # between landings: the stream, with the table(s) in flight
    assert any(r.landed is None and r.in_flight and r.bytes_streamed > 0 for r in reports)
    assert landed[-1].bytes_streamed == sum(r.bytes for r in run.results)
    streamed = [r.bytes_streamed for r in reports]
    assert streamed == sorted(streamed)
    for result in run.results:
        parts = result.source_fingerprint_seconds + result.copy_seconds + result.target_fingerprint_seconds
        assert result.source_fingerprint_seconds > 0 and result.copy_seconds > 0
        assert result.target_fingerprint_seconds > 0 and parts <= result.seconds
        assert result.size_bytes > 0
        assert result.rows_per_second == pytest.approx(result.rows / result.copy_seconds)


def test_rerun_replaces_rows_without_duplicates(pair: Databases) -> None:
    first = copy_tables(pair.source, pair.core, TABLES, snapshot_id=None)
    second = copy_tables(pair.source, pair.core, TABLES, snapshot_id=None)
    assert first.ok and second.ok
    assert {r.table: r.replaced_rows for r in second.results} == {r.table: r.rows for r in first.results}
    assert _fingerprints(pair.core, TABLES) == _fingerprints(pair.source, TABLES)


def test_single_table_recopy_touches_no_other_table(pair: Databases) -> None:
    assert copy_tables(pair.source, pair.core, TABLES, snapshot_id=None).ok
    with connection(pair.core, autocommit=True) as conn:
        # post-data as after a migration: the foreign key with ON DELETE CASCADE and a trigger exist
        conn.execute(
            "ALTER TABLE child ADD CONSTRAINT child_parent_fk FOREIGN KEY (parent_id) "
            "REFERENCES parent(id) ON DELETE CASCADE"
        )
        conn.execute(
            "CREATE TRIGGER parent_touch BEFORE INSERT ON parent FOR EACH ROW EXECUTE FUNCTION touch()"
        )
        conn.execute(
            "DELETE FROM parent WHERE id IN (SELECT id FROM parent WHERE NOT EXISTS "
            "(SELECT 1 FROM child WHERE child.parent_id = parent.id) LIMIT 1)"
        )
        conn.execute("ALTER TABLE child DROP CONSTRAINT child_parent_fk")
        conn.execute("DELETE FROM parent WHERE name IN ('p1', 'p2')")  # children now dangle
        conn.execute(
            "ALTER TABLE child ADD CONSTRAINT child_parent_fk FOREIGN KEY (parent_id) "
            "REFERENCES parent(id) ON DELETE CASCADE NOT VALID"
        )
        child_xmins = conn.execute("SELECT id, xmin::text FROM child ORDER BY id").fetchall()
    run = copy_tables(pair.source, pair.core, [TableName("public", "parent")], snapshot_id=None)
    assert run.ok, run.errors
    (result,) = run.results
    assert result.empty_method == "delete"  # TRUNCATE would refuse (or cascade) with the FK in place
    assert result.replaced_rows == 298 and result.rows == 300
    with connection(pair.core) as conn:
        assert conn.execute("SELECT id, xmin::text FROM child ORDER BY id").fetchall() == child_xmins
        assert conn.execute("SELECT count(*) FROM parent WHERE name = 'rewritten by trigger'").fetchone() == (
            0,
        )
        assert conn.execute(
            "SELECT count(*) FROM child c WHERE NOT EXISTS (SELECT 1 FROM parent p WHERE p.id = c.parent_id)"
        ).fetchone() == (0,)
    assert _fingerprints(pair.core, [TableName("public", "parent")]) == _fingerprints(
        pair.source, [TableName("public", "parent")]
    )


def test_failed_load_keeps_previous_contents(pair: Databases) -> None:
    assert copy_tables(pair.source, pair.core, TABLES, snapshot_id=None).ok
    before = _fingerprints(pair.core, [TableName("public", "order")])
    with connection(pair.core, autocommit=True) as conn:
        conn.execute('ALTER TABLE "order" ADD CONSTRAINT short_keys CHECK (length(k) < 4) NOT VALID')
    run = copy_tables(pair.source, pair.core, [TableName("public", "order")], snapshot_id=None)
    assert not run.ok
    assert "short_keys" in str(run.errors[TableName("public", "order")])
    assert _fingerprints(pair.core, [TableName("public", "order")]) == before


def test_missing_target_table_and_column_fail_by_name(pair: Databases) -> None:
    with connection(pair.core, autocommit=True) as conn:
        conn.execute('DROP TABLE "order"')
        conn.execute("ALTER TABLE parent DROP COLUMN name")
    run = copy_tables(
        pair.source,
        pair.core,
        [TableName("public", "order"), TableName("public", "parent")],
        snapshot_id=None,
    )
    assert isinstance(run.errors[TableName("public", "order")], CopyError)
    assert "does not exist in the target" in str(run.errors[TableName("public", "order")])
    assert "lacks column(s) name" in str(run.errors[TableName("public", "parent")])


def test_source_sessions_are_read_only(pair: Databases) -> None:
    with SnapshotHolder(pair.source) as snapshot:
        from dual_db.db.snapshot import snapshot_session

        with snapshot_session(pair.source, snapshot.snapshot_id) as conn:
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("DELETE FROM parent")


def test_align_all_sequences_sets_standalone_sequences(pair: Databases) -> None:
    for url in (pair.source, pair.core):
        with connection(url, autocommit=True) as conn:
            conn.execute("CREATE SEQUENCE invoice_numbers START 1000")
    with connection(pair.source, autocommit=True) as conn:
        conn.execute("SELECT setval('invoice_numbers', 4242)")
    with connection(pair.source, read_only=True) as src, connection(pair.core, autocommit=True) as tgt:
        aligned = align_all_sequences(src, tgt)
        assert TableName("public", "invoice_numbers") in {s.sequence for s in aligned}
        assert tgt.execute("SELECT nextval('invoice_numbers')").fetchone() == (4243,)


def _limited_role(url, name: str, limit: int):  # type: ignore[no-untyped-def]
    """A non-superuser login role on `url`'s server allowed `limit` connections, owning the tables."""
    from dataclasses import replace

    password = "Limited-Pass-1"
    with connection(url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' CONNECTION LIMIT {limit}")
        conn.execute(f'GRANT CONNECT, CREATE ON DATABASE "{url.dbname}" TO {name}')
        conn.execute(f'GRANT USAGE ON SCHEMA public, "Analytics" TO {name}')
        conn.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public, "Analytics" TO {name}')
        conn.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public, "Analytics" TO {name}')
        # What a managed service's admin grants so that loads skip triggers and FK checks.
        conn.execute(f"GRANT SET ON PARAMETER session_replication_role TO {name}")
    return replace(url, user=name, password=password)


def test_a_worker_that_cannot_connect_loses_no_table(pair: Databases) -> None:
    """More copy workers than the target role may open connections: every table is still copied by the
    workers that did connect, and none is silently left out."""
    limited = _limited_role(pair.core, "limited_loader", 2)
    try:
        with SnapshotHolder(pair.source, lock_tables=TABLES) as snapshot:
            run = copy_tables(pair.source, limited, TABLES, snapshot_id=snapshot.snapshot_id, workers=4)
        assert run.ok, run.errors
        assert sorted(r.table for r in run.results) == sorted(TABLES)
        assert run.warnings and "limited_loader" in run.warnings[0]
        for result in run.results:
            assert result.source_fingerprint == result.target_fingerprint
    finally:
        with connection(pair.core, autocommit=True) as conn:
            conn.execute("REVOKE SET ON PARAMETER session_replication_role FROM limited_loader")
            conn.execute("DROP OWNED BY limited_loader")
            conn.execute("DROP ROLE limited_loader")


def test_every_table_is_accounted_for_when_no_worker_can_connect(pair: Databases) -> None:
    from dataclasses import replace

    dead = replace(pair.core, port=1)
    with SnapshotHolder(pair.source, lock_tables=TABLES) as snapshot:
        run = copy_tables(pair.source, dead, TABLES, snapshot_id=snapshot.snapshot_id, workers=3)
    assert not run.ok and not run.results
    assert sorted(run.errors) == sorted(TABLES)
    assert all("127.0.0.1:1" in str(e) for e in run.errors.values())


def test_a_table_named_like_an_injection_is_just_a_name(pair: Databases) -> None:
    from psycopg import sql

    hostile = TableName("Odd Schema", 'x"; DROP TABLE parent; --')
    for url in (pair.source, pair.core):
        with connection(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(hostile.schema)))
            conn.execute(sql.SQL('CREATE TABLE {} (id int, "select" text)').format(hostile.ident))
    with connection(pair.source, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT i, 'v' || i FROM generate_series(1, 50) i").format(hostile.ident)
        )
    with SnapshotHolder(pair.source, lock_tables=[hostile]) as snapshot:
        run = copy_tables(pair.source, pair.core, [hostile], snapshot_id=snapshot.snapshot_id)
    assert run.ok, run.errors
    assert (
        run.results[0].rows == 50 and run.results[0].source_fingerprint == run.results[0].target_fingerprint
    )
    with connection(pair.core) as conn:
        assert conn.execute("SELECT to_regclass('public.parent')").fetchone() == ("parent",)


def test_a_large_tables_source_fingerprint_runs_beside_its_copy_in_the_snapshot(pair: Databases) -> None:
    """Tables from `parallel_fingerprint_bytes` on are fingerprinted on a second source session while
    their COPY streams; that session reads the same snapshot (rows written later are in neither)."""
    sizes = {TableName("public", "child"): 10, TableName("public", "parent"): 10}
    with SnapshotHolder(pair.source, lock_tables=TABLES) as snapshot:
        with connection(pair.source, autocommit=True) as conn:
            conn.execute("INSERT INTO child (parent_id, note) SELECT id, 'late' FROM parent LIMIT 5")
        run = copy_tables(
            pair.source,
            pair.core,
            TABLES,
            snapshot_id=snapshot.snapshot_id,
            workers=2,
            sizes=sizes,
            parallel_fingerprint_bytes=10,
        )
    assert run.ok, run.errors
    beside = {r.table.name: r.fingerprint_beside_copy for r in run.results}
    assert beside == {"Daily P&L": False, "parent": True, "child": True, "order": False}
    for result in run.results:
        assert result.source_fingerprint == result.target_fingerprint, result.table
    assert {r.table.name: r.rows for r in run.results}["child"] == 3000


def test_the_fingerprint_beside_the_copy_overlaps_it(databases: Databases) -> None:
    """While the COPY streams, the second session is busy hashing the same table."""
    table = TableName("public", "wide")
    for url in (databases.source, databases.core):
        with connection(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE wide (id int PRIMARY KEY, a text, b text, c numeric)")
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO wide SELECT g, md5(g::text), repeat(md5((g * 7)::text), 3), g / 3.0 "
            "FROM generate_series(1, 300000) g"
        )
    seen: list[str] = []
    with SnapshotHolder(databases.source, lock_tables=[table]) as snapshot:
        src = snapshot_session_connection(databases.source, snapshot.snapshot_id)
        beside = snapshot_session_connection(databases.source, snapshot.snapshot_id)
        watcher = psycopg.connect(databases.source.uri(), autocommit=True)
        try:

            def watch(_nbytes: int) -> None:
                row = watcher.execute(
                    "SELECT state FROM pg_stat_activity WHERE pid = %s", (beside.info.backend_pid,)
                ).fetchone()
                seen.append(row[0] if row else "gone")

            with connection(databases.core, autocommit=True) as tgt:
                result = copy_table(
                    src,
                    tgt,
                    table,
                    snapshot_id=snapshot.snapshot_id,
                    block_callback=watch,
                    fingerprint_session=beside,
                )
        finally:
            watcher.close()
            close_snapshot_session(beside)
            close_snapshot_session(src)
    assert result.fingerprint_beside_copy and result.rows == 300000
    assert result.source_fingerprint == result.target_fingerprint
    assert "active" in seen, seen[:10]
