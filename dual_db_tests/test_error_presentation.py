"""What a user sees when something is wrong: one line naming what and how to fix it, not a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from dual_db.db.names import TableName
from dual_db.defs.resources import AiDatabase, CoreDatabase, MigrationSettings, SourceDatabase, SourceSnapshot
from dual_db.defs.source.assets import schema_dump
from dual_db.defs.targets.tables import copy_failure_description
from dual_db.embedded import EmbeddedCluster
from dual_db.routing import RoutingPlan, RoutingPlanError
from dual_db_tests.cli_support import DagsterProject, make_project, step_failure_descriptions
from dual_db_tests.conftest import Databases

DUAL_DB = str(Path(sys.executable).parent / "dual-db")


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8 text"),
        (b"core: [users\nai: {", "not valid YAML"),
        (b"- users\n- positions\n", "expected a mapping"),
        (b"core: users\n", "'core' must be a list"),
    ],
)
def test_a_bad_plan_file_is_named_with_what_is_wrong(tmp_path: Path, content: bytes, what: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_bytes(content)
    with pytest.raises(RoutingPlanError) as caught:
        RoutingPlan.load(plan)
    message = str(caught.value)
    assert str(plan) in message and what in message
    assert "\n" not in message


def test_a_plan_path_that_is_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(RoutingPlanError, match=f"routing plan {tmp_path} cannot be read"):
        RoutingPlan.load(tmp_path)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dual_db(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DUAL_DB, *args], cwd=cwd, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True
    )


def test_plan_discover_against_an_unreachable_source_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"postgresql://app:Secret-Pw-9@127.0.0.1:{_closed_port()}/railway"
    result = _dual_db(tmp_path, "plan", "--discover", "--file", "plan.yaml", SOURCE_DATABASE_URL=url)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("dual-db: cannot connect to postgresql://app:***@127.0.0.1:")
    assert "Secret-Pw-9" not in result.stderr + result.stdout


def test_plan_discover_without_a_source_names_the_variables(tmp_path: Path) -> None:
    result = _dual_db(tmp_path, "plan", "--discover", "--file", "plan.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "dual-db: SOURCE_DATABASE_URL or DATABASE_URL is not set: set it in the environment or in .env "
        "in the working directory"
    )


def test_a_run_without_the_core_url_fails_with_one_line_naming_it(
    databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resources that read their URL when the run starts (`CoreDatabase()`, no EnvVar at load time)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOURCE_DATABASE_URL", databases.source.uri())
    monkeypatch.setenv("AI_DATABASE_URL", databases.ai.uri())
    monkeypatch.delenv("CORE_DATABASE_URL", raising=False)
    source = SourceDatabase()
    result = dg.materialize(
        [schema_dump],
        resources={
            "source": source,
            "core": CoreDatabase(),
            "ai": AiDatabase(),
            "snapshot": SourceSnapshot(source=source),
            "settings": MigrationSettings(dumps_dir=str(tmp_path / "dumps")),
        },
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data
    assert data.user_failure_data is not None
    assert data.user_failure_data.description == (
        "CORE_DATABASE_URL is not set: set it in the environment or in .env in the working directory"
    )


@pytest.fixture
def project(servers: EmbeddedCluster, new_database, tmp_path: Path) -> DagsterProject:  # type: ignore[no-untyped-def]
    return make_project(tmp_path, servers, new_database)


def test_a_wrong_password_fails_the_cli_run_with_one_clear_line_first(project: DagsterProject) -> None:
    wrong = replace(project.source, password="Wrong-Pw-42")
    run = project.dagster_job("migrate", env={**project.urls_env(), "SOURCE_DATABASE_URL": wrong.uri()})
    assert run.returncode != 0
    expected = (
        f'cannot connect to {wrong.masked()}: connection failed: connection to server at "127.0.0.1", '
        f'port {wrong.port} failed: FATAL: password authentication failed for user "postgres". Check that '
        "the server is running and that SOURCE_DATABASE_URL has the right host, port, user and password"
    )
    _, events = project.latest_run_events()
    descriptions = step_failure_descriptions(events)
    assert descriptions and descriptions[0] == expected
    # In the command's output the line comes right under the first step failure, before any trace.
    lines = run.stderr.splitlines()
    first_failure = next(i for i, line in enumerate(lines) if "STEP_FAILURE" in line)
    following = [line for line in lines[first_failure + 1 :] if line.strip()]
    assert following[0] == f"dagster._core.definitions.events.Failure: {expected}"
    assert "Wrong-Pw-42" not in run.stdout + run.stderr


def test_clear_failure_turns_a_guard_error_into_a_one_line_step_failure(databases: Databases) -> None:
    """How the assets use `clear_failure`: the guard's sentence is the step's failure and its first log."""
    from dual_db.db.connect import connection
    from dual_db.defs.errors import clear_failure
    from dual_db.preflight import preflight

    with connection(databases.core, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")

    @dg.asset
    def guarded(context) -> None:  # type: ignore[no-untyped-def]  # a string annotation confuses Dagster here
        with clear_failure(context):
            preflight(databases.source, {"core": databases.core, "ai": databases.ai})

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([guarded], instance=instance, raise_on_error=False)
        records = list(instance.all_logs(result.run_id))
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
    assert description.startswith(f"the core database {databases.core.masked()} already has the vector")
    assert "\n" not in description
    # The same line is logged as an ERROR just before the step failure; the guard's error is the cause.
    errors = [r for r in records if r.level == 40 and r.dagster_event is None]
    assert [r.user_message for r in errors] == [description]
    assert failure.step_failure_data.error is not None
    assert "GuardError" in failure.step_failure_data.error.to_string()


def test_a_copy_that_fails_every_table_says_so_in_one_short_line() -> None:
    """A target server stopped mid-copy fails every table with a long libpq message each: the first
    line names the first table's error and the others by name; every error follows on its own line."""
    libpq = (
        'connection failed: connection to server at "127.0.0.1", port 51145 failed: FATAL:  the database '
        "system is shutting down; " * 3
    )
    failed = {
        TableName("public", f"table_{i:02d}"): f"table table_{i:02d} was not copied: {libpq}"
        for i in range(12)
    }

    description = copy_failure_description("core", failed, 40)

    first, *details = description.splitlines()
    assert len(first) < 600, first
    assert first.startswith(
        "12 of 40 table(s) failed to copy to core: table_00: table table_00 was not copied"
    )
    assert "also table_01, table_02" in first and "and 3 more" in first
    assert first.endswith("re-materialize it or re-run migrate.")
    assert details == [f"table_{i:02d}: {failed[TableName('public', f'table_{i:02d}')]}" for i in range(12)]
