"""pg_dump against real servers: choosing the tools, the version guard, snapshots, backups, passwords."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from psycopg import sql

from dual_db.db.connect import DatabaseUnreachable, connection
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedCluster, pg_bin_dir
from dual_db.schema import (
    PgToolError,
    backup_compression,
    check_pg_dump_compatible,
    choose_backup_compression,
    dump_full_backup,
    dump_schema_sections,
    pg_tool_version,
    resolve_pg_bin_dir,
    statements_of,
)
from dual_db.schema.dump import PG_BIN_DIR_ENV
from dual_db_tests.conftest import DatabaseFactory, Databases


def _create(url: DatabaseUrl, *tables: str) -> None:
    with connection(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(
                sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, note text)").format(
                    sql.Identifier("public", table)
                )
            )
            conn.execute(
                sql.SQL("INSERT INTO {} SELECT g, 'row ' || g FROM generate_series(1, 100) g").format(
                    sql.Identifier("public", table)
                )
            )


def _created_tables(script: str) -> set[str]:
    return {s.node.relation.relname for s in statements_of(script) if s.node_type == "CreateStmt"}


def test_resolve_pg_bin_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(PG_BIN_DIR_ENV, raising=False)
    assert resolve_pg_bin_dir() == pg_bin_dir(18)
    monkeypatch.setenv(PG_BIN_DIR_ENV, str(pg_bin_dir(16)))
    assert resolve_pg_bin_dir() == pg_bin_dir(16)
    assert resolve_pg_bin_dir(str(tmp_path)) == tmp_path  # configured wins over the environment
    with pytest.raises(PgToolError, match="does not exist"):
        resolve_pg_bin_dir(str(tmp_path / "missing"))


def test_tool_versions_and_the_guard(databases: Databases) -> None:
    assert pg_tool_version(pg_bin_dir(18)) == 18
    assert pg_tool_version(pg_bin_dir(16), "pg_restore") == 16
    assert check_pg_dump_compatible(pg_bin_dir(18), 180004) == 18
    assert check_pg_dump_compatible(pg_bin_dir(18), 160014) == 18  # newer tools dump older servers
    with pytest.raises(PgToolError, match="pg_dump 16 cannot dump a PostgreSQL 18 server"):
        check_pg_dump_compatible(pg_bin_dir(16), 180004)
    # Against the real 18 server, the guard refuses before pg_dump runs: the message is ours, not
    # pg_dump 16's own "server version mismatch".
    with pytest.raises(PgToolError) as info:
        dump_schema_sections(databases.source, bin_dir=pg_bin_dir(16))
    assert "pg_dump 16 cannot dump a PostgreSQL 18 server" in str(info.value)
    assert "mismatch" not in str(info.value)
    with pytest.raises(PgToolError, match="pg_dump not found"):
        check_pg_dump_compatible(Path("/nonexistent-bin"), 180004)


def test_schema_sections_without_password_on_the_command_line(databases: Databases) -> None:
    url = databases.source
    assert url.password  # the embedded servers require SCRAM passwords
    _create(url, "accounts")
    sections = dump_schema_sections(url, bin_dir=pg_bin_dir(18))
    assert sections.pg_dump_version.startswith("18.")
    assert _created_tables(sections.pre_data) == {"accounts"}
    assert "ADD CONSTRAINT accounts_pkey PRIMARY KEY" in sections.post_data
    assert "CREATE TABLE" not in sections.post_data
    assert "INSERT" not in sections.pre_data and "COPY" not in sections.pre_data  # schema only
    assert len(sections.commands) == 2
    for argv in sections.commands:
        # The dump succeeded, so libpq authenticated: through the passfile, since the password is in
        # no argument.
        assert not any(url.password in arg for arg in argv)
        assert any(arg.startswith("--dbname=") for arg in argv)


def test_snapshot_pins_what_the_dump_sees(databases: Databases) -> None:
    url = databases.source
    _create(url, "before_snapshot")
    with connection(url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        _create(url, "after_snapshot")  # committed by another session while the snapshot is held
        pinned = dump_schema_sections(url, bin_dir=pg_bin_dir(18), snapshot=snapshot)
        assert any(f"--snapshot={snapshot}" in argv for argv in pinned.commands)
        assert _created_tables(pinned.pre_data) == {"before_snapshot"}
        conn.rollback()
    current = dump_schema_sections(url, bin_dir=pg_bin_dir(18))
    assert _created_tables(current.pre_data) == {"before_snapshot", "after_snapshot"}


def test_full_backup_directory_format(databases: Databases, tmp_path: Path) -> None:
    url = databases.source
    _create(url, "positions", "users")
    with connection(url) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        _create(url, "later")
        result = dump_full_backup(url, tmp_path / "backup", bin_dir=pg_bin_dir(18), jobs=2, snapshot=snapshot)
        conn.rollback()
    assert result.path == tmp_path / "backup"
    assert (result.path / "toc.dat").is_file()
    assert result.bytes > 0 and result.seconds >= 0
    assert result.pg_dump_version.startswith("18.")
    assert "--format=directory" in result.command and "--jobs=2" in result.command
    # The fastest codec of this build: the embedded server's PostgreSQL is built with zlib only.
    assert result.compression == backup_compression(pg_bin_dir(18)) == "gzip:1"
    assert "--compress=gzip:1" in result.command
    assert url.password and not any(url.password in arg for arg in result.command)
    listing = subprocess.run(
        [str(pg_bin_dir(18) / "pg_restore"), "--list", str(result.path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "TABLE DATA public positions" in listing and "TABLE DATA public users" in listing
    assert "later" not in listing  # created after the snapshot
    with pytest.raises(PgToolError, match="not empty"):
        dump_full_backup(url, tmp_path / "backup", bin_dir=pg_bin_dir(18))


def test_failures_carry_stderr_but_never_the_password(
    servers: EmbeddedCluster, new_database: DatabaseFactory
) -> None:
    url = new_database(servers["source"])
    missing = url.with_dbname("no_such_database_here")
    with pytest.raises(DatabaseUnreachable) as info:  # the version check connects first
        dump_schema_sections(missing, bin_dir=pg_bin_dir(18))
    assert "no_such_database_here" in str(info.value)
    assert url.password and url.password not in str(info.value)
    # pg_dump's own failure: a snapshot id that no transaction exported.
    with pytest.raises(PgToolError) as tool_info:
        dump_schema_sections(url, bin_dir=pg_bin_dir(18), snapshot="00000003-00000002-1")
    assert "snapshot" in str(tool_info.value).lower()
    assert url.password not in str(tool_info.value)


def test_a_failed_backup_leaves_nothing_behind(databases: Databases, tmp_path: Path) -> None:
    _create(databases.source, "positions")
    with pytest.raises(PgToolError):
        dump_full_backup(
            databases.source, tmp_path / "backup", bin_dir=pg_bin_dir(18), snapshot="00000003-00000002-1"
        )
    assert not (tmp_path / "backup").exists()


def test_old_backups_are_pruned_to_the_newest_n(databases: Databases, tmp_path: Path) -> None:
    import os

    from dual_db.schema.dump import prune_backups

    _create(databases.source, "positions")
    paths = []
    for n in range(4):
        result = dump_full_backup(
            databases.source, tmp_path / f"run{n}" / "full_backup", bin_dir=pg_bin_dir(18)
        )
        os.utime(result.path, (1_000_000 + n, 1_000_000 + n))  # run3 newest
        paths.append(result.path)
    (tmp_path / "run9" / "schema").mkdir(parents=True)  # not a backup: never touched
    deleted = prune_backups(tmp_path, 2, current=paths[3])
    assert sorted(deleted) == sorted(paths[:2])
    assert [p.exists() for p in paths] == [False, False, True, True]
    assert (tmp_path / "run9" / "schema").is_dir()


def test_backup_codec_is_the_fastest_the_build_has() -> None:
    assert choose_backup_compression("'--prefix=/x' '--with-zstd' '--with-lz4'", 18) == "zstd:1"
    assert choose_backup_compression("'--prefix=/x' '--with-lz4'", 17) == "lz4:1"
    assert choose_backup_compression("'--prefix=/x' '--with-openssl'", 18) == "gzip:1"
    # pg_dump 15 and older take a gzip level only.
    assert choose_backup_compression("'--with-zstd'", 15) == "1"
