"""Opening connections: one place that decides session settings for every server dual-db talks to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from dual_db.db.urls import DatabaseUrl

# Settings that change how values print. Pinned for every session so that fingerprints of text forms
# (text-v1, and the values typed-v2 hashes as text: composites, arrays of user types) and catalog
# comparisons never depend on a server's or role's defaults.
PINNED_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "client_encoding": "UTF8",
    "standard_conforming_strings": "on",
}


class DatabaseUnreachable(RuntimeError):
    """A server could not be reached. The message names the server by its masked URL only."""


def _options(read_only: bool, extra: dict[str, str] | None) -> str:
    settings = dict(PINNED_SETTINGS)
    if read_only:
        # The source is never written to: every transaction on it starts read-only.
        settings["default_transaction_read_only"] = "on"
    if extra:
        settings.update(extra)
    return " ".join(f"-c {key}={value.replace(' ', chr(92) + ' ')}" for key, value in settings.items())


def connect(
    url: DatabaseUrl,
    *,
    read_only: bool = False,
    autocommit: bool = False,
    application_name: str = "dual-db",
    connect_timeout: int = 10,
    settings: dict[str, str] | None = None,
) -> psycopg.Connection:
    """Connect with pinned output settings; `read_only` makes every transaction read-only."""
    kwargs = url.connect_kwargs()
    kwargs.setdefault("connect_timeout", connect_timeout)
    kwargs["application_name"] = application_name
    kwargs["options"] = _options(read_only, settings)
    try:
        return psycopg.connect(autocommit=autocommit, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        # libpq messages name host and port, never the password; still, say which server by mask.
        # `from None`: the message already carries libpq's text, and a chained psycopg error would
        # print it a second time, with a trace of psycopg's internals, in front of the user.
        raise DatabaseUnreachable(f"cannot connect to {url.masked()}: {exc}".strip()) from None


@contextmanager
def connection(url: DatabaseUrl, **kwargs: object) -> Iterator[psycopg.Connection]:
    conn = connect(url, **kwargs)  # type: ignore[arg-type]
    try:
        yield conn
    finally:
        conn.close()


def server_version_num(conn: psycopg.Connection) -> int:
    """`server_version_num`, e.g. 180004."""
    return int(conn.info.server_version)
