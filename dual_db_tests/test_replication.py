"""The logical-replication catch-up engine (dual_db.replication) on the embedded servers.

The session's source server runs with wal_level=logical (dual_db.embedded.ROLE_SETTINGS); the core
server keeps the default wal_level=replica, which the source guard must refuse.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from dual_db.cli import main
from dual_db.copy.engine import copy_table
from dual_db.db.connect import connection
from dual_db.db.names import TableName
from dual_db.db.snapshot import SnapshotLost, snapshot_session
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedCluster
from dual_db.replication import guards
from dual_db.replication.cleanup import cleanup_source, cleanup_target
from dual_db.replication.names import ReplicationNameError, ReplicationNames, is_dual_db_name, run_token
from dual_db.replication.slot import SlotError, SlotHolder, create_publication, start_catch_up
from dual_db.replication.subscribe import SubscriptionError, create_subscription, lag, wait_until_flushed

from .conftest import Databases


def _run(url: DatabaseUrl, statements: str | sql.Composable) -> None:
    with connection(url, autocommit=True) as conn:
        conn.execute(statements)


@pytest.fixture
def login_role(servers: EmbeddedCluster) -> Iterator[tuple[str, str]]:
    """A fresh login role (name, password) on every server, dropped afterwards."""
    name, password = f"dd_role_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    for role in ("source", "core", "ai"):
        with connection(servers[role].url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
    yield name, password
    for role in ("source", "core", "ai"):
        with connection(servers[role].url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def replication(databases: Databases) -> Iterator[Databases]:
    """`databases`, and afterwards every subscription on the targets and every slot of the source
    database dropped, whatever their names (a database with either cannot be dropped), by hand: the
    engine's own cleanup is under test."""
    yield databases
    for url in (databases.core, databases.ai):
        with connection(url, autocommit=True) as conn:
            subs = conn.execute(
                "SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
                " WHERE d.datname = current_database()"
            ).fetchall()
            for (name,) in subs:
                ident = sql.Identifier(name)
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
                conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
    with connection(databases.source, autocommit=True) as conn:
        deadline = time.monotonic() + 20
        while True:
            slots = conn.execute(
                "SELECT slot_name, active FROM pg_replication_slots WHERE database = current_database()"
            ).fetchall()
            idle = [name for name, active in slots if not active]
            for name in idle:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
            if len(idle) == len(slots) or time.monotonic() > deadline:
                break
            time.sleep(0.2)


def _rows(url: DatabaseUrl, query: str) -> list[tuple[object, ...]]:
    with connection(url) as conn:
        return list(conn.execute(query).fetchall())


# ---- names --------------------------------------------------------------------------------------


def test_names_carry_the_prefix_and_the_run_and_only_they_are_dual_dbs() -> None:
    names = ReplicationNames(run_token("6F1C2A3B-44d5-4e6f-8a9b-0c1d2e3f4a5b"), "core")
    assert names.publication == "dual_db_6f1c2a3b44d5_core_pub"
    assert names.slot == "dual_db_6f1c2a3b44d5_core_slot"
    assert names.subscription == "dual_db_6f1c2a3b44d5_core_sub"
    for name in (names.publication, names.slot, names.subscription):
        assert is_dual_db_name(name)
    assert is_dual_db_name(names.slot, "slot") and not is_dual_db_name(names.slot, "pub")
    for foreign in ("dual_db_", "dual_db_x", "my_slot", "dual_db_abc_core_slot_old", "DUAL_DB_abc_core_slot"):
        assert not is_dual_db_name(foreign), foreign
    with pytest.raises(ReplicationNameError):
        ReplicationNames("Bad-Token", "core")


# ---- guards -------------------------------------------------------------------------------------


