"""The fault suite: `migrate` against real servers while things go wrong, each fault ending with a
re-run at full checksum parity and no duplicate row.

1. the application keeps writing to the source during the run;
2. a copy backend is terminated (`pg_terminate_backend`) on the target, then on the source;
3. the target server stops during the copy and starts again;
4. managed-service roles: a SELECT-only source role, non-superuser target owners.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import pytest
from psycopg import sql

from dual_db.db.connect import connection
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedServer
from dual_db_tests.conftest import Databases
from dual_db_tests.job_support import point_at, run_job
from dual_db_tests.test_migrate_job import AI, CORE, SOURCE_SQL

# The slow suite (make test-slow, which .ci/run also runs): keeps make test under 15 minutes.
pytestmark = pytest.mark.slow

# A table large enough that its copy lasts long enough to be interrupted (≈ 300k rows, ≈ 90 MB).
TICKS_SQL = """
CREATE TABLE ticks (id bigint PRIMARY KEY, symbol text NOT NULL, price numeric(18,6), payload text,
    at timestamptz);
INSERT INTO ticks
SELECT i, 'SYM' || (i % 300), i * 0.01, repeat(md5(i::text), 8),
       '2024-01-01 00:00+00'::timestamptz + i * interval '1 second'
FROM generate_series(1, 300000) i;
"""
TABLES = [*CORE, "ticks", *AI]
ALL_IDENTICAL = f"{len(TABLES)}/{len(TABLES)} tables identical, 0 rows missing"


def _write_plan(path: Path) -> None:
    path.write_text(
        "core:\n"
        + "".join(f"  - '{t}'\n" for t in [*CORE, "ticks"])
        + "ai:\n"
        + "".join(f"  - {t}\n" for t in AI)
        + "soft_references:\n"
        + "  - {from: ai_feedback, columns: [message_id], to: agent_messages, to_columns: [id]}\n"
    )


@pytest.fixture
def environment(databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Databases]:
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(SOURCE_SQL)  # type: ignore[arg-type]
        conn.execute(TICKS_SQL)  # type: ignore[arg-type]
        conn.execute("ANALYZE")
    plan_file = tmp_path / "plan.yaml"
    _write_plan(plan_file)
    monkeypatch.setenv("DUAL_DB_PLAN_FILE", str(plan_file))
    point_at(monkeypatch, databases.source, databases.core, databases.ai)
    monkeypatch.chdir(tmp_path)  # dumps land under tmp_path/.dual_db
    yield databases


def _report_metadata(instance: dg.DagsterInstance) -> dict[str, object]:
    event = instance.get_latest_materialization_event(dg.AssetKey("verification_report"))
    assert event is not None and event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _step_failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Each failed step and what it told the user: the Failure's description, else the error's message
    with its causes (Dagster wraps the real exception in a DagsterExecutionStepExecutionError)."""
    failures = {}
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            user = data.user_failure_data
            if user is not None and user.description:
                failures[event.step_key or "?"] = user.description
                continue
            messages, error = [], data.error
            while error is not None:
                messages.append(error.message.strip())
                error = error.cause
            failures[event.step_key or "?"] = " <- ".join(messages)
    return failures


def _target_rows(url: DatabaseUrl, table: str) -> tuple[int, int]:
    """(rows, distinct rows) of `table` on `url`."""
    with connection(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT t) FROM {} t").format(sql.SQL(table))
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def assert_full_parity(
    result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, dbs: Databases
) -> None:
    """The run succeeded, every table is at count and checksum parity, the report says so, and no
    target table holds a duplicate row or a row count other than the source's."""
    assert result.success, _step_failures(result)
    evaluations = result.get_asset_check_evaluations()
    failed = [
        (e.asset_key.to_user_string(), e.check_name, e.description) for e in evaluations if not e.passed
    ]
    assert not failed, failed
    for check in ("count_parity", "checksum_parity"):
        assert len([e for e in evaluations if e.check_name == check]) == len(TABLES), check
    assert _report_metadata(instance)["summary"] == ALL_IDENTICAL
    for table in TABLES:
        target_url = dbs.ai if table in AI else dbs.core
        with connection(dbs.source) as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table))).fetchone()
        source_rows = int(row[0]) if row else -1
        assert _target_rows(target_url, table) == (source_rows, source_rows), table


# ---- 1. writes to the source during migrate ------------------------------------------------------


