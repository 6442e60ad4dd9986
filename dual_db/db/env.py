"""dual-db's settings from the environment, one rule for where they come from, and private files.

Two loaders read `.env` from the working directory, with opposite precedence: Dagster's CLI
(`dagster job execute`, `dagster asset materialize`, `dagster dev`, ...) loads it *over* the
environment the command was started with, while most tools (and the `dual-db` CLI) load it *under* it.
A database URL silently swapped for another is the worst outcome of that disagreement (a migration
into the wrong core), so dual-db refuses instead of choosing: when one of its variables was set when
the user started the command and now holds a different value, the run stops with one line naming
the variable and both values, masked.

"When the user started the command" is the environment of the outermost `dagster`/`dg` process in
this process's ancestry, read from `/proc/<pid>/environ`: the kernel keeps there the environment a
process was started with, whatever Python later does to `os.environ`. That covers `dagster dev` too,
whose webserver, code servers and run workers inherit the environment after `.env` was applied.
Outside a Dagster command (tests, scripts calling `execute_in_process`) `os.environ` is what the
program chose, and is used as it is.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

from dotenv import dotenv_values

from dual_db.db.urls import DatabaseUrl, DatabaseUrlError, mask_unparseable_url

# Every variable dual-db reads. The URL ones are shown masked; the others are paths.
URL_VARIABLES = (
    "SOURCE_DATABASE_URL",
    "DATABASE_URL",
    "CORE_DATABASE_URL",
    "AI_DATABASE_URL",
    "ROLLBACK_DATABASE_URL",
    "DAGSTER_POSTGRES_URL",
)
PATH_VARIABLES = ("DUAL_DB_PG_BIN_DIR", "DUAL_DB_PLAN_FILE")
DUAL_DB_VARIABLES = URL_VARIABLES + PATH_VARIABLES

ENV_FILE_NAME = ".env"

# argv[0..2] of a Dagster command: `dagster`, `dagster-webserver`, `dg`, `python -m dagster_webserver`,
# `python -m dagster api grpc`, `python -m dagster._daemon`.
_DAGSTER_COMMAND = re.compile(r"^(dagster|dg)([-_.].*)?$")


class EnvironmentConflict(ValueError):
    """A dual-db variable differs from the value the user started the command with."""


class MissingVariable(ValueError):
    """None of the variables a setting can come from is set."""


def mask_value(name: str, value: str) -> str:
    """`value` as it may be shown: URLs masked, paths as they are."""
    if name not in URL_VARIABLES:
        return value
    try:
        return DatabaseUrl.parse(value).masked()
    except DatabaseUrlError:
        return mask_unparseable_url(value)


# ---- the environment the user started the command with ---------------------------------------------
def _read_proc(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def _parent_pid(pid: int) -> int | None:
    status = _read_proc(pid, "status")
    if status is None:
        return None
    match = re.search(rb"^PPid:\s+(\d+)", status, re.MULTILINE)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _is_dagster_command(pid: int) -> bool:
    cmdline = _read_proc(pid, "cmdline")
    if not cmdline:
        return False
    argv = [arg.decode("utf-8", "replace") for arg in cmdline.split(b"\0") if arg]
    return any(_DAGSTER_COMMAND.match(os.path.basename(arg)) for arg in argv[:3])


def _environ_of(pid: int) -> dict[str, str] | None:
    raw = _read_proc(pid, "environ")
    if raw is None:
        return None
    env = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env


@lru_cache(maxsize=1)
def launch_environment() -> dict[str, str] | None:
    """The environment the outermost Dagster command among this process and its ancestors started with.

    None when this process does not run under a Dagster command, or `/proc` cannot tell.
    """
    # The whole ancestry, not only the unbroken chain of dagster processes: the multiprocess executor's
    # step workers are `python -c "from multiprocessing.spawn ..."` children of a dagster process.
    outermost: int | None = None
    pid: int | None = os.getpid()
    seen: set[int] = set()
    while pid is not None and pid not in seen:
        seen.add(pid)
        if _is_dagster_command(pid):
            outermost = pid
        pid = _parent_pid(pid)
    return _environ_of(outermost) if outermost is not None else None


# ---- reading settings ------------------------------------------------------------------------------
def conflicts(
    names: Iterable[str] = DUAL_DB_VARIABLES,
    current: Mapping[str, str] | None = None,
    launched: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per variable in `names` whose value now differs from the one it was launched with."""
    current = os.environ if current is None else current
    launched = launch_environment() if launched is None else launched
    if launched is None:
        return []
    lines = []
    for name in names:
        before, now = launched.get(name) or None, current.get(name) or None
        if before is None or before == now:
            continue
        origin = _origin_of(name, now)
        lines.append(
            f"{name} is {mask_value(name, before)} in the shell but {_shown(name, now)} in {origin}: "
            f"dual-db will not choose between them; unset it in the shell or change {origin} so they agree"
        )
    return lines


def _shown(name: str, value: str | None) -> str:
    return "unset" if value is None else mask_value(name, value)


def _origin_of(name: str, value: str | None) -> str:
    env_file = Path.cwd() / ENV_FILE_NAME
    if value is not None and read_env_file(env_file).get(name) == value:
        return str(env_file)
    return "the environment Dagster passed on"


def check_environment(names: Iterable[str] = DUAL_DB_VARIABLES) -> None:
    """Raise EnvironmentConflict (one line) if any of `names` was silently replaced."""
    found = conflicts(names)
    if found:
        raise EnvironmentConflict(found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""))


def get(name: str) -> str | None:
    """The value of dual-db variable `name` (None if unset or empty), refusing a silent replacement."""
    check_environment([name])
    return os.environ.get(name) or None


def require(*names: str) -> str:
    """The value of the first of `names` that is set; raises MissingVariable naming them all."""
    for name in names:
        value = get(name)
        if value:
            return value
    wanted = " or ".join(names)
    raise MissingVariable(
        f"{wanted} is not set: set it in the environment or in {ENV_FILE_NAME} in the working directory"
    )


# ---- .env files ----------------------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    """`path`'s variables, parsed as Dagster parses them (python-dotenv); {} if there is no file."""
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_env_file(path: Path, environ: os._Environ[str] | dict[str, str] | None = None) -> None:
    """Add `path`'s variables to the environment; refuse if one of dual-db's differs from the shell."""
    target = os.environ if environ is None else environ
    values = read_env_file(path)
    for name in DUAL_DB_VARIABLES:
        shell, from_file = target.get(name) or None, values.get(name) or None
        if shell is not None and from_file is not None and shell != from_file:
            raise EnvironmentConflict(
                f"{name} is {mask_value(name, shell)} in the shell but {mask_value(name, from_file)} in "
                f"{path}: dual-db will not choose between them; unset it in the shell or change {path} "
                "so they agree"
            )
    for key, value in values.items():
        target.setdefault(key, value)


# ---- private files -------------------------------------------------------------------------------------
def private_umask() -> int:
    """Make every file this process creates from now on private (0600, directories 0700).

    Dumps, reports and Dagster's compute logs hold data and connection details. Returns the old umask.
    """
    return os.umask(0o077)


def write_private_text(path: Path, text: str) -> None:
    """Write `path` atomically, readable by this user only from the first byte on.

    A temporary file in the same directory (mkstemp creates it 0600) is renamed over `path`, so the
    contents are never readable by others, not even for a moment, and an old 0644 file is replaced.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