def test_source_guard_finds_what_logical_replication_needs(databases: Databases) -> None:
    _run(
        databases.source,
        "CREATE TABLE keyed (id int PRIMARY KEY, v text);"
        "CREATE TABLE by_index (a int NOT NULL, b text);"
        "CREATE UNIQUE INDEX by_index_a ON by_index (a);"
        "ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_a;"
        "CREATE TABLE whole (a int, b text); ALTER TABLE whole REPLICA IDENTITY FULL;"
        "CREATE TABLE keyless (a int, b text);",
    )
    tables = [TableName("public", t) for t in ("keyed", "by_index", "whole")]
    with connection(databases.source) as conn:
        facts = guards.check_source(conn, tables)
        assert facts.ok, facts.problems
        assert facts.wal_level == "logical" and facts.replication_privilege == "superuser"
        assert facts.max_replication_slots == 10 and facts.max_wal_senders == 10
        assert [t.replica_identity for t in facts.tables] == ["default", "index", "full"]
        # The embedded default: unlimited, which is reported and warned about, not refused.
        assert facts.max_slot_wal_keep_size_bytes is None
        assert any("max_slot_wal_keep_size is -1" in w for w in facts.warnings)

        refused = guards.check_source(conn, [*tables, TableName("public", "keyless")])
        assert len(refused.problems) == 1
        line = refused.problems[0]
        assert "public.keyless" in line and "REPLICA IDENTITY DEFAULT" in line
        assert "REPLICA IDENTITY FULL is possible only on request" in line and "WAL" in line
        with pytest.raises(guards.ReplicationRefused, match=r"public\.keyless"):
            guards.require_source(conn, [TableName("public", "keyless")])

        too_many = guards.check_source(conn, tables, slots_needed=11)
        assert any(p.startswith("max_replication_slots is 10") for p in too_many.problems)
        assert any(p.startswith("max_wal_senders is 10") for p in too_many.problems)


def test_why_a_keyless_table_is_refused_its_updates_fail_on_the_source_once_published(
    replication: Databases,
) -> None:
    """The trap the replica-identity guard prevents, measured: not dual-db's behaviour, PostgreSQL's."""
    _run(replication.source, "CREATE TABLE keyless (a int, b text); INSERT INTO keyless VALUES (1, 'x')")
    with connection(replication.source, autocommit=True) as conn:
        create_publication(
            conn, ReplicationNames("trap1", "core").publication, [TableName("public", "keyless")]
        )
        conn.execute("INSERT INTO keyless VALUES (2, 'y')")  # inserts still work
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="replica identity"):
            conn.execute("UPDATE keyless SET b = 'z' WHERE a = 1")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="replica identity"):
            conn.execute("DELETE FROM keyless WHERE a = 1")


def test_wal_held_back_during_the_copy_is_measured_against_the_keep_size(databases: Databases) -> None:
    _run(databases.source, "CREATE TABLE w (id int, pad text)")
    stop = threading.Event()

    def write() -> None:
        with connection(databases.source, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO w SELECT i, repeat('x', 200) FROM generate_series(1, 500) i")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        with connection(databases.source, autocommit=True) as conn:
            rate = guards.measure_wal_rate(conn, seconds=1.0)
            facts = guards.check_source(conn, [])
    finally:
        stop.set()
        writer.join()
    assert rate > 10_000  # bytes per second: 500 rows of ~230 bytes per statement
    unlimited = guards.wal_hold(facts, rate, copy_seconds=60)
    assert unlimited.problem is None and "unlimited" in unlimited.line
    assert unlimited.bytes == int(rate * 60)
    limited = guards.wal_hold(replace(facts, max_slot_wal_keep_size_bytes=1024**2), rate, copy_seconds=600)
    assert limited.problem is not None and "max_slot_wal_keep_size is 1 MB" in limited.problem
    assert "raise max_slot_wal_keep_size" in limited.problem


def test_source_guard_refuses_wal_level_replica(databases: Databases) -> None:
    # The core server runs with the default wal_level = replica.
    with connection(databases.core) as conn:
        facts = guards.check_source(conn, [])
    assert facts.wal_level == "replica"
    assert [p for p in facts.problems if p.startswith("wal_level is replica")], facts.problems
    assert "wal_level = logical" in facts.problems[0]


def test_source_guard_refuses_a_role_without_replication(
    databases: Databases, login_role: tuple[str, str]
) -> None:
    name, password = login_role
    url = replace(databases.source, user=name, password=password)
    with connection(url) as conn:
        facts = guards.check_source(conn, [])
    assert facts.replication_privilege is None
    assert f"ALTER ROLE {name} REPLICATION" in "\n".join(facts.problems)
    _run(databases.source, sql.SQL("ALTER ROLE {} REPLICATION").format(sql.Identifier(name)))
    with connection(url) as conn:
        assert guards.check_source(conn, []).replication_privilege == "replication"


def test_target_guard_needs_the_right_to_subscribe(databases: Databases, login_role: tuple[str, str]) -> None:
    with connection(databases.core) as conn:
        found = guards.check_target(conn)
        assert found.ok and found.max_logical_replication_workers == 4  # PostgreSQL's default
        busy = guards.check_target(conn, workers_needed=found.max_logical_replication_workers + 1)
        assert [p for p in busy.problems if p.startswith("max_logical_replication_workers is 4")]
    name, password = login_role
    url = replace(databases.core, user=name, password=password)
    with connection(url) as conn:
        facts = guards.check_target(conn)
    assert not facts.superuser and len(facts.problems) == 2, facts.problems
    assert f"GRANT pg_create_subscription TO {name}" in facts.problems[0]
    assert "GRANT CREATE ON DATABASE" in facts.problems[1]
    role = sql.Identifier(name)
    _run(databases.core, sql.SQL("GRANT pg_create_subscription TO {}").format(role))
    _run(
        databases.core,
        sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(databases.core.dbname or ""), role
        ),
    )
    with connection(url) as conn:
        facts = guards.check_target(conn)
    assert facts.ok and facts.pg_create_subscription and facts.create_on_database
    with connection(url) as conn, pytest.raises(guards.ReplicationRefused):
        _run(databases.core, sql.SQL("REVOKE pg_create_subscription FROM {}").format(role))
        guards.require_target(conn, "core")


