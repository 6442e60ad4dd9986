"""Dagster instance storage: dagster-postgres with a connection pool.

dagster-postgres opens a new connection for every event it stores (NullPool) unless it runs inside
the webserver, and the webserver's pool keeps one connection. A migration stores about 6 events per
table (a materialization, two check evaluations and their outputs), from several step threads at
once, and storing one asset event checks out a second connection while the first is held (the
`has_table` probe inside `store_event`). With one pooled connection every such checkout opened and
closed an overflow connection: a backend start and a SCRAM exchange (~4 ms on loopback) each time,
which made Dagster's bookkeeping slower than copying the tables. This storage keeps a pool as large
as that concurrency, and remembers which tables exist instead of asking the catalog per event.
"""

from typing import Any

from dagster._core.storage.base_storage import DagsterStorage
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config

# Connections kept per storage (runs, events, schedules): the executor's steps at once plus the
# nested checkout; overflow beyond that is opened and closed per use.
POOL_SIZE = 6
POOL_MAX_OVERFLOW = 4
POOL_RECYCLE_SECONDS = 3600


class TableCachingEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres' event log storage that asks the catalog once per table name.

    Storing an asset event with tags asks whether `asset_event_tags` exists, one catalog query on a
    second connection per event. Tables appear only through `dagster instance migrate`, which runs
    in its own process, so a table seen once stays; a missing one is asked again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._tables_seen: set[str] = set()
        super().__init__(*args, **kwargs)

    def has_table(self, table_name: str) -> bool:
        if table_name in self._tables_seen:
            return True
        exists = super().has_table(table_name)
        if exists:
            self._tables_seen.add(table_name)
        return exists


def _pool(storage: PostgresRunStorage | PostgresEventLogStorage | PostgresScheduleStorage) -> None:
    """Give `storage` a connection pool of POOL_SIZE (dagster-postgres' own pool holds one)."""
    kwargs: dict[str, Any] = {
        "isolation_level": "AUTOCOMMIT",
        "pool_size": POOL_SIZE,
        "max_overflow": POOL_MAX_OVERFLOW,
        "pool_recycle": POOL_RECYCLE_SECONDS,
    }
    options = storage._engine.url.query.get("options")
    if options:
        kwargs["connect_args"] = {"options": options}
    storage._engine.dispose()
    storage._engine = create_pg_engine(storage.postgres_url, storage._token_provider, **kwargs)


class PooledPostgresStorage(DagsterPostgresStorage):
    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        # DagsterPostgresStorage.__init__ with the table-caching event log storage: building the
        # parent's storages first and replacing one would connect and inspect the schema twice.
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PostgresRunStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._event_log_storage = TableCachingEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = PostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        DagsterStorage.__init__(self)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            _pool(storage)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Any
    ) -> "PooledPostgresStorage":
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