class SourceWriter(threading.Thread):
    """The application: inserts and updates rows in three source tables until stopped."""

    def __init__(self, url: DatabaseUrl) -> None:
        super().__init__(name="source-writer", daemon=True)
        self.url = url
        self.stopped = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connection(self.url, autocommit=True, application_name="the application") as conn:
                i = 0
                while not self.stopped.is_set():
                    i += 1
                    with conn.transaction():
                        conn.execute(
                            "INSERT INTO positions (portfolio_id, symbol, kind, quantity) "
                            "VALUES (%s, 'LIVE', 'LONG', %s)",
                            (1 + i % 50, i),
                        )
                        conn.execute(
                            "UPDATE agent_messages SET content = content || '.' WHERE id = "
                            "(SELECT id FROM agent_messages ORDER BY id OFFSET %s LIMIT 1)",
                            (i % 200,),
                        )
                        conn.execute(
                            "INSERT INTO ai_memories VALUES (gen_random_uuid(), NULL, 'live ' || %s::text)",
                            (i,),
                        )
                    self.writes += 1
                    time.sleep(0.02)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self) -> int:
        self.stopped.set()
        self.join(timeout=30)
        assert self.error is None, self.error
        return self.writes


def test_report_summary_names_the_tables_the_source_moved() -> None:
    from dual_db.db.names import TableName
    from dual_db.verify.report import VerificationReport

    report = VerificationReport()
    for i in range(8):
        report.add_table(TableName("public", f"t{i}"), "core", 10, 10, True, 0.1)
    assert report.summary_line() == "8/8 tables identical, 0 rows missing"
    report.set_source_moved([TableName("public", f"t{i}") for i in (6, 0, 1, 2, 3, 4, 5)])
    assert report.summary_line() == (
        "8/8 tables identical to the snapshot, 0 rows missing; the source has moved since: "
        "7 tables changed (t0, t1, t2, t3, t4 and 2 more)"
    )
    assert report.passed  # a moving source is a warning, not a failed verification
    assert report.to_dict()["source_moved"] == ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]


def test_source_drift_when_the_source_cannot_be_reached_is_a_warning_not_a_failed_report() -> None:
    """After cutover the old source may be gone: the report's drift then says it could not look,
    as a warning naming the server (masked), and does not fail the report."""
    from dual_db.db.fingerprint import Fingerprint
    from dual_db.db.names import TableName
    from dual_db.verify.drift import source_drift_now

    password = "Gone-Source-Pass-1"
    gone = DatabaseUrl.parse(f"postgresql://app:{password}@127.0.0.1:1/old?connect_timeout=2")
    outcome, moved = source_drift_now(gone, {TableName("public", "users"): Fingerprint(50, "123")}, workers=2)
    assert moved == [] and not outcome.passed and outcome.severity == "WARN" and not outcome.blocking
    assert "postgresql://app:***@127.0.0.1:1/old" in outcome.summary, outcome.summary
    assert password not in str(outcome.to_dict())


def test_writes_to_the_source_during_migrate(environment: Databases) -> None:
    dbs = environment
    writer = SourceWriter(dbs.source)
    with dg.DagsterInstance.ephemeral() as instance:
        writer.start()
        try:
            moving = run_job("migrate", instance)
        finally:
            writes = writer.finish()
        assert writes > 20, writes

        # The copy is consistent with its snapshot: every table check and database check is green.
        assert moving.success, _step_failures(moving)
        evaluations = {
            (e.asset_key.to_user_string(), e.check_name): e for e in moving.get_asset_check_evaluations()
        }
        red = [key for key, e in evaluations.items() if not e.passed and key[1] != "source_drift"]
        assert not red, red
        # ... and the source has moved since: the warning names exactly the tables that were written.
        drift = evaluations[("verification_report", "source_drift")]
        assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
        description = drift.description or ""
        for moved in ("positions", "agent_messages", "ai_memories"):
            assert moved in description, description
        for still in ("users", "portfolios", "ticks", "ai_kb_documents"):
            assert f"\n{still}:" not in description, description
        # The report knows it too: identical to the snapshot, not "0 rows missing" as if nothing moved.
        report = _report_metadata(instance)
        assert report["summary"] == (
            f"{len(TABLES)}/{len(TABLES)} tables identical to the snapshot, 0 rows missing; "
            "the source has moved since: 3 tables changed (agent_messages, ai_memories, positions)"
        )
        assert "source_drift" in str(report["report"])
        assert report["source_tables_moved"] == ["agent_messages", "ai_memories", "positions"]
        saved = json.loads(Path(str(report["json_path"])).read_text())
        assert saved["summary"] == report["summary"] and saved["passed"] is True
        assert saved["source_moved"] == ["agent_messages", "ai_memories", "positions"]
        assert saved["checks"]["source: source_drift"]["severity"] == "WARN"
        print(
            f"{writes} writes during the run; drift computed by the report in "
            f"{report['source_drift_seconds']}s over {len(TABLES)} source tables"
        )

        # A failing report still carries the drift, and its check is still evaluated.
        with connection(dbs.core, autocommit=True) as conn:
            conn.execute("UPDATE users SET email = 'changed@example.com' WHERE email = 'user7@example.com'")
        failing = run_job("verify", instance)
        assert not failing.success
        message = _step_failures(failing)["verification_report"]
        assert "the source has moved since: 3 tables changed" in message, message
        assert "9/10 tables identical to the snapshot" in message, message
        drift_checks = [e for e in failing.get_asset_check_evaluations() if e.check_name == "source_drift"]
        assert len(drift_checks) == 1 and not drift_checks[0].passed

        # The application has stopped: a re-run catches up to full parity, without duplicates.
        settled = run_job("migrate", instance)
        assert_full_parity(settled, instance, dbs)
        drift_now = next(e for e in settled.get_asset_check_evaluations() if e.check_name == "source_drift")
        assert drift_now.passed


