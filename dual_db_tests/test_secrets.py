"""No password anywhere: not in exceptions, output, Dagster's event log, compute logs, files written
under .dual_db/ and the dumps directory, nor the command lines of the processes a run starts."""

from __future__ import annotations

import os
import threading
import traceback
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from dual_db.db.urls import DatabaseUrl, DatabaseUrlError
from dual_db.embedded import EmbeddedCluster, EmbeddedServer, pg_bin_dir
from dual_db_tests.cli_support import DagsterProject, all_text_under, make_project

MALFORMED_PASSWORD = "pa ss"
MALFORMED_URL = f"postgresql://user:{MALFORMED_PASSWORD}@:notaport/db"


@pytest.fixture
def project(servers: EmbeddedCluster, new_database, tmp_path: Path) -> DagsterProject:  # type: ignore[no-untyped-def]
    return make_project(tmp_path, servers, new_database)


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        (MALFORMED_URL, MALFORMED_PASSWORD),
        ("postgresql://user:pa ss@host/db?sslmode=nonsense value", MALFORMED_PASSWORD),
        ("postgresql://user:pa ss@host:5432/db extra", MALFORMED_PASSWORD),
        ("host=h password='pa ss' port=notaport dbname=db", MALFORMED_PASSWORD),
        # Unencoded '@', '/' in a password: libpq cuts the URL inside the password.
        ("postgresql://user:zq@xy:wv@host/db", "xy:wv"),
        ("postgresql://user:zq/xy@host:5432/db", "zq"),
        ("postgresql://user:zq@xy@host/db", "xy"),
    ],
)
def test_a_malformed_url_error_carries_no_password_in_its_chain(raw: str, secret: str) -> None:
    with pytest.raises(DatabaseUrlError) as caught:
        DatabaseUrl.parse(raw)
    shown = "".join(traceback.format_exception(caught.value))
    assert secret not in shown, shown
    assert "percent-encode" in str(caught.value)
    # Dagster keeps the cause and the context of an error (unless suppressed) in the event log.
    error = dg._utils.error.serializable_error_info_from_exc_info(  # type: ignore[attr-defined]
        (type(caught.value), caught.value, caught.value.__traceback__)
    )
    assert secret not in str(error.to_string())


class CommandLineWatcher:
    """Collects the command line of every process on the machine while a run goes on."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if cmdline:
                    self.seen.add(cmdline.replace(b"\0", b" ").decode("utf-8", "replace"))
            self._stop.wait(0.002)

    def __enter__(self) -> CommandLineWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _recording_pg_dump(bin_dir: Path, log_dir: Path) -> None:
    """A pg_dump that writes down its environment (`ps e` shows it to the user), then is pg_dump."""
    bin_dir.mkdir()
    log_dir.mkdir()
    real = pg_bin_dir(18) / "pg_dump"
    wrapper = bin_dir / "pg_dump"
    wrapper.write_text(f'#!/bin/sh\nenv > "{log_dir}/pg_dump.$$.env"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o700)


def test_a_cli_migration_and_a_malformed_url_leak_no_password(project: DagsterProject) -> None:
    bin_dir, env_log = project.cwd.parent / "pg-bin", project.cwd.parent / "pg-dump-environments"
    _recording_pg_dump(bin_dir, env_log)
    with CommandLineWatcher() as watcher:
        migrate = project.dagster_job(
            "migrate", env={**project.urls_env(), "DUAL_DB_PG_BIN_DIR": str(bin_dir)}
        )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    pg_dumps = [cmd for cmd in watcher.seen if "pg_dump" in cmd and project.source.dbname in cmd]
    assert pg_dumps, "no pg_dump seen: the watcher proves nothing"
    environments = [path.read_text() for path in env_log.iterdir()]
    # The pg_dumps that connect (the backup, the schema sections) get their password in a passfile;
    # `pg_dump --version` and `pg_config` get no URL (test_every_client_tool_dual_db_starts_gets_no_...).
    connecting = [environ for environ in environments if "PGPASSFILE=" in environ]
    assert len(connecting) >= 2

    malformed = project.dagster_job("migrate", env={**project.urls_env(), "CORE_DATABASE_URL": MALFORMED_URL})
    assert malformed.returncode != 0
    assert (
        "cannot parse database URL postgresql://user:***@:notaport/db" in malformed.stdout + malformed.stderr
    )

    with project.instance() as instance:
        runs = instance.get_runs()
        assert len(runs) == 2
        event_log = "\n".join(
            f"{entry!r}\n{entry.dagster_event!r}" for run in runs for entry in instance.all_logs(run.run_id)
        )
        run_configs = "\n".join(repr(run.run_config) + repr(run.tags) for run in runs)
    assert "cannot parse database URL" in event_log  # the error is there, the password is not
    compute_logs = all_text_under(project.home / "storage")
    assert compute_logs.strip()
    files = all_text_under(project.cwd / ".dual_db")
    assert "CREATE TABLE public.users" in files  # the dumps are there, and were read

    places = {
        "stdout/stderr": migrate.stdout + migrate.stderr + malformed.stdout + malformed.stderr,
        "event log": event_log,
        "run config and tags": run_configs,
        "compute logs": compute_logs,
        ".dual_db": files,
        "command lines": "\n".join(watcher.seen),
        "environment of every pg_dump": "\n".join(environments),
    }
    secrets = [*project.passwords, MALFORMED_PASSWORD, replace(project.core).password]
    for where, text in places.items():
        for secret in secrets:
            assert secret and secret not in text, f"a password leaked into the {where}"


def test_embedded_servers_do_not_inherit_a_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dual-db up` from a shell that exports URLs: the servers (run as another user under root) would
    carry them in their environment, readable by that user."""
    monkeypatch.setenv("CORE_DATABASE_URL", "postgresql://app:Inherited-Pw-7@db.example.com/core")
    monkeypatch.setenv("PGPASSWORD", "Inherited-Pw-8")
    server = EmbeddedServer(name="inherit", root=tmp_path / "inherit")
    server.start()
    try:
        pid = server.pid()
        assert pid is not None
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace")
        assert "PATH=" in environ  # the environment is readable, and holds no password
        assert "Inherited-Pw-7" not in environ and "Inherited-Pw-8" not in environ
    finally:
        server.stop()


