"""Per-workload tuning of a target server: apply `sql/tuning/<target>.sql` and report what took effect.

The files hold `ALTER SYSTEM SET` (the whole server) and `ALTER DATABASE ... SET` (every new session
of the tuned database) statements, parsed with pglast to know which setting each one sets. For each
setting the report holds its value before, its value after (read in a new session, after
`pg_reload_conf()` has been processed) and a status:

- applied: the new value is in effect;
- pending restart: the server took it but reads it only at start (`shared_buffers`); never "applied";
- not permitted: the role may not change it (managed services often forbid ALTER SYSTEM); the other
  settings are still applied;
- not in effect: accepted, yet a session sees another value (a database or role setting overrides a
  server-wide one; the source column says which);
- rejected: the server refused the value itself (a mistake in the file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import psycopg
from pglast import ast
from pglast.enums import VariableSetKind
from pglast.stream import RawStream
from psycopg import errors, sql

from dual_db.db.connect import connection
from dual_db.db.sql_files import sql_file
from dual_db.db.urls import DatabaseUrl
from dual_db.schema.statements import Statement, statements_of

# What an `ALTER DATABASE` statement of a tuning file names: the database being tuned.
TARGET_DATABASE_PLACEHOLDER = "target_database"

# How long to wait for the postmaster to process `pg_reload_conf()` (it is a signal, handled
# asynchronously: a session opened right after it may still start with the old configuration).
RELOAD_TIMEOUT_SECONDS = 10.0


class TuningError(ValueError):
    """A tuning file that cannot be applied as written, or settings the server rejected."""


class Scope(StrEnum):
    SYSTEM = "system"
    DATABASE = "database"


class Status(StrEnum):
    APPLIED = "applied"
    PENDING_RESTART = "pending restart"
    NOT_PERMITTED = "not permitted"
    NOT_IN_EFFECT = "not in effect"
    REJECTED = "rejected"


@dataclass(frozen=True)
class TuningStatement:
    """One statement of a tuning file: which setting it sets, where, to what."""

    name: str
    scope: Scope
    value: str
    statement: Statement


@dataclass(frozen=True)
class SettingValue:
    """A setting as a session sees it: `pg_settings` columns and the displayed form (`256MB`)."""

    shown: str | None
    setting: str | None = None
    unit: str | None = None
    source: str | None = None
    vartype: str | None = None
    pending_restart: bool = False


@dataclass(frozen=True)
class SettingReport:
    name: str
    scope: Scope
    requested: str
    before: SettingValue
    after: SettingValue
    status: Status
    detail: str = ""

    def numeric_after(self) -> float | None:
        """The value in effect after, in the setting's base unit (`unit`), when it is a number."""
        return _number(self.after.setting) if self.after.vartype in ("integer", "real") else None