# ---- 2. a copy backend terminated -------------------------------------------------------------------


@dataclass
class Kill:
    pid: int | None = None
    terminated: bool = False


def _terminate_when_copying(
    url: DatabaseUrl,
    pattern: str,
    application_name: str,
    *,
    victim: str | None = None,
    timeout: float = 180,
) -> tuple[threading.Thread, Kill]:
    """A watcher that terminates the backend of `application_name` running a query like `pattern` on
    `url`'s database, a moment after it starts (so that the COPY is mid-stream); with `victim`, the
    backend of that application name instead, at that moment."""
    kill = Kill()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        with connection(url, autocommit=True, application_name="fault injector") as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'active' AND query ILIKE %s AND application_name = %s",
                    (pattern, application_name),
                ).fetchone()
                if row is not None:
                    time.sleep(0.15)
                    kill.pid = int(row[0])
                    if victim is not None:
                        found = conn.execute(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name = %s",
                            (victim,),
                        ).fetchone()
                        kill.pid = int(found[0]) if found else None
                    result = conn.execute("SELECT pg_terminate_backend(%s)", (kill.pid,)).fetchone()
                    kill.terminated = bool(result and result[0])
                    return
                time.sleep(0.02)

    thread = threading.Thread(target=watch, name="fault-injector", daemon=True)
    thread.start()
    return thread, kill


def test_snapshot_holder_terminated_before_a_reader_joins(environment: Databases) -> None:
    """The session holding the exported snapshot dies while the backup's pg_dump reads ticks (the
    backup runs after the guards and the schema steps): the table copies cannot join the snapshot any
    more. They must fail saying so, no row is written, and a re-run takes a new snapshot."""
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        watcher, kill = _terminate_when_copying(
            dbs.source, "COPY public.ticks % TO stdout%", "dual-db pg_dump", victim="dual-db snapshot"
        )
        broken = run_job("migrate", instance)
        watcher.join(timeout=5)
        assert kill.terminated, "the snapshot holder was never terminated during the backup"
        assert not broken.success
        failures = _step_failures(broken)
        print(f"snapshot holder {kill.pid} terminated; the run says: {failures}")
        for step in ("core_tables", "ai_tables"):
            assert step in failures, failures
            assert "snapshot" in failures[step] and "Re-run migrate" in failures[step], failures
        assert not broken.get_asset_materialization_events() or not any(
            e.asset_key.path[0] in ("core", "ai") and e.asset_key.path[1] not in ("core_schema", "ai_schema")
            for e in broken.get_asset_materialization_events()
        )
        with connection(dbs.core) as conn:
            assert conn.execute("SELECT count(*) FROM ticks").fetchone() == (0,)

        again = run_job("migrate", instance)
        assert_full_parity(again, instance, dbs)


