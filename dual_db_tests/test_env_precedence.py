"""A database URL is never silently replaced: Dagster's CLI loads `.env` over the shell's environment,
dual-db's CLI under it; when the two disagree on one of dual-db's variables, both refuse, naming it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from dual_db.db.connect import connection
from dual_db.db.env import conflicts, load_env_file, mask_value
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedCluster
from dual_db_tests.cli_support import DagsterProject, make_project, step_failure_descriptions


@pytest.fixture
def project(servers: EmbeddedCluster, new_database, tmp_path: Path) -> DagsterProject:  # type: ignore[no-untyped-def]
    return make_project(tmp_path, servers, new_database)


def _user_tables(url: DatabaseUrl) -> int:
    with connection(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_dagster_cli_refuses_a_dotenv_core_url_that_differs_from_the_shell(
    project: DagsterProject,
    servers: EmbeddedCluster,
    new_database,  # type: ignore[no-untyped-def]
) -> None:
    dotenv_core = new_database(servers["core"])
    (project.cwd / ".env").write_text(f"CORE_DATABASE_URL={dotenv_core.uri()}\n")

    run = project.dagster_job("migrate", env=project.urls_env())

    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    line = (
        f"CORE_DATABASE_URL is {project.core.masked()} in the shell but {dotenv_core.masked()} in "
        f"{project.cwd / '.env'}"
    )
    assert line in output
    assert _user_tables(dotenv_core) == 0  # the .env database is untouched
    assert _user_tables(project.core) == 0  # and nothing was written anywhere
    _, events = project.latest_run_events()
    assert any(line in description for description in step_failure_descriptions(events))
    for secret in project.passwords:
        assert secret not in output


def test_dagster_cli_refuses_dotenv_settings_that_differ_from_the_shell(project: DagsterProject) -> None:
    other_bin = project.cwd / "other-bin"
    other_bin.mkdir()
    shell_bin = project.cwd / "shell-bin"
    shell_bin.mkdir()
    (project.cwd / ".env").write_text(f"DUAL_DB_PG_BIN_DIR={other_bin}\n")
    run = project.dagster_job("migrate", env={**project.urls_env(), "DUAL_DB_PG_BIN_DIR": str(shell_bin)})
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert (
        f"DUAL_DB_PG_BIN_DIR is {shell_bin} in the shell but {other_bin} in {project.cwd / '.env'}" in output
    )

    # The routing plan decides which assets exist: a different plan in .env stops the code location.
    other_plan = project.cwd / "other_plan.yaml"
    other_plan.write_text("core: [users]\nai: []\n")
    (project.cwd / ".env").write_text(f"DUAL_DB_PLAN_FILE={other_plan}\n")
    run = project.dagster_job("migrate", env=project.urls_env())
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"DUAL_DB_PLAN_FILE is {project.cwd / 'plan.yaml'} in the shell but {other_plan} in" in output
    assert _user_tables(project.core) == 0


LAUNCHING_INSTANCE = """
storage:
  postgres:
    postgres_url:
      env: DAGSTER_POSTGRES_URL
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
"""


def test_a_run_launched_in_a_worker_process_refuses_too(
    project: DagsterProject,
    servers: EmbeddedCluster,
    new_database,  # type: ignore[no-untyped-def]
) -> None:
    """As under `dagster dev`: the code server and the run worker are child processes that inherit the
    environment after Dagster applied `.env` over it."""
    (project.home / "dagster.yaml").write_text(LAUNCHING_INSTANCE)  # runs start at once, no daemon
    dotenv_core = new_database(servers["core"])
    (project.cwd / ".env").write_text(f"CORE_DATABASE_URL={dotenv_core.uri()}\n")
    launch = project.run(
        "dagster", "job", "launch", "-m", "dual_db.definitions", "-j", "migrate", env=project.urls_env()
    )
    assert launch.returncode == 0, launch.stderr[-3000:]
    deadline = time.monotonic() + 300
    while True:
        with project.instance() as instance:
            runs = instance.get_runs()
            if runs and runs[0].is_finished:
                break
        assert time.monotonic() < deadline, "the launched run did not finish"
        time.sleep(1)
    run, events = project.latest_run_events()
    assert run.status == dg.DagsterRunStatus.FAILURE
    line = f"CORE_DATABASE_URL is {project.core.masked()} in the shell but {dotenv_core.masked()} in"
    assert any(line in description for description in step_failure_descriptions(events))
    assert _user_tables(dotenv_core) == 0 and _user_tables(project.core) == 0


def test_processes_started_by_a_dagster_command_compare_with_its_launch_environment(tmp_path: Path) -> None:
    """`dagster dev`: the webserver, code servers and run workers inherit the environment after `.env`
    was applied over it; the comparison is with the environment the outermost dagster command got."""
    fake_dagster = tmp_path / "dagster"
    fake_dagster.write_text(
        f"#!{sys.executable}\n"
        "import os, subprocess, sys\n"
        "os.environ['CORE_DATABASE_URL'] = 'postgresql://app:from-dotenv@dotenv-host/core'\n"
        "child = 'from dual_db.db.env import conflicts; print(conflicts())'\n"
        "sys.exit(subprocess.call([sys.executable, '-c', child]))\n"
    )
    fake_dagster.chmod(0o700)
    shell = {"PATH": "/usr/bin:/bin", "CORE_DATABASE_URL": "postgresql://app:from-shell@shell-host/core"}
    result = subprocess.run([str(fake_dagster)], env=shell, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "CORE_DATABASE_URL is postgresql://app:***@shell-host/core in the shell" in result.stdout
    assert "postgresql://app:***@dotenv-host/core" in result.stdout
    assert "from-shell" not in result.stdout and "from-dotenv" not in result.stdout

    # Not under a Dagster command (a script, the tests): what the program set is what it meant.
    plain = subprocess.run(
        [sys.executable, "-c", "from dual_db.db.env import conflicts; print(conflicts())"],
        env=shell,
        capture_output=True,
        text=True,
    )
    assert plain.stdout.strip() == "[]", plain.stderr


def test_conflict_rules() -> None:
    shell_url = "postgresql://app:one@host-a/core"
    dotenv_url = "postgresql://app:two@host-b/core"
    assert (
        conflicts(current={"CORE_DATABASE_URL": shell_url}, launched={"CORE_DATABASE_URL": shell_url}) == []
    )
    # Only .env sets it: that is what .env is for.
    assert conflicts(current={"CORE_DATABASE_URL": dotenv_url}, launched={}) == []
    [line] = conflicts(current={"CORE_DATABASE_URL": dotenv_url}, launched={"CORE_DATABASE_URL": shell_url})
    assert "postgresql://app:***@host-a/core" in line and "postgresql://app:***@host-b/core" in line
    assert "one" not in line.split("core")[0] and ":two@" not in line
    # Variables that are not dual-db's are none of its business.
    assert conflicts(current={"HOME": "/a"}, launched={"HOME": "/b"}) == []
    assert mask_value("AI_DATABASE_URL", "postgresql://u:p w@:x/db") == "postgresql://u:***@:x/db"


def test_dual_db_cli_refuses_a_dotenv_url_that_differs_from_the_shell(
    servers: EmbeddedCluster,
    new_database,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    shell_source, dotenv_source = new_database(servers["source"]), new_database(servers["source"])
    (tmp_path / ".env").write_text(f"SOURCE_DATABASE_URL={dotenv_source.uri()}\n")
    env = {"PATH": "/usr/bin:/bin", "SOURCE_DATABASE_URL": shell_source.uri()}
    plan = tmp_path / "plan.yaml"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dual-db"), "plan", "--discover", "--file", str(plan)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"dual-db: SOURCE_DATABASE_URL is {shell_source.masked()} in the shell but {dotenv_source.masked()} "
        f"in .env: dual-db will not choose between them; unset it in the shell or change .env so they agree"
    )
    assert not plan.exists()


def test_load_env_file_adds_what_the_shell_does_not_set(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("export CORE_DATABASE_URL='postgresql://a@h/core'\nOTHER=1\n# comment\n")
    environ = {"CORE_DATABASE_URL": "postgresql://a@h/core", "OTHER": "shell"}
    load_env_file(env_file, environ)
    assert environ == {"CORE_DATABASE_URL": "postgresql://a@h/core", "OTHER": "shell"}
    fresh: dict[str, str] = {}
    load_env_file(env_file, fresh)
    assert fresh == {"CORE_DATABASE_URL": "postgresql://a@h/core", "OTHER": "1"}
