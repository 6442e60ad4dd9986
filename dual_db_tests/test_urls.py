"""URL forms the plan uses, and masking: a password never reaches a masked form, repr or error."""

from __future__ import annotations

import subprocess

import pytest

from dual_db.db.connect import DatabaseUnreachable, connection
from dual_db.db.urls import DatabaseUrl, DatabaseUrlError, resolve_url

SECRET = "s3cr:et@/pa ss"


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql+asyncpg://app:s3cr%3Aet%40%2Fpa%20ss@db.example.com:6543/railway",
        "postgresql://app:s3cr%3Aet%40%2Fpa%20ss@db.example.com:6543/railway",
        "postgres://app:s3cr%3Aet%40%2Fpa%20ss@db.example.com:6543/railway",
        "postgresql+psycopg2://app:s3cr%3Aet%40%2Fpa%20ss@db.example.com:6543/railway",
        "host=db.example.com port=6543 user=app password='s3cr:et@/pa ss' dbname=railway",
    ],
)
def test_every_plan_form_parses_to_the_same_target(raw: str) -> None:
    url = DatabaseUrl.parse(raw)
    assert (url.host, url.port, url.user, url.dbname) == ("db.example.com", 6543, "app", "railway")
    assert url.password == SECRET
    assert url.masked() == "postgresql://app:***@db.example.com:6543/railway"
    for text in (url.masked(), str(url), repr(url), f"{url}"):
        assert "s3cr" not in text


def test_unix_socket_host_and_asyncpg_ssl() -> None:
    url = DatabaseUrl.parse("postgresql://postgres:pw@/mydb?host=/var/run/postgresql")
    assert url.is_unix_socket and url.host == "/var/run/postgresql" and url.dbname == "mydb"
    assert url.masked() == "postgresql://postgres:***@/mydb?host=/var/run/postgresql"
    tls = DatabaseUrl.parse("postgresql+asyncpg://u:pw@h/db?ssl=require")
    assert dict(tls.options) == {"sslmode": "require"}


def test_round_trips_through_uri_and_sqlalchemy_forms() -> None:
    url = DatabaseUrl.parse("postgresql://app:s3cr%3Aet%40%2Fpa%20ss@db.example.com:6543/railway")
    assert DatabaseUrl.parse(url.uri()).password == SECRET
    assert url.sqlalchemy_url().startswith("postgresql+psycopg2://app:")
    assert DatabaseUrl.parse(url.sqlalchemy_url()).password == SECRET


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("mysql://u:hunter2@h/db", "unsupported URL scheme"),
        ("postgresql://u:hunter2@h:notaport/db", "not a number"),
        ("postgresql://u:hunter2@h/db?bogus_option=1", "cannot parse"),
        ("postgresql://u:hunter2@h1,h2/db", "multi-host"),
        ("postgresql+asyncpg://u:hunter2@h/db?ssl=maybe", "ssl"),
    ],
)
def test_bad_urls_fail_clearly_without_the_password(raw: str, message: str) -> None:
    with pytest.raises(DatabaseUrlError, match=message) as info:
        DatabaseUrl.parse(raw)
    assert "hunter2" not in str(info.value)


def test_resolve_url_names_variables_not_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@h/db")
    assert resolve_url("SOURCE_DATABASE_URL", "DATABASE_URL").dbname == "db"
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(DatabaseUrlError, match="SOURCE_DATABASE_URL, DATABASE_URL"):
        resolve_url("SOURCE_DATABASE_URL", "DATABASE_URL")


def test_wrong_password_error_is_masked(servers) -> None:  # type: ignore[no-untyped-def]
    good = servers["core"].url()
    bad = DatabaseUrl.parse(good.uri().replace(f":{good.password}@", ":wrong-Secret-42@"))
    with pytest.raises(DatabaseUnreachable) as info, connection(bad):
        pass
    assert "wrong-Secret-42" not in str(info.value)
    assert "password authentication failed" in str(info.value)


def test_subprocess_password_travels_in_a_passfile_not_argv(servers) -> None:  # type: ignore[no-untyped-def]
    url = servers["core"].url()
    with url.libpq_subprocess() as (conninfo, env):
        assert url.password not in conninfo
        assert url.password not in " ".join(f"{k}={v}" for k, v in env.items() if k != "PGPASSFILE")
        psql = str(servers["core"].bin_dir / "psql")
        out = subprocess.run(
            [psql, "--no-psqlrc", "-At", "-c", "SELECT 1", conninfo], env=env, capture_output=True, text=True
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_application_url_carries_only_what_asyncpg_accepts() -> None:
    url = DatabaseUrl.parse(
        "postgresql://app:s3cret@db.example:5432/railway?sslmode=require&connect_timeout=5&application_name=x"
    )
    assert url.application_url() == "postgresql+asyncpg://app:s3cret@db.example:5432/railway?ssl=require"