@dataclass(frozen=True)
class TuningReport:
    database: str
    settings: list[SettingReport]
    reloaded: bool
    reload_detail: str = ""

    def by_name(self) -> dict[str, SettingReport]:
        return {s.name: s for s in self.settings}

    def counts(self) -> dict[Status, int]:
        return {status: sum(1 for s in self.settings if s.status is status) for status in Status}

    def summary(self) -> str:
        counts = self.counts()
        parts = [f"{n} {status.value}" for status, n in counts.items() if n]
        return f"{len(self.settings)} settings on {self.database}: " + ", ".join(parts)

    def markdown(self) -> str:
        lines = [
            "| setting | scope | requested | before | after | source after | status |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in self.settings:
            status = s.status.value + (f": {s.detail}" if s.detail else "")
            lines.append(
                f"| {s.name} | {s.scope.value} | {s.requested} | {s.before.shown or '—'} | "
                f"{s.after.shown or '—'} | {s.after.source or '—'} | {status.replace('|', '/')} |"
            )
        return "\n".join(lines)


def tuning_statements(sql_text: str) -> list[TuningStatement]:
    """The settings a tuning file sets. Only `ALTER SYSTEM SET` and `ALTER DATABASE ... SET` with a
    value are accepted: anything else in the file is an error naming the statement."""
    result: list[TuningStatement] = []
    for statement in statements_of(sql_text):
        node = statement.node
        if isinstance(node, ast.AlterSystemStmt):
            scope = Scope.SYSTEM
        elif isinstance(node, ast.AlterDatabaseSetStmt):
            scope = Scope.DATABASE
        else:
            raise TuningError(
                "a tuning file holds only ALTER SYSTEM SET and ALTER DATABASE ... SET statements "
                f"(the configuration is reloaded for you), not: {statement.text[:200]}"
            )
        setstmt = node.setstmt
        if setstmt.kind != VariableSetKind.VAR_SET_VALUE or not setstmt.args:
            raise TuningError(f"a tuning statement sets a value: {statement.text[:200]}")
        value = ", ".join(_constant_text(arg, statement) for arg in setstmt.args)
        result.append(TuningStatement(name=setstmt.name, scope=scope, value=value, statement=statement))
    names = [s.name for s in result]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise TuningError(f"a tuning file sets each setting once; set twice: {', '.join(duplicated)}")
    return result


def _constant_text(arg: ast.Node, statement: Statement) -> str:
    value = getattr(arg, "val", None)
    for attribute in ("sval", "fval", "ival", "boolval"):
        if value is not None and hasattr(value, attribute):
            return str(getattr(value, attribute))
    raise TuningError(f"a tuning statement sets a constant value: {statement.text[:200]}")


def load_tuning_file(target: str) -> list[TuningStatement]:
    """`sql/tuning/<target>.sql` as statements."""
    path = sql_file("tuning", f"{target}.sql")
    if not path.is_file():
        raise TuningError(f"no tuning file for {target!r}: {path} does not exist")
    return tuning_statements(path.read_text())


# ---- reading settings ---------------------------------------------------------------------------


def load_pgvector(conn: psycopg.Connection) -> None:
    """Load pgvector's library in this session when the database has the extension.

    `hnsw.ef_search` and the other pgvector settings exist (with their default, range and unit, in
    `pg_settings`) only once the library is loaded, which happens at the first vector value a session
    handles: until then the server knows them as untyped placeholders. `LOAD` would need superuser."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_catalog.pg_extension e "
        "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    ).fetchone()
    if row is not None:
        conn.execute(sql.SQL("SELECT '[1]'::{}.vector").format(sql.Identifier(row[0])))


def read_settings(conn: psycopg.Connection, names: list[str]) -> dict[str, SettingValue]:
    """Each setting as this session sees it. A setting of an extension whose library is not loaded is
    not in `pg_settings`: its value as a placeholder is read, with the database's own setting as its
    source when there is one."""
    rows = conn.execute(
        "SELECT name, current_setting(name), setting, unit, source, vartype, pending_restart "
        "FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
        (names,),
    ).fetchall()
    found = {
        row[0]: SettingValue(
            shown=row[1], setting=row[2], unit=row[3], source=row[4], vartype=row[5], pending_restart=row[6]
        )
        for row in rows
    }
    database_settings = _database_settings(conn)
    for name in names:
        if name not in found:
            shown = conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()
            value = shown[0] if shown else None
            source = "database" if name in database_settings and value is not None else None
            found[name] = SettingValue(shown=value or None, setting=value or None, source=source)
    return found


def _database_settings(conn: psycopg.Connection) -> dict[str, str]:
    """`ALTER DATABASE <this one> SET` values (for every role), from `pg_db_role_setting`."""
    row = conn.execute(
        "SELECT setconfig FROM pg_catalog.pg_db_role_setting "
        "WHERE setrole = 0 AND setdatabase = (SELECT oid FROM pg_catalog.pg_database "
        "WHERE datname = current_database())"
    ).fetchone()
    entries: list[str] = row[0] if row and row[0] else []
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


# ---- comparing values ---------------------------------------------------------------------------

_MEMORY_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "min": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}
_TRUE = {"on", "true", "yes", "1", "t", "y"}
_FALSE = {"off", "false", "no", "0", "f", "n"}


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _split_unit(text: str) -> tuple[float | None, str]:
    """`'64MB'` → (64.0, 'MB'); `'8kB'` → (8.0, 'kB'); `'kB'` → (1.0, 'kB'); `'1.1'` → (1.1, '')."""
    stripped = text.strip()
    end = 0
    while end < len(stripped) and (stripped[end].isdigit() or stripped[end] in ".-+eE"):
        if stripped[end] in "eE" and end + 1 < len(stripped) and stripped[end + 1].isalpha():
            break
        end += 1
    number, unit = stripped[:end], stripped[end:].strip()
    if not number:
        return (1.0, unit) if unit else (None, "")
    return _number(number), unit


def _unit_factor(unit: str) -> tuple[str, float] | None:
    """A `pg_settings.unit` or a value's unit as (kind, factor to bytes or milliseconds)."""
    count, name = _split_unit(unit)
    if count is None:
        return None
    if name in _MEMORY_UNITS:
        return "memory", count * _MEMORY_UNITS[name]
    if name in _TIME_UNITS:
        return "time", count * _TIME_UNITS[name]
    return None


def same_value(requested: str, after: SettingValue) -> bool:
    """Whether the value in effect is the requested one, units and spelling aside (`'1GB'` for
    `effective_cache_size` is `131072` blocks of `8kB`; `on` is `true`)."""
    if after.setting is None:
        return False
    if after.vartype in ("integer", "real"):
        amount, unit = _split_unit(requested)
        current = _number(after.setting)
        if amount is None or current is None:
            return False
        base = _unit_factor(after.unit) if after.unit else None
        if unit:
            wanted = _unit_factor(unit)
            if wanted is None or base is None or wanted[0] != base[0]:
                return False
            amount *= wanted[1] / base[1]
        return abs(amount - current) <= 1e-9 * max(1.0, abs(current)) or (
            after.vartype == "integer" and round(amount) == current
        )
    if after.vartype == "bool":
        wanted_text = requested.strip().lower()
        current_on = after.setting.lower() in _TRUE
        return (wanted_text in _TRUE and current_on) or (wanted_text in _FALSE and not current_on)
    return requested.strip().casefold() == after.setting.strip().casefold()


# ---- applying -----------------------------------------------------------------------------------


def _executable(tuning: TuningStatement, dbname: str) -> str:
    """The statement to run: as written, except that `ALTER DATABASE` names the tuned database."""
    node = tuning.statement.node
    if isinstance(node, ast.AlterDatabaseSetStmt):
        if node.dbname not in (TARGET_DATABASE_PLACEHOLDER, dbname):
            raise TuningError(
                f"{tuning.statement.text[:200]}: ALTER DATABASE in a tuning file names "
                f"{TARGET_DATABASE_PLACEHOLDER} (the database being tuned, here {dbname}), "
                f"not {node.dbname}"
            )
        # pglast renders the statement back with the real name quoted as the server needs it.
        return RawStream()(ast.AlterDatabaseSetStmt(dbname=dbname, setstmt=node.setstmt))
    return tuning.statement.text


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _conf_load_time(url: DatabaseUrl) -> datetime:
    with connection(url, autocommit=True, application_name="dual-db tuning") as conn:
        row = conn.execute("SELECT pg_catalog.pg_conf_load_time()").fetchone()
        assert row is not None
        return row[0]


def _wait_for_reload(url: DatabaseUrl, loaded_before: datetime) -> bool:
    """New sessions fork from the postmaster; once it has re-read the configuration, their
    `pg_conf_load_time()` is later than before the reload."""
    deadline = time.monotonic() + RELOAD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if _conf_load_time(url) > loaded_before:
            return True
        time.sleep(0.1)
    return False


def apply_tuning(url: DatabaseUrl, statements: list[TuningStatement]) -> TuningReport:
    """Apply `statements` to the database at `url` (and, for ALTER SYSTEM, its server) and report each
    setting's value before and after. Raises `TuningError` when the server rejected a value, after
    applying every other setting."""
    dbname = url.dbname or "postgres"
    names = [s.name for s in statements]
    executable = {s.name: _executable(s, dbname) for s in statements}  # placeholder errors before any change
    outcome: dict[str, tuple[Status, str] | None] = {}
    with connection(url, autocommit=True, application_name="dual-db tuning") as conn:
        # Loaded before the changes too: the server then checks an ALTER DATABASE SET of a pgvector
        # setting against its real type and range.
        load_pgvector(conn)
        before = read_settings(conn, names)
        for tuning in statements:
            try:
                # Each ALTER runs on its own (ALTER SYSTEM cannot run in a transaction block), so a
                # setting that is not permitted leaves the others to be applied.
                conn.execute(executable[tuning.name])  # type: ignore[arg-type]
                outcome[tuning.name] = None
            except errors.InsufficientPrivilege as exc:
                outcome[tuning.name] = (Status.NOT_PERMITTED, _one_line(exc))
            except psycopg.DatabaseError as exc:
                outcome[tuning.name] = (Status.REJECTED, _one_line(exc))
        loaded_before = conn.execute("SELECT pg_catalog.pg_conf_load_time()").fetchone()
        reloaded, reload_detail = False, ""
        if any(s.scope is Scope.SYSTEM and outcome[s.name] is None for s in statements):
            try:
                conn.execute("SELECT pg_catalog.pg_reload_conf()")
                reloaded = True
            except errors.InsufficientPrivilege as exc:
                reload_detail = f"pg_reload_conf() not permitted: {_one_line(exc)}"
    if reloaded and loaded_before is not None and not _wait_for_reload(url, loaded_before[0]):
        reload_detail = f"the server had not reloaded its configuration after {RELOAD_TIMEOUT_SECONDS:g}s"
    # A new session: database settings apply at connection start, and it forks from the reloaded
    # postmaster.
    with connection(url, autocommit=True, application_name="dual-db tuning") as conn:
        load_pgvector(conn)
        after = read_settings(conn, names)
    reports = []
    for tuning in statements:
        status_detail = outcome[tuning.name]
        now = after[tuning.name]
        if status_detail is not None:
            status, detail = status_detail
        elif now.pending_restart:
            status, detail = Status.PENDING_RESTART, f"{tuning.value} once the server restarts"
        elif same_value(tuning.value, now):
            status, detail = Status.APPLIED, ""
        else:
            status = Status.NOT_IN_EFFECT
            detail = f"a new session sees {now.shown} (source: {now.source or 'unknown'})"
            if tuning.scope is Scope.SYSTEM and reload_detail:
                detail += f"; {reload_detail}"
        reports.append(
            SettingReport(
                name=tuning.name,
                scope=tuning.scope,
                requested=tuning.value,
                before=before[tuning.name],
                after=now,
                status=status,
                detail=detail,
            )
        )
    return TuningReport(
        database=url.masked(), settings=reports, reloaded=reloaded, reload_detail=reload_detail
    )


def rejected_error(report: TuningReport) -> TuningError | None:
    """The one-line error for settings the server refused, if any (they are in the report too)."""
    rejected = [s for s in report.settings if s.status is Status.REJECTED]
    if not rejected:
        return None
    return TuningError(
        f"{report.database}: the server rejected "
        + "; ".join(f"{s.name} = {s.requested} ({s.detail})" for s in rejected)
        + "; the other settings were applied: fix sql/tuning and materialize again"
    )
