"""The embedded default: `up` is idempotent, `down`/`up` keeps data, four separate servers, and the
Dagster instance storage works on the URL `up` writes (psycopg2, not psycopg 3)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
from dagster_postgres.event_log import PostgresEventLogStorage

from dual_db.db.connect import connection
from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import ROLE_DATABASES, EmbeddedCluster, write_env_file


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("state"))
    first = cluster.up()
    assert all(first.values()), first
    yield cluster
    cluster.down()


def test_up_twice_is_a_no_op_and_servers_are_distinct(cluster: EmbeddedCluster) -> None:
    pids = {role: server.pid() for role, server in cluster.servers.items()}
    again = cluster.up()
    assert not any(again.values()), "second `up` must not start anything"
    assert {role: server.pid() for role, server in cluster.servers.items()} == pids
    assert len(set(pids.values())) == 4 and None not in pids.values()
    ports = {server.port for server in cluster.servers.values()}
    assert len(ports) == 4
    for role, url in cluster.urls().items():
        with connection(url) as conn:
            row = conn.execute("SELECT current_database(), pg_backend_pid()").fetchone()
            assert row is not None and row[0] == ROLE_DATABASES[role]


def test_down_then_up_keeps_data(cluster: EmbeddedCluster) -> None:
    url = cluster.urls()["core"]
    with connection(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    stopped = cluster.down()
    assert all(stopped.values())
    assert all(server.pid() is None for server in cluster.servers.values())
    cluster.up()
    with connection(cluster.urls()["core"]) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]


def test_servers_require_a_password_and_listen_on_loopback(cluster: EmbeddedCluster) -> None:
    url = cluster.urls()["source"]
    with connection(url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
    with pytest.raises(Exception, match="password"):
        with connection(DatabaseUrl(host=url.host, port=url.port, user=url.user, dbname=url.dbname)):
            pass


def test_env_file_keeps_user_lines_and_is_private(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# mine\nMY_SETTING=1\nCORE_DATABASE_URL=postgresql://old@h/db\n")
    values = cluster.env()
    write_env_file(env_file, values)
    text = env_file.read_text()
    assert "MY_SETTING=1" in text and "# mine" in text
    assert "postgresql://old@h/db" not in text
    assert text.count("CORE_DATABASE_URL=") == 1
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert values["DAGSTER_POSTGRES_URL"].startswith("postgresql+psycopg2://")


def test_dagster_instance_storage_records_runs_on_the_written_url(
    cluster: EmbeddedCluster, tmp_path: Path
) -> None:
    """dagster-postgres' event storage NOTIFYs on every event; on psycopg 3 that fails."""
    instance_url = cluster.env()["DAGSTER_POSTGRES_URL"]
    repo_yaml = Path(__file__).resolve().parents[1] / "dagster.yaml"
    (tmp_path / "dagster.yaml").write_text(repo_yaml.read_text())
    os.environ["DAGSTER_POSTGRES_URL"] = instance_url
    try:

        @dg.asset
        def hello() -> int:
            return 1

        instance_db = DatabaseUrl.parse(instance_url)

        def sessions() -> int:
            # pg_stat_database counts every session ever established on the instance database.
            with connection(cluster.urls()["instance"], autocommit=True) as conn:
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute(
                    "SELECT sessions FROM pg_stat_database WHERE datname = %s", (instance_db.dbname,)
                ).fetchone()
                return int(row[0]) if row else 0

        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            result = dg.materialize([hello], instance=instance)
            assert result.success
            before = sessions()
            for _ in range(10):
                assert dg.materialize([hello], instance=instance).success
            opened = sessions() - before
            records = instance.fetch_materializations(dg.AssetKey("hello"), limit=1).records
            assert len(records) == 1
        # Ten runs store over a hundred events, a materialization with tags in each; the pool opened
        # for the first run serves them. dagster-postgres alone opens a connection per event, and with
        # a pool of one connection, storing each materialization opened and closed a second one (its
        # has_table probe): 11 here.
        events = len(instance.all_logs(result.run_id)) * 10
        assert events > 100
        assert opened <= 2, (opened, events)
    finally:
        os.environ.pop("DAGSTER_POSTGRES_URL", None)
