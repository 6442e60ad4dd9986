"""Database URLs: one parser for every form the migration plan uses, and one masked form for display.

A `DatabaseUrl` is the only way a URL travels through dual-db. Its `repr`/`str` are masked, so a
password cannot reach a log line, Dagster metadata or an exception message by accident; the password
is handed to libpq only through keyword arguments (in-process) or a private passfile (subprocesses),
never through a command line that `ps` would show.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg.conninfo

# SQLAlchemy-style driver suffixes people paste from their app config (`postgresql+asyncpg://`).
_SCHEMES = ("postgresql", "postgres")

# asyncpg spells TLS `ssl=`; libpq spells it `sslmode=`.
_ASYNCPG_SSL_TO_SSLMODE = {
    "true": "require",
    "false": "disable",
    "disable": "disable",
    "allow": "allow",
    "prefer": "prefer",
    "require": "require",
    "verify-ca": "verify-ca",
    "verify-full": "verify-full",
}

# libpq keywords that are not connection identity and may be passed through unchanged.
_IDENTITY_KEYS = ("host", "hostaddr", "port", "user", "password", "dbname")


class DatabaseUrlError(ValueError):
    """A URL that cannot be used. The message never contains the password."""


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed PostgreSQL connection target.

    `host` is a host name, an IP address, or (starting with `/`) a unix-socket directory.
    """

    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)
    dbname: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    # ---- parsing -------------------------------------------------------------------------------
    @classmethod
    def parse(cls, raw: str) -> DatabaseUrl:
        """Accept `postgresql://`, `postgres://`, `postgresql+<driver>://`, and libpq `key=value` strings."""
        if not isinstance(raw, str) or not raw.strip():
            raise DatabaseUrlError("database URL is empty")
        text = raw.strip()
        hint = "percent-encode spaces and the characters @ : / ? # in the user name and password"
        if "://" in text:
            scheme, rest = text.split("://", 1)
            base = scheme.split("+", 1)[0].lower()
            if base not in _SCHEMES:
                raise DatabaseUrlError(
                    f"unsupported URL scheme {scheme!r}: expected postgresql://, postgres:// "
                    "or postgresql+<driver>://"
                )
            text = "postgresql://" + rest
            if rest.split("/", 1)[0].count("@") > 1:
                # libpq would take what follows the first '@' for the host: part of the password.
                raise DatabaseUrlError(
                    f"database URL {mask_unparseable_url(raw)} has more than one '@': {hint}"
                )
        try:
            params = psycopg.conninfo.conninfo_to_dict(_translate_asyncpg_params(text))
        except psycopg.ProgrammingError:
            # libpq's message quotes the offending fragment, which may be the password: keep it out of
            # the message and out of the chain (`from None`), which tracebacks and Dagster's event
            # log print too.
            raise DatabaseUrlError(f"cannot parse database URL {mask_unparseable_url(raw)}: {hint}") from None
        params = {k: str(v) for k, v in params.items() if v is not None and str(v) != ""}
        port_text = params.pop("port", None)
        port: int | None = None
        if port_text is not None:
            if "," in port_text:
                raise DatabaseUrlError("multi-host URLs are not supported: name one server per URL")
            try:
                port = int(port_text)
            except ValueError:
                # Not quoted: an unencoded '/' or '@' in the password makes libpq read part of it as the port.
                raise DatabaseUrlError(
                    f"the port in database URL {mask_unparseable_url(raw)} is not a number: {hint}"
                ) from None
        host = params.pop("host", None)
        if host is not None and "," in host:
            raise DatabaseUrlError("multi-host URLs are not supported: name one server per URL")
        return cls(
            host=host,
            port=port,
            user=params.pop("user", None),
            password=params.pop("password", None),
            dbname=params.pop("dbname", None),
            options=tuple(sorted(params.items())),
        )

    # ---- derived forms ---------------------------------------------------------------------------
    def with_dbname(self, dbname: str) -> DatabaseUrl:
        return replace(self, dbname=dbname)

    def with_options(self, **options: str) -> DatabaseUrl:
        merged = dict(self.options)
        merged.update(options)
        return replace(self, options=tuple(sorted(merged.items())))

    @property
    def is_unix_socket(self) -> bool:
        return self.host is not None and self.host.startswith("/")

    def masked(self) -> str:
        """`postgresql://user:***@host:port/db`: safe for logs, metadata and the UI."""
        auth = ""
        if self.user:
            auth = self.user + (":***" if self.password else "") + "@"
        elif self.password:
            auth = ":***@"
        if self.is_unix_socket:
            location = ""
            query = [("host", self.host or "")]
        else:
            location = self.host or ""
            query = []
        if self.port is not None:
            location += f":{self.port}"
        query += list(self.options)
        text = f"postgresql://{auth}{location}/{self.dbname or ''}"
        if query:
            text += "?" + "&".join(f"{k}={v}" for k, v in query)
        return text

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.masked()!r})"

    def connect_kwargs(self) -> dict[str, str | int]:
        """Keyword arguments for `psycopg.connect` (password included: in-process only)."""
        kwargs: dict[str, str | int] = dict(self.options)
        for key in _IDENTITY_KEYS:
            value = getattr(self, key, None)
            if value is not None:
                kwargs[key] = value
        return kwargs

    def conninfo(self, *, with_password: bool = True) -> str:
        kwargs = self.connect_kwargs()
        if not with_password:
            kwargs.pop("password", None)
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in kwargs.items()})

    def sqlalchemy_url(self, driver: str = "psycopg2") -> str:
        """A SQLAlchemy URL. Used for Dagster's instance storage, which needs psycopg2."""
        # Same percent-encoding as `uri()`: SQLAlchemy decodes it, and libpq could parse it too.
        return f"postgresql+{driver}://" + self.uri().split("://", 1)[1]

    def application_url(self) -> str:
        """The `postgresql+asyncpg://` URL an application on SQLAlchemy + asyncpg is configured with,
        password included (only for an owner-only file). asyncpg spells libpq's `sslmode` `ssl`; other
        libpq options (`connect_timeout`, `application_name`, ...) are left out, since
        `create_async_engine` hands URL options to `asyncpg.connect`, which refuses them."""
        from dataclasses import replace as _replace

        options = tuple(("ssl", v) for k, v in self.options if k == "sslmode")
        return "postgresql+asyncpg://" + _replace(self, options=options).uri().split("://", 1)[1]

    def uri(self) -> str:
        """The full `postgresql://` URI including the password. Only for writing `.env` files."""
        from urllib.parse import quote

        auth = ""
        if self.user:
            auth = quote(self.user, safe="")
            if self.password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        location = "" if self.is_unix_socket else (self.host or "")
        if self.port is not None:
            location += f":{self.port}"
        query = list(self.options)
        if self.is_unix_socket:
            query.insert(0, ("host", self.host or ""))
        text = f"postgresql://{auth}{location}/{quote(self.dbname or '', safe='')}"
        if query:
            text += "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in query)
        return text

    @contextmanager
    def libpq_subprocess(self) -> Iterator[tuple[str, dict[str, str]]]:
        """(conninfo without password, environment) for running pg_dump/psql/pg_restore.

        The password goes into a passfile readable by this user only, deleted afterwards, so it is
        in neither the command line (`ps`) nor the environment of the child.
        """
        env = client_tool_environment()
        conninfo = self.conninfo(with_password=False)
        if self.password is None:
            yield conninfo, env
            return
        with tempfile.TemporaryDirectory(prefix="dual-db-pass-") as tmp:
            passfile = Path(tmp) / "pgpass"
            # One dedicated passfile per connection: wildcards match exactly this server.
            escaped = self.password.replace("\\", "\\\\").replace(":", "\\:")
            # 0600 from creation (the directory is 0700 too): never readable by others, not even briefly.
            with os.fdopen(os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(f"*:*:*:*:{escaped}\n")
            env["PGPASSFILE"] = str(passfile)
            yield conninfo, env


def client_tool_environment() -> dict[str, str]:
    """dual-db's environment for a PostgreSQL client tool (pg_dump, psql), without any password.

    No URL from dual-db's own environment (`*DATABASE_URL`, `DAGSTER_POSTGRES_URL`): a process's
    environment is visible to its user (`ps e`, /proc/<pid>/environ), and the tools need none of it.
    No PGPASSWORD/PGPASSFILE either: `libpq_subprocess` hands the password over in its own passfile.
    """
    return {k: v for k, v in os.environ.items() if not _holds_a_password(k)}


def _holds_a_password(variable: str) -> bool:
    return variable in ("PGPASSWORD", "PGPASSFILE", "DAGSTER_POSTGRES_URL") or variable.endswith(
        "DATABASE_URL"
    )


def _translate_asyncpg_params(text: str) -> str:
    """Rewrite asyncpg's `ssl=` query parameter into libpq's `sslmode=`."""
    if "://" not in text or "?" not in text:
        return text
    base, query = text.split("?", 1)
    parts = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "ssl":
            mode = _ASYNCPG_SSL_TO_SSLMODE.get(value.lower())
            if mode is None:
                raise DatabaseUrlError(f"unsupported ssl={value!r} in database URL")
            parts.append(f"sslmode={mode}")
        else:
            parts.append(part)
    return base + "?" + "&".join(parts)


def mask_unparseable_url(raw: str) -> str:
    """Best-effort masking of a URL that does not parse, for an error message."""
    text = raw.strip()
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if "@" in rest:
            creds, location = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{location.split('?', 1)[0]}"
        return f"{scheme}://{rest.split('?', 1)[0]}"
    return "<conninfo string>"


def resolve_url(*env_names: str) -> DatabaseUrl:
    """The first of `env_names` that is set, parsed. Raises naming the variables, never values."""
    for name in env_names:
        value = os.environ.get(name)
        if value:
            return DatabaseUrl.parse(value)
    raise DatabaseUrlError(f"none of {', '.join(env_names)} is set")