# ---- slot ---------------------------------------------------------------------------------------


def test_the_slots_snapshot_holds_exactly_the_rows_committed_before_it(replication: Databases) -> None:
    source = replication.source
    _run(
        source,
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        "INSERT INTO t SELECT i, 'before' FROM generate_series(1, 5) i",
    )
    names = ReplicationNames("snap1", "core")
    with connection(source, autocommit=True) as conn:
        create_publication(conn, names.publication, [TableName("public", "t")])
    holder = SlotHolder(source, names.slot)
    slot = holder.open()
    try:
        assert slot.slot_name == names.slot and slot.output_plugin == "pgoutput"
        assert "/" in slot.consistent_lsn and slot.snapshot_name
        _run(source, "INSERT INTO t VALUES (6, 'after'); UPDATE t SET v = 'changed' WHERE id = 1")
        with connection(source, autocommit=True) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(slot.snapshot_name)))
            seen = conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()
            conn.execute("ROLLBACK")
        assert seen == [(i, "before") for i in range(1, 6)]
        # The engine's own reader joins it the same way.
        with snapshot_session(source, slot.snapshot_name) as reader:
            assert reader.execute("SELECT count(*) FROM t").fetchone() == (5,)
    finally:
        holder.release()
    # Released: the snapshot is gone, the slot stays (for the subscription) and holds WAL from its LSN.
    with pytest.raises(SnapshotLost):
        with snapshot_session(source, slot.snapshot_name):
            pass
    assert _rows(
        source,
        "SELECT slot_name, plugin, slot_type FROM pg_replication_slots WHERE database = current_database()",
    ) == [(names.slot, "pgoutput", "logical")]
    assert _rows(source, "SELECT pubname FROM pg_publication") == [(names.publication,)]
    assert _rows(source, "SELECT tablename FROM pg_publication_tables") == [("t",)]


def test_start_catch_up_creates_nothing_when_a_guard_or_the_slot_fails(replication: Databases) -> None:
    source = replication.source
    _run(source, "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE keyless (a int)")
    names = ReplicationNames("start1", "core")
    both = [TableName("public", "keyed"), TableName("public", "keyless")]
    with pytest.raises(guards.ReplicationRefused, match=r"public\.keyless"):
        start_catch_up(source, names, both)
    assert _rows(source, _SOURCE_OBJECTS) == []
    # The slot's name taken already (a foreign slot would never carry it; here a leftover of the run):
    _run(
        source,
        sql.SQL("SELECT pg_create_logical_replication_slot({}, 'pgoutput')").format(sql.Literal(names.slot)),
    )
    with pytest.raises(SlotError, match="already exists"):
        start_catch_up(source, names, both[:1])
    assert _rows(source, _SOURCE_OBJECTS) == [("slot", names.slot)]  # no publication left behind
    _run(source, sql.SQL("SELECT pg_drop_replication_slot({})").format(sql.Literal(names.slot)))
    facts, holder = start_catch_up(source, names, both[:1])
    try:
        assert facts.ok and [t.table.name for t in facts.tables] == ["keyed"]
        assert _rows(source, _SOURCE_OBJECTS) == [("pub", names.publication), ("slot", names.slot)]
        with snapshot_session(source, holder.slot.snapshot_name) as reader:
            assert reader.execute("SELECT count(*) FROM keyed").fetchone() == (0,)
    finally:
        holder.release()