def test_snapshot_holder_terminated_after_every_reader_joined(environment: Databases) -> None:
    """Killed while the last table is copied: every reader already joined the snapshot, so the run is
    consistent and must succeed, without an error from closing the dead holder."""
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        watcher, kill = _terminate_when_copying(
            dbs.source, "COPY %ticks% TO STDOUT%", "dual-db reader", victim="dual-db snapshot"
        )
        result = run_job("migrate", instance)
        watcher.join(timeout=5)
        assert kill.terminated, "the snapshot holder was never terminated during the copy of ticks"
        assert_full_parity(result, instance, dbs)
        errors = [
            e.message
            for e in instance.all_logs(result.run_id)
            if e.level >= 40 and "Teardown" in (e.message or "")
        ]
        assert not errors, errors


@pytest.mark.parametrize(
    ("side", "pattern", "application_name"),
    [
        ("target", "COPY %ticks% FROM STDIN%", "dual-db copy"),
        # the copy's reader, not pg_dump's (the backup reads the same table with the same COPY)
        ("source", "COPY %ticks% TO STDOUT%", "dual-db reader"),
    ],
)
def test_copy_backend_terminated(
    environment: Databases, side: str, pattern: str, application_name: str
) -> None:
    dbs = environment
    with dg.DagsterInstance.ephemeral() as instance:
        watcher, kill = _terminate_when_copying(
            dbs.core if side == "target" else dbs.source, pattern, application_name
        )
        broken = run_job("migrate", instance)
        watcher.join(timeout=5)
        assert kill.terminated, "the COPY of ticks was never seen running"
        assert not broken.success
        failures = _step_failures(broken)
        assert "core_tables" in failures, failures
        message = failures["core_tables"]
        # A clear message naming the table, not a trace as the only information.
        assert "ticks" in message, message
        # the server's reason when the reader died; the client's when the load's socket closed mid-send
        assert "terminating connection" in message or "server closed the connection" in message, message
        assert len(message.splitlines()[0]) < 400, message
        print(f"{side} backend {kill.pid} terminated; the run says: {message}")
        # Every other core table was copied and checked; only ticks is missing.
        materialized = {e.asset_key.to_user_string() for e in broken.get_asset_materialization_events()}
        assert "core/ticks" not in materialized
        assert {"core/users", "core/positions", "ai/ai_kb_documents"} <= materialized

        again = run_job("migrate", instance)
        assert_full_parity(again, instance, dbs)
    # Last, so that the re-run above is exercised either way: libpq's words are the same for either
    # side ("server closed the connection unexpectedly"), so the table's reason must say which server
    # dropped: the source it was read from or the core database it was loaded into.
    reason = message.split("ticks:", 1)[1]
    assert ("source" if side == "source" else "core") in reason, message


# ---- 3. the target server stops mid-run -------------------------------------------------------------