def _compute_log_manager_class() -> type:
    """The compute log manager dagster.yaml configures (Dagster's LocalComputeLogManager if none)."""
    import importlib

    import yaml
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

    config = yaml.safe_load((Path(__file__).parent.parent / "dagster.yaml").read_text()) or {}
    section = config.get("compute_logs")
    if not section:
        return LocalComputeLogManager
    return getattr(importlib.import_module(section["module"]), section["class"])  # type: ignore[no-any-return]


def test_compute_log_children_do_not_inherit_the_database_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster's log capture starts `tail -F` (and a watcher) per run with the run's environment: the
    URLs there were readable in /proc/<pid>/environ for the whole run (issue 18, defect 9)."""
    import psutil

    secret = "Tail-Leak-Pw-9"
    monkeypatch.setenv("SOURCE_DATABASE_URL", f"postgresql://u:{secret}@127.0.0.1:1/db")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", f"postgresql+psycopg2://u:{secret}@127.0.0.1:1/i")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    manager = _compute_log_manager_class()(base_dir=str(tmp_path / "storage"))
    with manager.capture_logs(["run", "compute_logs", "key"]):
        children = psutil.Process().children(recursive=True)
        environments = {
            " ".join(child.cmdline()): Path(f"/proc/{child.pid}/environ")
            .read_bytes()
            .decode("utf-8", "replace")
            for child in children
        }
    assert any(cmd.startswith("tail -F") for cmd in environments), environments.keys()
    for cmd, environ in environments.items():
        assert "PATH=" in environ
        assert secret not in environ, f"a database URL is in the environment of {cmd!r}"
    # the run itself still reads its URLs
    assert secret in os.environ["SOURCE_DATABASE_URL"]


def test_every_client_tool_dual_db_starts_gets_no_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_dump --version and pg_config --configure (the backup's compression choice) ran with the run's
    whole environment; they need no URL (issue 18, defect 9)."""
    from dual_db.schema.dump import backup_compression

    secret = "Tool-Leak-Pw-9"
    monkeypatch.setenv("CORE_DATABASE_URL", f"postgresql://u:{secret}@127.0.0.1:1/db")
    bin_dir, log_dir = tmp_path / "bin", tmp_path / "envs"
    _recording_pg_dump(bin_dir, log_dir)
    real = pg_bin_dir(18) / "pg_config"
    wrapper = bin_dir / "pg_config"
    wrapper.write_text(f'#!/bin/sh\nenv > "{log_dir}/pg_config.$$.env"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o700)
    assert backup_compression(bin_dir)
    environments = {path.name.split(".")[0]: path.read_text() for path in log_dir.iterdir()}
    assert set(environments) == {"pg_dump", "pg_config"}
    for tool, environ in environments.items():
        assert "PATH=" in environ and secret not in environ, f"a database URL is in the environment of {tool}"