def test_the_held_snapshot_survives_an_idle_session_timeout_of_the_database(replication: Databases) -> None:
    """Measured: the holder's walsender sits idle through the database's idle_session_timeout (it
    passes without any setting on the replication connection)."""
    source = replication.source
    _run(source, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    _run(
        source,
        sql.SQL("ALTER DATABASE {} SET idle_session_timeout = '1s'").format(
            sql.Identifier(source.dbname or "")
        ),
    )
    names = ReplicationNames("idle1", "core")
    with connection(source, autocommit=True) as conn:
        create_publication(conn, names.publication, [TableName("public", "t")])
    with SlotHolder(source, names.slot) as slot:
        time.sleep(2.5)  # the copy of a first big table, while the holder sits idle
        with snapshot_session(source, slot.snapshot_name) as reader:
            assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)


# ---- subscribe and lag --------------------------------------------------------------------------

_DOCS = (
    "CREATE TABLE docs (id int PRIMARY KEY, body text, emb vector(3), n int NOT NULL DEFAULT 0);"
    # Out of line, uncompressed: an update of another column leaves an unchanged TOAST datum.
    "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;"
)
_DOCS_STATE = "SELECT id, md5(body), length(body), emb::text, n FROM docs ORDER BY id"


def test_a_table_copied_at_the_slots_snapshot_then_subscribed_misses_nothing_and_applies_nothing_twice(
    replication: Databases, servers: EmbeddedCluster
) -> None:
    source, ai = replication.source, replication.ai
    _run(source, "CREATE EXTENSION vector;" + _DOCS)
    _run(
        source,
        "INSERT INTO docs SELECT i, repeat(md5(i::text), 100), ARRAY[i, 0, 1]::vector"
        " FROM generate_series(1, 50) i",
    )
    _run(ai, "CREATE EXTENSION vector;" + _DOCS)
    # Statement logging on for the target database: the subscription's password must not reach the log.
    _run(ai, sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(sql.Identifier(ai.dbname or "")))
    names = ReplicationNames("catch1", "ai")
    table = TableName("public", "docs")
    with connection(source, autocommit=True) as conn:
        create_publication(conn, names.publication, [table])
    holder = SlotHolder(source, names.slot)
    slot = holder.open()
    try:
        # Changes after the slot, before the copy: not in the snapshot, so they must come through the slot.
        _run(
            source,
            "INSERT INTO docs VALUES (51, repeat('x', 3000), '[51,0,1]', 0);"
            "UPDATE docs SET n = n + 1 WHERE id = 1;"  # the TOASTed body is unchanged
            "UPDATE docs SET emb = '[9,9,9]' WHERE id = 2;"
            "DELETE FROM docs WHERE id = 3;",
        )
        with (
            snapshot_session(source, slot.snapshot_name) as reader,
            connection(ai, autocommit=True) as target,
        ):
            copied = copy_table(reader, target, table, snapshot_id=slot.snapshot_name)
        assert copied.rows == 50 and copied.source_fingerprint == copied.target_fingerprint
    finally:
        holder.release()
    with connection(ai, autocommit=True) as target:
        subscription = create_subscription(target, names, source)
    assert subscription.streaming == "on" and subscription.statement_logging_suppressed
    # And changes after the subscription.
    _run(
        source,
        "INSERT INTO docs SELECT i, repeat(md5(i::text), 100), ARRAY[i, 0, 1]::vector"
        " FROM generate_series(52, 60) i;"
        "UPDATE docs SET n = n + 10, body = body || 'tail' WHERE id BETWEEN 10 AND 19;"
        "UPDATE docs SET n = n + 1 WHERE id = 1;",
    )
    with connection(source, autocommit=True) as src, connection(ai, autocommit=True) as target:
        lsn = str(src.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
        waited = wait_until_flushed(src, names.slot, lsn, timeout=30)
        assert waited < 30
        found = lag(src, target, names)
        assert guards.check_target(target).logical_replication_workers_used >= 1  # its apply worker
    assert found.apply_error_count == 0 and found.sync_error_count == 0 and found.worker_running
    assert found.problem is None
    assert found.confirmed_flush_lsn is not None and found.bytes_behind is not None
    assert found.bytes_behind >= 0 and found.slot_active
    expected = _rows(source, _DOCS_STATE)
    assert len(expected) == 59  # 50 + 51 + 52..60 - 3
    assert _rows(ai, _DOCS_STATE) == expected
    row1 = next(r for r in expected if r[0] == 1)
    assert row1[4] == 2 and row1[2] == 3200  # both updates of n arrived; the unchanged body kept
    log = servers["ai"].logfile.read_text(errors="replace")
    assert "statement: SELECT id, md5(body)" in log  # statement logging was on for that database
    assert source.password
    leaked = source.password in log  # a bool, so a failure does not print the password either
    assert not leaked, "the subscription's password reached the target's server log"


def test_a_failing_subscription_names_the_source_masked_and_never_the_password(
    replication: Databases, servers: EmbeddedCluster, caplog: pytest.LogCaptureFixture
) -> None:
    source = replication.source
    _run(source, "CREATE TABLE t (id int PRIMARY KEY)")
    # PostgreSQL's default: a failing statement is logged whole, at ERROR (the embedded servers say panic).
    core_db = sql.Identifier(replication.core.dbname or "")
    _run(replication.core, sql.SQL("ALTER DATABASE {} SET log_min_error_statement = 'error'").format(core_db))
    wrong = replace(source, password=source.password[::-1] + "x")  # type: ignore[index]
    names = ReplicationNames("fail1", "core")
    with connection(replication.core, autocommit=True) as target, pytest.raises(SubscriptionError) as err:
        create_subscription(target, names, wrong)
    message = str(err.value)
    assert wrong.masked() in message and "password authentication failed" in message
    leaked = [p for p in (wrong.password, source.password) if p and (p in message or p in caplog.text)]
    assert not leaked, "a password reached the error message or the log"
    assert err.value.__suppress_context__  # `from None`: psycopg's error is not printed beside it
    log = servers["core"].logfile.read_text(errors="replace")
    assert "password authentication failed" in log  # the failure was logged, at ERROR
    assert wrong.password
    leaked_to_log = wrong.password in log
    assert not leaked_to_log, "the failing statement, password included, reached the target's server log"


# ---- cleanup ------------------------------------------------------------------------------------


def _dual_db_catch_up(databases: Databases, token: str) -> ReplicationNames:
    """dual-db's publication, slot and (on core) subscription, streaming."""
    names = ReplicationNames(token, "core")
    with connection(databases.source, autocommit=True) as conn:
        create_publication(conn, names.publication, [TableName("public", "t")])
    with SlotHolder(databases.source, names.slot):
        pass
    with connection(databases.core, autocommit=True) as target:
        create_subscription(target, names, databases.source)
    return names


def _foreign_objects(databases: Databases) -> None:
    """What the user or another tool made: a publication, a slot and a subscription not named by
    dual-db, one of them only looking like dual-db's."""
    _run(
        databases.source,
        "CREATE PUBLICATION app_pub FOR TABLE t; CREATE PUBLICATION dual_db_lookalike FOR TABLE t",
    )
    _run(databases.source, "SELECT pg_create_logical_replication_slot('app_slot', 'pgoutput')")
    _run(
        databases.core,
        sql.SQL(
            "CREATE SUBSCRIPTION app_sub CONNECTION {} PUBLICATION app_pub WITH (connect = false)"
        ).format(sql.Literal(databases.source.conninfo())),
    )


_SOURCE_OBJECTS = (
    "SELECT 'slot', slot_name::text FROM pg_replication_slots WHERE database = current_database()"
    " UNION ALL SELECT 'pub', pubname::text FROM pg_publication ORDER BY 1, 2"
)
_TARGET_OBJECTS = (
    "SELECT subname::text FROM pg_subscription"
    " WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_FOREIGN_SOURCE = [("pub", "app_pub"), ("pub", "dual_db_lookalike"), ("slot", "app_slot")]


def test_cleanup_drops_dual_dbs_objects_and_nothing_else(replication: Databases) -> None:
    _run(replication.source, "CREATE TABLE t (id int PRIMARY KEY)")
    _run(replication.core, "CREATE TABLE t (id int PRIMARY KEY)")
    names = _dual_db_catch_up(replication, "clean1")
    _foreign_objects(replication)
    # A dual-db slot and publication left by an interrupted run, without a subscription.
    orphan = ReplicationNames("clean2", "ai")
    with connection(replication.source, autocommit=True) as conn:
        create_publication(conn, orphan.publication, [TableName("public", "t")])
    killed = SlotHolder(replication.source, orphan.slot)
    killed.open()  # not released before cleanup: a run killed while its snapshot was held
    assert len(_rows(replication.source, _SOURCE_OBJECTS)) == 7

    with connection(replication.core, autocommit=True) as target:
        assert cleanup_target(target) == [names.subscription]
    with connection(replication.source, autocommit=True) as source:
        done = cleanup_source(source, wait_seconds=5)
    assert sorted(done.slots) == sorted([names.slot, orphan.slot])
    # The killed run's replication connection does not hold the slot (the walsender releases a slot once
    # created), so it was dropped without ending that session.
    killed.release()
    assert sorted(done.publications) == sorted([names.publication, orphan.publication])
    assert _rows(replication.source, _SOURCE_OBJECTS) == _FOREIGN_SOURCE
    assert _rows(replication.core, _TARGET_OBJECTS) == [("app_sub",)]
    # Idempotent: nothing of dual-db's is left to drop.
    with connection(replication.source, autocommit=True) as source:
        again = cleanup_source(source, wait_seconds=1)
    assert again.slots == [] and again.publications == []


def test_cleanup_of_the_source_alone_ends_the_walsender_still_serving_its_slot(
    replication: Databases,
) -> None:
    # A target cleanup could not reach: its subscription still streams from dual-db's slot.
    _run(replication.source, "CREATE TABLE t (id int PRIMARY KEY)")
    _run(replication.core, "CREATE TABLE t (id int PRIMARY KEY)")
    names = _dual_db_catch_up(replication, "walsnd1")
    deadline = time.monotonic() + 20
    with connection(replication.source, autocommit=True) as conn:
        active = "SELECT active FROM pg_replication_slots WHERE slot_name = %s"
        while conn.execute(active, (names.slot,)).fetchone() != (True,):
            assert time.monotonic() < deadline, "the subscription never started streaming"
            time.sleep(0.1)
    with connection(replication.source, autocommit=True) as source:
        done = cleanup_source(source, wait_seconds=1)
    assert done.slots == [names.slot] and len(done.ended_walsenders) == 1
    assert _rows(replication.source, _SOURCE_OBJECTS) == []


def test_cli_cleanup_replication_prints_what_it_dropped_masked(
    replication: Databases,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _run(replication.source, "CREATE TABLE t (id int PRIMARY KEY)")
    _run(replication.core, "CREATE TABLE t (id int PRIMARY KEY)")
    names = _dual_db_catch_up(replication, "cli1")
    _foreign_objects(replication)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SOURCE_DATABASE_URL", replication.source.uri())
    monkeypatch.setenv("CORE_DATABASE_URL", replication.core.uri())
    monkeypatch.setenv("AI_DATABASE_URL", replication.ai.uri())
    assert main(["cleanup-replication"]) == 0
    out = capsys.readouterr()
    assert f"dropped subscription {names.subscription} on core {replication.core.masked()}" in out.out
    assert f"dropped replication slot {names.slot} on source {replication.source.masked()}" in out.out
    assert f"dropped publication {names.publication} on source" in out.out
    assert "1 slot(s) and 1 publication(s) dropped" in out.out
    assert "app_" not in out.out and "lookalike" not in out.out
    passwords = [u.password for u in (replication.source, replication.core, replication.ai) if u.password]
    leaked = [p for p in passwords if p in out.out + out.err]
    assert not leaked, "a password reached the command's output"
    assert _rows(replication.source, _SOURCE_OBJECTS) == _FOREIGN_SOURCE
    assert _rows(replication.core, _TARGET_OBJECTS) == [("app_sub",)]


def test_an_apply_error_is_reported_by_subscription_name(replication: Databases) -> None:
    _run(replication.source, "CREATE TABLE t (id int PRIMARY KEY)")
    _run(replication.core, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (7)")
    names = _dual_db_catch_up(replication, "applyerr1")
    _run(replication.source, "INSERT INTO t VALUES (7)")  # the target has that row already
    deadline = time.monotonic() + 30
    with connection(replication.source, autocommit=True) as src, connection(replication.core) as target:
        while (found := lag(src, target, names)).apply_error_count == 0:
            assert time.monotonic() < deadline, "the apply error was never counted"
            target.rollback()  # a fresh statistics snapshot on the next read
            time.sleep(0.2)
    assert found.problem is not None and found.problem.startswith(f"subscription {names.subscription} failed")
    assert found.bytes_behind is not None and found.bytes_behind > 0  # the slot stays behind that change