@pytest.fixture
def own_core_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(name="core-fault", root=tmp_path_factory.mktemp("core-fault"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_target_server_stopped_during_the_copy(
    environment: Databases, own_core_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = own_core_server
    server.ensure_database("core_fault")
    dbs = replace(environment, core=server.url("core_fault"))
    point_at(monkeypatch, dbs.source, dbs.core, dbs.ai)

    stopped = threading.Event()

    def stop_during_copy() -> None:
        with connection(dbs.core, autocommit=True, application_name="fault injector") as conn:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE state = 'active' "
                    "AND query ILIKE 'COPY %ticks% FROM STDIN%'"
                ).fetchone()
                if row is not None:
                    break
                time.sleep(0.02)
            else:
                return
        time.sleep(0.15)
        server.stop()
        stopped.set()

    with dg.DagsterInstance.ephemeral() as instance:
        injector = threading.Thread(target=stop_during_copy, daemon=True)
        injector.start()
        started = time.monotonic()
        broken = run_job("migrate", instance)
        failed_after = time.monotonic() - started
        injector.join(timeout=60)
        assert stopped.is_set(), "the server was never stopped during the copy of ticks"
        assert not broken.success
        failures = _step_failures(broken)
        assert "core_tables" in failures, failures
        message = failures["core_tables"]
        assert "ticks" in message, message
        assert len(message.splitlines()[0]) < 600, message
        print(f"run failed {failed_after:.1f}s after it started; message: {message[:300]}")

        server.start()
        dbs = replace(dbs, core=server.url("core_fault"))  # the port may have moved
        point_at(monkeypatch, dbs.source, dbs.core, dbs.ai)
        again = run_job("migrate", instance)
        assert_full_parity(again, instance, dbs)


# ---- 4. managed-service roles ------------------------------------------------------------------------


@pytest.fixture
def roles() -> Iterator[list[tuple[DatabaseUrl, str]]]:
    """Roles a test creates, as (a superuser URL on their server, role name): dropped afterwards."""
    created: list[tuple[DatabaseUrl, str]] = []
    yield created
    for admin_url, role in created:
        with connection(admin_url, autocommit=True) as conn:
            databases = [
                r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall()
            ]
        for dbname in databases:
            with connection(replace(admin_url, dbname=dbname), autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                if exists:
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with connection(admin_url, autocommit=True) as conn:
            for (dbname,) in conn.execute(
                "SELECT datname FROM pg_database "
                "WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                (role,),
            ).fetchall():
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_migrate_with_a_select_only_source_role(
    environment: Databases, monkeypatch: pytest.MonkeyPatch, roles: list[tuple[DatabaseUrl, str]]
) -> None:
    """Railway/RDS: the source role may read, nothing else. pg_dump, the snapshot, the copy and every
    check must work with SELECT on the tables and sequences (and USAGE on the schemas, without which
    no table in them can be read at all)."""
    dbs = environment
    role, password = "fault_source_reader", "Source-Reader-Pass-1"
    with connection(dbs.source, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        roles.append((replace(dbs.source, dbname="postgres"), role))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
        conn.execute(sql.SQL('GRANT USAGE ON SCHEMA "Analytics" TO {}').format(sql.Identifier(role)))
        conn.execute(
            sql.SQL('GRANT SELECT ON ALL TABLES IN SCHEMA public, "Analytics" TO {}').format(
                sql.Identifier(role)
            )
        )
        conn.execute(
            sql.SQL('GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, "Analytics" TO {}').format(
                sql.Identifier(role)
            )
        )
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        assert superuser == (False,)
    reader = replace(dbs.source, user=role, password=password)
    point_at(monkeypatch, reader, dbs.core, dbs.ai)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_job("migrate", instance)
        assert_full_parity(result, instance, dbs)
        logs = "\n".join(str(entry) for entry in instance.all_logs(result.run_id))
        assert password not in logs


@pytest.mark.parametrize(
    ("missing", "grants", "named"),
    [
        (
            "USAGE on a schema",
            [
                'GRANT SELECT ON ALL TABLES IN SCHEMA public, "Analytics" TO {role}',
                'GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, "Analytics" TO {role}',
            ],
            ["USAGE", '"Analytics"'],
        ),
        (
            "SELECT on sequences",
            [
                'GRANT USAGE ON SCHEMA "Analytics" TO {role}',
                'GRANT SELECT ON ALL TABLES IN SCHEMA public, "Analytics" TO {role}',
            ],
            ["SELECT", "portfolios_id_seq", "positions_id_seq"],
        ),
    ],
)
def test_a_source_role_missing_a_privilege_is_refused_before_any_write(
    environment: Databases,
    monkeypatch: pytest.MonkeyPatch,
    roles: list[tuple[DatabaseUrl, str]],
    missing: str,
    grants: list[str],
    named: list[str],
) -> None:
    """Without USAGE on a schema the snapshot cannot even lock its tables; without SELECT on the
    sequences the schema dump passes, the tables are written, and the sequence reads fail afterwards.
    The preflight must name what is missing before anything is written."""
    dbs = environment
    role, password = "fault_source_partial", "Source-Partial-Pass-1"
    with connection(dbs.source, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        roles.append((replace(dbs.source, dbname="postgres"), role))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
        for grant in grants:
            conn.execute(sql.SQL(grant).format(role=sql.Identifier(role)))  # type: ignore[arg-type]
    point_at(monkeypatch, replace(dbs.source, user=role, password=password), dbs.core, dbs.ai)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_job("migrate", instance)
    assert not result.success
    failures = _step_failures(result)
    print(f"source role without {missing}: {failures}")
    problems = []
    schema_dump = failures.get("source__schema_dump", "")
    if not all(word in schema_dump for word in named):
        problems.append(f"source/schema_dump does not name {named}: {schema_dump or failures}")
    written = {"core": _tables_in(dbs.core), "ai": _tables_in(dbs.ai)}
    if any(written.values()):
        problems.append(f"tables written before the refusal: {written}")
    assert not problems, problems


def _owned_database(server_url: DatabaseUrl, role: str, password: str, dbname: str) -> DatabaseUrl:
    """A database owned by a new LOGIN role that is not a superuser (a managed service's user)."""
    with connection(replace(server_url, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(role))
        )
    return replace(server_url, user=role, password=password, dbname=dbname)


def _tables_in(url: DatabaseUrl) -> int:
    with connection(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    return int(row[0]) if row else -1


@dataclass(frozen=True)
class OwnedTargets:
    dbs: Databases  # core and AI as their non-superuser owners
    core_admin: DatabaseUrl  # the server's superuser on the same databases
    ai_admin: DatabaseUrl


@pytest.fixture
def owner_targets(
    environment: Databases, monkeypatch: pytest.MonkeyPatch, roles: list[tuple[DatabaseUrl, str]]
) -> OwnedTargets:
    """core and AI databases owned by non-superuser roles, the way Railway and RDS hand them out."""
    dbs = environment
    core = _owned_database(dbs.core, "fault_core_owner", "Core-Owner-Pass-1", "fault_core_owned")
    roles.append((replace(dbs.core, dbname="postgres"), "fault_core_owner"))
    ai = _owned_database(dbs.ai, "fault_ai_owner", "Ai-Owner-Pass-1", "fault_ai_owned")
    roles.append((replace(dbs.ai, dbname="postgres"), "fault_ai_owner"))
    point_at(monkeypatch, dbs.source, core, ai)
    return OwnedTargets(
        replace(dbs, core=core, ai=ai),
        core_admin=replace(dbs.core, dbname=core.dbname),
        ai_admin=replace(dbs.ai, dbname=ai.dbname),
    )


def test_untrusted_pgvector_with_a_non_superuser_ai_owner_is_refused_before_any_write(
    owner_targets: OwnedTargets,
) -> None:
    """pgvector's control file is not `trusted`: CREATE EXTENSION vector needs a superuser (or the
    managed service's own mechanism). The guard must say so before anything is written anywhere."""
    dbs = owner_targets.dbs
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_job("migrate", instance)
    assert not result.success
    failures = _step_failures(result)
    message = " | ".join(failures.values())
    problems = []  # all of them, so that one run shows every defect
    if "CREATE EXTENSION vector" not in message or not ("superuser" in message or "trusted" in message):
        problems.append(f"the message does not name the privilege: {message}")
    # Refused before anything was written: by the preflight in source/schema_dump, not half-way. The
    # report runs anyway and fails, naming that step.
    if set(failures) != {"source__schema_dump", "verification_report"}:
        problems.append(f"failed in {sorted(failures)}, not in the preflight of source/schema_dump")
    if "source__schema_dump" not in failures.get("verification_report", ""):
        problems.append(f"the report does not name the failed step: {failures.get('verification_report')}")
    written = {"core": _tables_in(dbs.core), "ai": _tables_in(dbs.ai)}
    if any(written.values()):
        problems.append(f"tables written before the refusal: {written}")
    assert not problems, problems


def test_non_superuser_target_owners_migrate_and_redo_one_table_after_post_data(
    owner_targets: OwnedTargets,
) -> None:
    """The managed-service case with pgvector enabled by the provider (here: installed by a superuser).
    `migrate`, then a one-table redo when foreign keys exist on the target (the copy sets
    session_replication_role, a superuser parameter unless granted), then a full re-run."""
    dbs = owner_targets.dbs
    problems: list[str] = []
    with connection(owner_targets.ai_admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_job("migrate", instance)
        assert_full_parity(first, instance, dbs)

        # post-data built the foreign keys: positions has one out, portfolios one in.
        with connection(dbs.core, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone() == (2,)
            conn.execute("DELETE FROM positions WHERE id % 7 = 0")
        redo = run_job("migrate", instance, ["core/positions"])
        if not redo.success:
            # Either the redo works, or it is refused before anything is written, naming the grant.
            message = " | ".join(_step_failures(redo).values())
            if "GRANT SET ON PARAMETER session_replication_role" not in message:
                problems.append(f"one-table redo refused without naming the grant: {message}")
            with connection(dbs.core) as conn:
                assert conn.execute("SELECT count(*) FROM positions").fetchone() == (4000 - 4000 // 7,)
            with connection(owner_targets.core_admin, autocommit=True) as conn:
                conn.execute("GRANT SET ON PARAMETER session_replication_role TO fault_core_owner")
            redo = run_job("migrate", instance, ["core/positions"])
        assert redo.success, _step_failures(redo)
        with connection(dbs.core) as conn:
            assert conn.execute("SELECT count(*) FROM positions").fetchone() == (4000,)

        # A second full migrate over dual-db's own targets (it resets them first).
        again = run_job("migrate", instance)
        assert_full_parity(again, instance, dbs)
    # Checked last, so that one run shows every defect of the scenario.
    assert not problems, problems
