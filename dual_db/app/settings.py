"""The application's settings for the split (plan phase 6.1), and its URLs in asyncpg's terms.

`DATABASE_URL` is the core database; `AI_DATABASE_URL` the AI database, falling back to the core one
when it is not set (the plan's rule: an application deployed before the split keeps working on one
database). Every URL form `DatabaseUrl` parses is accepted and turned into a `postgresql+asyncpg://`
SQLAlchemy URL plus the `connect_args` asyncpg needs for what a URL query cannot carry.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import URL

from dual_db.db.urls import DatabaseUrl, DatabaseUrlError

CORE_URL_ENV = "DATABASE_URL"
AI_URL_ENV = "AI_DATABASE_URL"

# libpq's TLS file and protocol settings: asyncpg reads them only from a DSN, so they travel in one.
_ASYNCPG_DSN_ONLY = (
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslpassword",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
)
# libpq keywords that are also asyncpg.connect() keywords of the same meaning.
_ASYNCPG_SAME_NAME = ("target_session_attrs", "krbsrvname", "gsslib")


class AppSettingsError(ValueError):
    """A setting the application cannot start with. One line; never contains a password."""


@dataclass(frozen=True)
class PoolSettings:
    """SQLAlchemy's pool for one engine. `pool_recycle` (seconds) replaces connections before a proxy
    or a managed provider's idle timeout closes them under the pool; `pool_pre_ping` catches the rest."""

    pool_size: int
    max_overflow: int
    pool_pre_ping: bool = True
    pool_recycle: int = 1800

    @classmethod
    def from_environment(cls, prefix: str, default: PoolSettings, environ: Mapping[str, str]) -> PoolSettings:
        """`<prefix>_POOL_SIZE`, `_MAX_OVERFLOW`, `_POOL_PRE_PING`, `_POOL_RECYCLE`, each optional."""

        def number(name: str, fallback: int) -> int:
            raw = environ.get(f"{prefix}_{name}")
            if raw is None or raw.strip() == "":
                return fallback
            try:
                return int(raw)
            except ValueError:
                raise AppSettingsError(f"{prefix}_{name} is {raw!r}: expected a whole number") from None

        pre_ping_raw = environ.get(f"{prefix}_POOL_PRE_PING")
        pre_ping = default.pool_pre_ping
        if pre_ping_raw is not None and pre_ping_raw.strip() != "":
            lowered = pre_ping_raw.strip().lower()
            if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise AppSettingsError(f"{prefix}_POOL_PRE_PING is {pre_ping_raw!r}: expected true or false")
            pre_ping = lowered in ("1", "true", "yes", "on")
        return cls(
            pool_size=number("POOL_SIZE", default.pool_size),
            max_overflow=number("MAX_OVERFLOW", default.max_overflow),
            pool_pre_ping=pre_ping,
            pool_recycle=number("POOL_RECYCLE", default.pool_recycle),
        )

    def engine_kwargs(self) -> dict[str, Any]:
        return {
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "pool_pre_ping": self.pool_pre_ping,
            "pool_recycle": self.pool_recycle,
        }


# The plan's pool sizes (phase 6.2).
CORE_POOL_DEFAULT = PoolSettings(pool_size=20, max_overflow=10)
AI_POOL_DEFAULT = PoolSettings(pool_size=10, max_overflow=5)


@dataclass(frozen=True)
class AppSettings:
    """`repr` shows masked URLs only (DatabaseUrl masks itself)."""

    DATABASE_URL: DatabaseUrl
    AI_DATABASE_URL: DatabaseUrl | None = None
    core_pool: PoolSettings = field(default=CORE_POOL_DEFAULT)
    ai_pool: PoolSettings = field(default=AI_POOL_DEFAULT)

    @property
    def core_database_url(self) -> DatabaseUrl:
        """Core database URL (portfolios, positions, calculations)."""
        return self.DATABASE_URL

    @property
    def ai_database_url(self) -> DatabaseUrl:
        """AI database URL (RAG, memories, feedback). Falls back to core if not set."""
        return self.AI_DATABASE_URL or self.DATABASE_URL

    @property
    def ai_falls_back_to_core(self) -> bool:
        return self.AI_DATABASE_URL is None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> AppSettings:
        """From `os.environ` (or `environ`): `DATABASE_URL` is required, `AI_DATABASE_URL` optional
        (empty counts as unset), pools from `CORE_DB_*` and `AI_DB_*` (see PoolSettings)."""
        environ = os.environ if environ is None else environ
        core_raw = environ.get(CORE_URL_ENV, "").strip()
        if not core_raw:
            raise AppSettingsError(f"{CORE_URL_ENV} is not set: set it to the core database's URL")
        ai_raw = environ.get(AI_URL_ENV, "").strip()
        return cls(
            DATABASE_URL=_parse(CORE_URL_ENV, core_raw),
            AI_DATABASE_URL=_parse(AI_URL_ENV, ai_raw) if ai_raw else None,
            core_pool=PoolSettings.from_environment("CORE_DB", CORE_POOL_DEFAULT, environ),
            ai_pool=PoolSettings.from_environment("AI_DB", AI_POOL_DEFAULT, environ),
        )


