"""Two runs against the same targets: the run lock on each target database lets one run at a time write.

Real servers throughout: runs in-process against a lock held by another session, and two `dagster job
execute` processes racing for the same targets (the slow suite).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from dual_db.db.connect import connection
from dual_db.db.run_lock import APPLICATION_PREFIX, LOCK_CLASS, LOCK_TARGET, LockMode, take_run_lock
from dual_db.db.urls import DatabaseUrl
from dual_db.defs.constants import SOURCE_POOL
from dual_db.defs.run_guard import ProcessIdentity, process_identity_tags
from dual_db_tests.conftest import DatabaseFactory, Databases
from dual_db_tests.job_support import run_job
from dual_db_tests.test_crash_recovery import DAGSTER, Cli, Running
from dual_db_tests.test_migrate_job import AI, CORE, SOURCE_SQL, environment  # noqa: F401

TABLES = len(CORE) + len(AI)
USER_TABLES = "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"


def _user_tables(url: DatabaseUrl) -> int:
    with connection(url) as conn:
        row = conn.execute(USER_TABLES).fetchone()
        assert row is not None
        return int(row[0])


def _lock_sessions(url: DatabaseUrl) -> list[str]:
    """application_name of every session holding dual-db's run lock on `url`'s database."""
    with connection(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 2",
            (LOCK_CLASS, LOCK_TARGET),
        ).fetchall()
    return sorted(row[0] for row in rows)


def _holding_run(instance: dg.DagsterInstance) -> str:
    """A STARTED migrate of this process, standing in for the run that holds a lock."""
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name="migrate",
            run_id=run_id,
            status=dg.DagsterRunStatus.STARTED,
            tags=process_identity_tags(os.getpid()),
        )
    )
    return run_id


def _execute(cli: Cli, *args: str) -> tuple[int, str]:
    running = cli.start(*args)
    output = running.finish(timeout=RUN_TIMEOUT_SECONDS)
    return running.process.returncode, output


def _refusals(output: str) -> list[str]:
    return [line for line in output.splitlines() if "is in use by" in line and " - ERROR - " in line]


# --- Two `dagster job execute` processes on the same targets (slow) ---------------------------------


@pytest.fixture
def cli(databases: Databases, servers, new_database: DatabaseFactory, tmp_path: Path) -> Iterator[Cli]:  # type: ignore[no-untyped-def]
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(SOURCE_SQL)  # type: ignore[arg-type]
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "core:\n" + "".join(f"  - '{t}'\n" for t in CORE) + "ai:\n" + "".join(f"  - {t}\n" for t in AI)
    )
    assert Path(DAGSTER).exists()
    yield Cli.for_project(databases, new_database(servers["core"]), tmp_path, plan_file)


RUN_TIMEOUT_SECONDS = 180


def test_a_run_is_refused_in_one_line_while_another_run_holds_a_target(
    cli: Cli, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    with cli.instance(monkeypatch) as instance:
        holder = _holding_run(instance)
        lock = take_run_lock(databases.core, holder, LockMode.EXCLUSIVE)
        try:
            runs = [
                ("job", "execute", "-j", "migrate"),
                ("job", "execute", "-j", "verify"),
                ("asset", "materialize", "--select", "core/positions"),
            ]
            for args in runs:
                code, output = _execute(cli, *args)
                assert code != 0, output[-3000:]
                refused = instance.get_runs(limit=1)[0]
                assert refused.status == dg.DagsterRunStatus.FAILURE
                (line, *_) = _refusals(output)
                message = line.split(f" - {refused.run_id} - ", 1)[1]
                assert message == (
                    f"The core database ({databases.core.masked()}) is in use by run {holder} (migrate, "
                    f"STARTED, pid {os.getpid()} on host {ProcessIdentity.of(0).host}); this run "
                    f"({refused.run_id}) needs its {'shared' if 'verify' in args else 'exclusive'} run lock "
                    "there, so it started nothing. Run it again once that run has ended."
                ), args
                # Nothing ran: no step started, no pool slot queued, nothing written.
                started = [
                    e
                    for e in instance.all_logs(refused.run_id)
                    if e.dagster_event_type == dg.DagsterEventType.STEP_START
                ]
                assert started == [], args
                assert instance.event_log_storage.get_concurrency_info(SOURCE_POOL).pending_steps == []
                assert _user_tables(databases.core) == 0 and _user_tables(databases.ai) == 0
                assert databases.core.password not in output
        finally:
            lock.close()

    # A session that is no dual-db run is named by its server pid and application_name.
    with psycopg.connect(
        **databases.core.connect_kwargs(), application_name="someone", autocommit=True
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s::int4, %s::int4)", (LOCK_CLASS, LOCK_TARGET))
        code, output = _execute(cli, "job", "execute", "-j", "migrate")
        assert code != 0
        pid = other.info.backend_pid
        assert f"is in use by a session that is not a dual-db run (server pid {pid}, 'someone')" in output


def _report_summary(instance: dg.DagsterInstance, run_id: str) -> str:
    report = instance.get_latest_materialization_event(dg.AssetKey("verification_report"))
    assert report is not None and report.asset_materialization is not None and report.run_id == run_id
    return str(report.asset_materialization.metadata["summary"].value)


@pytest.mark.slow
def test_two_migrates_at_once_one_runs_the_other_is_refused_naming_it(
    cli: Cli, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cli.start("job", "execute", "-j", "migrate")
    time.sleep(0.5)
    second = cli.start("job", "execute", "-j", "migrate")
    outputs = {
        "first": first.finish(timeout=RUN_TIMEOUT_SECONDS),
        "second": second.finish(timeout=RUN_TIMEOUT_SECONDS),
    }
    codes = {"first": first.process.returncode, "second": second.process.returncode}
    assert sorted(codes.values())[0] == 0 and sorted(codes.values())[1] != 0, (codes, outputs)
    won = next(name for name, code in codes.items() if code == 0)
    lost = "second" if won == "first" else "first"
    with cli.instance(monkeypatch) as instance:
        runs = {r.run_id: r for r in instance.get_runs()}
        assert len(runs) == 2
        winner = next(r for r in runs.values() if r.status == dg.DagsterRunStatus.SUCCESS)
        loser = next(r for r in runs.values() if r.run_id != winner.run_id)
        assert loser.status == dg.DagsterRunStatus.FAILURE
        # One line names the run that holds the lock; the refused run started no step.
        lines = [line for line in outputs[lost].splitlines() if "is in use by run" in line]
        assert lines and f"is in use by run {winner.run_id} (migrate, STARTED, pid " in lines[0], outputs[
            lost
        ]
        started = [
            e
            for e in instance.all_logs(loser.run_id)
            if e.dagster_event_type == dg.DagsterEventType.STEP_START
        ]
        assert started == []
        # The targets are at parity: the winner's report, and a verify after both.
        assert (
            _report_summary(instance, winner.run_id) == f"{TABLES}/{TABLES} tables identical, 0 rows missing"
        )
        verify = cli.start("job", "execute", "-j", "verify")
        verify_output = verify.finish(timeout=RUN_TIMEOUT_SECONDS)
        assert verify.process.returncode == 0, verify_output[-3000:]
        verify_run = instance.get_runs(limit=1)[0]
        assert (
            _report_summary(instance, verify_run.run_id)
            == f"{TABLES}/{TABLES} tables identical, 0 rows missing"
        )
    assert _lock_sessions(databases.core) == [] and _lock_sessions(databases.ai) == []
    for secret in (databases.source.password, databases.core.password, databases.ai.password):
        assert secret and all(secret not in output for output in outputs.values())


@pytest.mark.slow
def test_readers_share_the_lock_and_writers_need_it_alone(
    cli: Cli, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = _execute(cli, "job", "execute", "-j", "migrate")
    assert code == 0, output[-3000:]
    with cli.instance(monkeypatch) as instance:
        reader = _holding_run(instance)
    # Another reader (a verify) holds both targets shared: verify runs beside it, migrate does not.
    locks = [take_run_lock(url, reader, LockMode.SHARED) for url in (databases.core, databases.ai)]
    try:
        code, output = _execute(cli, "job", "execute", "-j", "verify")
        assert code == 0, output[-3000:]
        assert "Run lock taken on core (shared) and ai (shared)" in output
        code, output = _execute(cli, "job", "execute", "-j", "migrate")
        assert code != 0 and f"is in use by run {reader}" in _refusals(output)[0]
        assert "needs its exclusive run lock" in _refusals(output)[0]
    finally:
        for lock in locks:
            lock.close()
    # AI alone held: a one-table redo of a core table locks core alone, and goes through.
    lock = take_run_lock(databases.ai, reader, LockMode.EXCLUSIVE)
    try:
        code, output = _execute(cli, "asset", "materialize", "--select", "core/positions")
        assert code == 0, output[-3000:]
        assert "Run lock taken on core (exclusive):" in output
        code, output = _execute(cli, "asset", "materialize", "--select", "ai/ai_memories")
        assert code != 0 and _refusals(output)[0].split(" - ")[-1].startswith("The ai database")
    finally:
        lock.close()


@pytest.mark.slow
def test_kill_9_of_the_run_holding_the_lock_releases_it(
    cli: Cli, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = cli.start("job", "execute", "-j", "migrate")
    holder.wait_for_line(
        lambda line: "Run lock taken on core (exclusive) and ai (exclusive)" in line, timeout=120
    )
    with cli.instance(monkeypatch) as instance:
        (held,) = instance.get_runs()
    assert _lock_sessions(databases.core) == [f"{APPLICATION_PREFIX}{held.run_id}"]
    assert _lock_sessions(databases.ai) == [f"{APPLICATION_PREFIX}{held.run_id}"]
    # The run's process alone, as the OOM killer does: its children (pg_dump, tail) may live on.
    os.kill(holder.process.pid, signal.SIGKILL)
    holder.finish(timeout=30)
    holder.kill_group()
    deadline = time.monotonic() + 10
    while (_lock_sessions(databases.core) or _lock_sessions(databases.ai)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _lock_sessions(databases.core) == [] and _lock_sessions(databases.ai) == []

    again: Running = cli.start("job", "execute", "-j", "migrate")
    output = again.finish(timeout=RUN_TIMEOUT_SECONDS)
    assert again.process.returncode == 0, output[-3000:]
    assert "is in use by" not in output
    with cli.instance(monkeypatch) as instance:
        latest = instance.get_runs(limit=1)[0]
        assert latest.status == dg.DagsterRunStatus.SUCCESS
        assert (
            _report_summary(instance, latest.run_id) == f"{TABLES}/{TABLES} tables identical, 0 rows missing"
        )


def test_the_report_judges_the_checks_of_its_own_run_not_of_a_run_created_after(
    environment: Databases,  # noqa: F811
) -> None:
    """A run created while another runs plans the same checks, even when refused before any step: its
    unevaluated plans are the latest records, and the first run's report read them as "never ran"
    (two migrates at once: `0/9 tables identical` on a good copy)."""
    from dual_db.definitions import build_definitions
    from dual_db.defs.verification.assets import latest_evaluations
    from dual_db.routing import RoutingPlan

    with dg.DagsterInstance.ephemeral() as instance:
        done = run_job("migrate", instance)
        assert done.success
        keys = [e.asset_check_key for e in done.get_asset_check_evaluations()]
        later = instance.create_run_for_job(build_definitions(RoutingPlan.load()).resolve_job_def("migrate"))
        assert later.run_id != done.run_id
        # The latest record of every check is now the later run's plan, with no evaluation.
        assert all(v is None for v in latest_evaluations(instance, keys).values())
        own = latest_evaluations(instance, keys, done.run_id)
        assert all(v is not None and v.passed for v in own.values()), own


def test_what_each_kind_of_run_locks() -> None:
    """Writers lock what they write exclusively, readers share; a one-table redo locks its target only."""
    from dagster._core.execution.api import create_execution_plan

    from dual_db.definitions import build_definitions
    from dual_db.defs.target_lock import lock_modes
    from dual_db.routing import DEFAULT_PLAN_FILE, RoutingPlan

    defs = build_definitions(RoutingPlan.load(DEFAULT_PLAN_FILE))

    def modes(job: dg.JobDefinition) -> dict[str, str]:
        steps = create_execution_plan(job).get_steps_to_execute_in_topo_order()
        return {target: mode.value for target, mode in lock_modes(job, steps).items()}

    both = {"core": "exclusive", "ai": "exclusive"}
    shared = {"core": "shared", "ai": "shared"}
    jobs = {"migrate": both, "verify": shared, "soak": shared, "rollback": {}}
    assert {name: modes(defs.resolve_job_def(name)) for name in jobs} == jobs
    assets = defs.resolve_implicit_global_asset_job_def()
    selections = {
        "core/positions": {"core": "exclusive"},
        "cutover": both,
        "core/tuning": {"core": "exclusive"},
        # Its checks follow soft references across the split: AI written, core read.
        "ai/vector_indexes": {"core": "shared", "ai": "exclusive"},
        "baseline/metrics": {},
        "source/full_backup": {},
    }
    assert {
        key: modes(assets.get_subset(asset_selection={dg.AssetKey.from_user_string(key)}))
        for key in selections
    } == selections
