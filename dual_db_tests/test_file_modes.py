"""Files that hold passwords or data are private (0600, directories 0700) from the moment they exist."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dual_db.embedded import EmbeddedCluster, EmbeddedServer, write_env_file
from dual_db.embedded import pg_bin_dir as embedded_pg_bin_dir
from dual_db_tests.cli_support import DagsterProject, make_project


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most shells have: new files 0644 unless the code says otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def exposure_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Files under tmp_path that were readable by others, contents in, when the code chmod-ed them."""
    exposed: list[str] = []
    original = Path.chmod

    def chmod(self: Path, mode: int, *, follow_symlinks: bool = True) -> None:
        if self.is_relative_to(tmp_path) and self.is_file() and self.stat().st_size:
            before = stat.S_IMODE(self.stat().st_mode)
            if before & 0o077:
                exposed.append(f"{self.name} was {oct(before)} with its contents in it")
        original(self, mode, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "chmod", chmod)
    return exposed


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_env_file_is_private_from_the_start(
    tmp_path: Path, usual_umask: None, exposure_log: list[str]
) -> None:
    env_file = tmp_path / ".env"
    write_env_file(env_file, {"CORE_DATABASE_URL": "postgresql://u:secret@h/core"})
    assert exposure_log == [] and _mode(env_file) == 0o600

    # A .env the user made world-readable is replaced by a private one, keeping their lines.
    env_file.write_text("# mine\nOTHER=1\nCORE_DATABASE_URL=old\n")
    env_file.chmod(0o644)
    exposure_log.clear()
    write_env_file(env_file, {"CORE_DATABASE_URL": "postgresql://u:secret@h/core", "AI_DATABASE_URL": "x"})
    assert exposure_log == [] and _mode(env_file) == 0o600
    assert env_file.read_text() == (
        "# mine\nOTHER=1\nCORE_DATABASE_URL=postgresql://u:secret@h/core\nAI_DATABASE_URL=x\n"
    )


def test_embedded_server_files_with_its_password_are_private_from_the_start(
    tmp_path: Path, usual_umask: None, exposure_log: list[str]
) -> None:
    server = EmbeddedServer(name="modes", root=tmp_path / "modes", bin_path=embedded_pg_bin_dir(18))
    assert server.init()  # initdb reads the password from a file; server.json keeps it
    assert exposure_log == []
    assert _mode(server.state_file) == 0o600
    assert _mode(server.root) == 0o700
    assert not (server.root / ".pwfile").exists()


@pytest.fixture
def project(servers: EmbeddedCluster, new_database, tmp_path: Path) -> DagsterProject:  # type: ignore[no-untyped-def]
    return make_project(tmp_path, servers, new_database)


def test_a_cli_run_writes_dumps_reports_and_compute_logs_privately(
    project: DagsterProject, usual_umask: None
) -> None:
    run = project.dagster_job("migrate", env=project.urls_env())
    assert run.returncode == 0, run.stderr[-3000:]
    storage = project.home / "storage"
    compute_logs = [p for p in storage.rglob("*") if p.is_file() and "compute_logs" in p.parts]
    dumps = [p for p in (project.cwd / ".dual_db" / "dumps").rglob("*") if p.is_file()]
    assert compute_logs and any(p.stat().st_size for p in compute_logs)
    assert any(p.name == "verification_report.json" for p in dumps)
    assert any(p.name == "pre_data.sql" for p in dumps)
    wide_files = [str(p) for p in compute_logs + dumps if _mode(p) & 0o077]
    assert wide_files == []
    directories = [p for p in [*storage.rglob("*"), *(project.cwd / ".dual_db").rglob("*")] if p.is_dir()]
    wide_dirs = [str(p) for p in directories if _mode(p) & 0o077]
    assert wide_dirs == []