def _parse(variable: str, raw: str) -> DatabaseUrl:
    try:
        url = DatabaseUrl.parse(raw)
    except DatabaseUrlError as exc:
        raise AppSettingsError(f"{variable}: {exc}") from None
    # Fail at start-up, not at the first request, when an option cannot reach asyncpg.
    try:
        asyncpg_target(url)
    except AppSettingsError as exc:
        raise AppSettingsError(f"{variable}: {exc}") from None
    return url


@dataclass(frozen=True)
class AsyncpgTarget:
    """What `create_async_engine` needs for one database: the URL (its str/repr mask the password)
    and the asyncpg arguments no URL query can carry."""

    url: URL
    connect_args: dict[str, Any]


def asyncpg_target(url: DatabaseUrl) -> AsyncpgTarget:
    """`url` in asyncpg's terms. libpq's `sslmode` becomes asyncpg's `ssl`; `application_name` and
    `options=-c name=value` become server settings; `connect_timeout` asyncpg's `timeout`; TLS files
    travel in a DSN of their own. Any other libpq option is refused, named, rather than handed to
    asyncpg.connect(), which would fail on it at the first request."""
    query: dict[str, str] = {}
    connect_args: dict[str, Any] = {}
    server_settings: dict[str, str] = {}
    dsn_only: dict[str, str] = {}
    for key, value in url.options:
        if key == "sslmode":
            query["ssl"] = value
        elif key in _ASYNCPG_SAME_NAME:
            query[key] = value
        elif key == "application_name":
            server_settings["application_name"] = value
        elif key == "options":
            server_settings.update(_server_settings_from_options(value))
        elif key == "connect_timeout":
            try:
                connect_args["timeout"] = float(value)
            except ValueError:
                raise AppSettingsError(f"connect_timeout={value!r} is not a number of seconds") from None
        elif key == "passfile":
            connect_args["passfile"] = value
        elif key in _ASYNCPG_DSN_ONLY:
            dsn_only[key] = value
        else:
            raise AppSettingsError(
                f"the URL option {key!r} has no asyncpg equivalent: remove it from the URL "
                "(asyncpg accepts sslmode/ssl, application_name, options=-c name=value, connect_timeout, "
                "target_session_attrs and the ssl* file settings)"
            )
    if server_settings:
        connect_args["server_settings"] = server_settings
    if dsn_only:
        # asyncpg takes host, user and password from the keyword arguments; the DSN adds only these.
        connect_args["dsn"] = "postgresql://?" + urlencode(dsn_only)
    host = url.host
    if url.is_unix_socket:
        # SQLAlchemy's asyncpg dialect reads a socket directory from the query, as libpq does.
        query["host"] = host or ""
        host = None
    sa_url = URL.create(
        "postgresql+asyncpg",
        username=url.user,
        password=url.password,
        host=host,
        port=url.port,
        database=url.dbname,
        query=query,
    )
    return AsyncpgTarget(url=sa_url, connect_args=connect_args)


def _server_settings_from_options(options: str) -> dict[str, str]:
    """libpq's `options` (`-c name=value -c ...`, or `--name=value`) as server settings."""
    # libpq splits `options` on whitespace with backslash escapes, as a POSIX shell does.
    tokens = shlex.split(options)
    settings: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "-c" and i + 1 < len(tokens):
            assignment = tokens[i + 1]
            i += 2
        elif token.startswith("-c") and len(token) > 2:
            assignment = token[2:]
            i += 1
        elif token.startswith("--") and "=" in token:
            assignment = token[2:]
            i += 1
        else:
            raise AppSettingsError(
                f"options={options!r}: only '-c name=value' settings can be passed to asyncpg"
            )
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise AppSettingsError(f"options={options!r}: expected '-c name=value'")
        settings[name.replace("-", "_")] = value
    return settings
