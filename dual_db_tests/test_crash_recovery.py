"""A crashed run must not wedge later runs: `kill -9` mid-copy, then `migrate` again through the CLI.

Everything here is real: the `dagster` CLI in a subprocess, a PostgreSQL-backed Dagster instance with
the project's dagster.yaml (pool `dual_db_source`, limit 1), and the embedded source/core/AI servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from psycopg import sql

from dual_db.db.connect import connection
from dual_db.db.urls import DatabaseUrl
from dual_db.defs.constants import SOURCE_POOL
from dual_db_tests.conftest import DatabaseFactory, Databases
from dual_db_tests.test_migrate_job import AI, CORE, SOURCE_SQL

# The slow suite (make test-slow, which .ci/run also runs): keeps make test under 15 minutes.
pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")

# One table large enough that copying and fingerprinting it takes seconds, so the kill lands mid-copy.
BIG_TABLE_SQL = """
CREATE TABLE trade_ticks (id bigint PRIMARY KEY, portfolio_id int NOT NULL, symbol text NOT NULL,
    price numeric(18,6) NOT NULL, note text);
INSERT INTO trade_ticks
SELECT i, 1 + i % 50, 'SYM' || (i % 300), i * 0.37, md5(i::text) || md5((i * 7)::text)
FROM generate_series(1, 600000) i;
ANALYZE trade_ticks;
"""
TABLES = len(CORE) + 1 + len(AI)

# Generous: a full migrate of this source takes well under a minute on an idle machine.
MIGRATE_TIMEOUT_SECONDS = 240


class Running:
    """A CLI process whose output is collected by a thread, so the test can wait for a line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def kill_group(self, sig: signal.Signals = signal.SIGKILL) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def wait_for_line(self, matches: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if matches(line):
                    return line
            seen = len(self.lines)
            if self.process.poll() is not None and not self._reader.is_alive():
                pytest.fail(f"ended (code {self.process.returncode}) first:\n{self.output[-3000:]}")
            time.sleep(0.2)
        self.kill_group()
        pytest.fail(f"no such line within {timeout:.0f}s; last output:\n{self.output[-3000:]}")

    def finish(self, timeout: float) -> str:
        """The whole output once the process exits; kills it and fails the test past `timeout`."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.process.wait()
            self._reader.join()
            pytest.fail(f"still running after {timeout:.0f}s; last output:\n{self.output[-3000:]}")
        self._reader.join()
        return self.output


@dataclass
class Cli:
    """The `dagster` CLI as a user runs it: DAGSTER_HOME with the project's dagster.yaml, `.env` in cwd."""

    cwd: Path
    env: dict[str, str]
    home: Path
    instance_url: DatabaseUrl

    @classmethod
    def for_project(
        cls, databases: Databases, instance_url: DatabaseUrl, tmp_path: Path, plan_file: Path
    ) -> Cli:
        """A project in `tmp_path`: DAGSTER_HOME with the project's dagster.yaml, the URLs in `.env` only
        (the shell's are dropped, as a user's fresh shell has none), and `plan_file` as the plan."""
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())
        (tmp_path / ".env").write_text(
            f"SOURCE_DATABASE_URL={databases.source.uri()}\nCORE_DATABASE_URL={databases.core.uri()}\n"
            f"AI_DATABASE_URL={databases.ai.uri()}\nDAGSTER_POSTGRES_URL={instance_url.sqlalchemy_url()}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")}
        env.update(DAGSTER_HOME=str(home), DUAL_DB_PLAN_FILE=str(plan_file), PYTHONUNBUFFERED="1")
        return cls(cwd=tmp_path, env=env, home=home, instance_url=instance_url)

    def start(self, *args: str) -> Running:
        # A session of its own, so the test can kill the whole process group (pg_dump children too).
        process = subprocess.Popen(
            [DAGSTER, *args, "-m", "dual_db.definitions"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        return Running(process)

    def instance(self, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", self.instance_url.sqlalchemy_url())
        return dg.DagsterInstance.from_config(str(self.home))


@pytest.fixture
def cli(databases: Databases, servers, new_database: DatabaseFactory, tmp_path: Path) -> Iterator[Cli]:  # type: ignore[no-untyped-def]
    with connection(databases.source, autocommit=True) as conn:
        conn.execute(SOURCE_SQL)  # type: ignore[arg-type]
        conn.execute(BIG_TABLE_SQL)  # type: ignore[arg-type]
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(
        "core:\n"
        + "".join(f"  - '{t}'\n" for t in [*CORE, "trade_ticks"])
        + "ai:\n"
        + "".join(f"  - {t}\n" for t in AI)
    )
    yield Cli.for_project(databases, new_database(servers["core"]), tmp_path, plan_file)


def _wait_for_copy_in_progress(source: DatabaseUrl, running: Running, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with connection(source, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                "AND application_name = 'dual-db reader' AND query ILIKE 'COPY%%'",
                (source.dbname,),
            ).fetchone()
            if row and row[0] > 0:
                return
            if running.process.poll() is not None:
                pytest.fail(f"migrate ended before any copy started:\n{running.finish(10)[-3000:]}")
            time.sleep(0.1)
    running.kill_group()
    pytest.fail(f"no COPY on the source within {timeout:.0f}s")


def test_killed_migrate_does_not_wedge_the_next_one(
    cli: Cli, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = cli.start("job", "execute", "-j", "migrate")
    _wait_for_copy_in_progress(databases.source, crashed, timeout=MIGRATE_TIMEOUT_SECONDS)
    crashed.kill_group()
    crashed.finish(timeout=30)

    with cli.instance(monkeypatch) as instance:
        (dead_run,) = instance.get_runs()
        # The crash left the run STARTED, holding its source-pool slot: the state that wedged migrate.
        assert dead_run.status == dg.DagsterRunStatus.STARTED
        holders = instance.event_log_storage.get_concurrency_info(SOURCE_POOL).claimed_slots
        assert [slot.run_id for slot in holders] == [dead_run.run_id]

        again = cli.start("job", "execute", "-j", "migrate")
        output = again.finish(timeout=MIGRATE_TIMEOUT_SECONDS)
        assert again.process.returncode == 0, output[-3000:]
        # The user is told, in one line, which run was found dead and what was done about it.
        recovery = [line for line in output.splitlines() if dead_run.run_id in line]
        assert any("no longer running" in line and "failed" in line for line in recovery), output[-5000:]

        dead_after = instance.get_run_by_id(dead_run.run_id)
        assert dead_after is not None and dead_after.status == dg.DagsterRunStatus.FAILURE
        runs = instance.get_runs()
        assert len(runs) == 2 and runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert instance.event_log_storage.get_concurrency_info(SOURCE_POOL).claimed_slots == []
        report = instance.get_latest_materialization_event(dg.AssetKey("verification_report"))
        assert report is not None and report.asset_materialization is not None
        assert report.run_id == runs[0].run_id
        summary = report.asset_materialization.metadata["summary"].value
        assert summary == f"{TABLES}/{TABLES} tables identical, 0 rows missing"

    # No table holds a duplicate row: every count equals the source's, every key is unique.
    with connection(databases.source) as src, connection(databases.core) as core:
        for table in ("trade_ticks", "positions", "users"):
            query = sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(sql.Identifier(table))
            expected = src.execute(query).fetchone()
            assert expected is not None and expected[0] == expected[1] > 0
            assert core.execute(query).fetchone() == expected, table
    for secret in (databases.source.password, databases.core.password, databases.ai.password):
        assert secret and secret not in output


def _fake_live_holder(instance: dg.DagsterInstance, pid: int) -> str:
    """A STARTED run of this host whose process (`pid`) is alive and holds the source-pool slot."""
    from dual_db.defs.run_guard import process_identity_tags

    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(
            job_name="migrate",
            run_id=run_id,
            status=dg.DagsterRunStatus.STARTED,
            tags=process_identity_tags(pid),
        )
    )
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default(SOURCE_POOL)
    assert storage.claim_concurrency_slot(SOURCE_POOL, run_id, "core_tables").is_claimed
    return run_id


@pytest.fixture
def holder_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for another run's executor."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_waiting_for_a_live_holder_names_it_and_stops_on_a_signal(
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    holder_process: subprocess.Popen[bytes],
    sig: signal.Signals,
) -> None:
    with cli.instance(monkeypatch) as instance:
        holder = _fake_live_holder(instance, holder_process.pid)
        waiting = cli.start("job", "execute", "-j", "migrate")
        # The waiting run says which run holds the slot (and its process), then waits for it.
        named = waiting.wait_for_line(lambda line: holder in line and "waiting" in line, timeout=120)
        assert f"pid {holder_process.pid}" in named, named

        # It waits asleep: it used to spin at most of a core.
        cpu_before, started = _cpu_seconds(waiting.process.pid), time.monotonic()
        time.sleep(3)
        cpu_share = (_cpu_seconds(waiting.process.pid) - cpu_before) / (time.monotonic() - started)
        assert cpu_share < 0.15, f"a blocked run used {cpu_share:.0%} of a core"

        # A signal stops the wait promptly (it used to be ignored), and the run ends failed.
        waiting.process.send_signal(sig)
        output = waiting.finish(timeout=30)
        assert waiting.process.returncode != 0
        (run,) = [r for r in instance.get_runs() if r.run_id != holder]
        assert run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED), output[-3000:]
        assert "Interrupted by a signal while step" in output
        # The live holder is left alone: still STARTED, still holding its slot.
        still = instance.get_run_by_id(holder)
        assert still is not None and still.status == dg.DagsterRunStatus.STARTED
        slots = instance.event_log_storage.get_concurrency_info(SOURCE_POOL).claimed_slots
        assert [s.run_id for s in slots] == [holder]


def test_a_holder_that_dies_while_waited_for_is_recovered(
    cli: Cli, databases: Databases, monkeypatch: pytest.MonkeyPatch, holder_process: subprocess.Popen[bytes]
) -> None:
    with cli.instance(monkeypatch) as instance:
        holder = _fake_live_holder(instance, holder_process.pid)
        waiting = cli.start("job", "execute", "-j", "migrate")
        waiting.wait_for_line(lambda line: holder in line and "waiting" in line, timeout=120)
        holder_process.kill()
        holder_process.wait()
        # Found dead at the next re-check (every few seconds), failed, its slot freed: migrate goes on.
        waiting.wait_for_line(lambda line: holder in line and "no longer running" in line, timeout=30)
        output = waiting.finish(timeout=MIGRATE_TIMEOUT_SECONDS)
        assert waiting.process.returncode == 0, output[-3000:]
        dead = instance.get_run_by_id(holder)
        assert dead is not None and dead.status == dg.DagsterRunStatus.FAILURE
        (run,) = [r for r in instance.get_runs() if r.run_id != holder]
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert instance.event_log_storage.get_concurrency_info(SOURCE_POOL).claimed_slots == []
