"""Dagster instance storage: dagster-postgres with a connection pool.

dagster-postgres opens a new connection for every event it stores (NullPool) unless it runs inside
the webserver. A migration stores ~10 events per table (materialization, two check evaluations and
their outputs), and each new connection costs a backend start and a SCRAM exchange (~4 ms on
loopback), which made Dagster's bookkeeping slower than copying the table. This storage keeps a
small pool instead, as dagster-postgres does for the webserver.
"""

from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# Connections kept per storage (runs, events, schedules) and how long before they are recycled.
POOL_MAX_OVERFLOW = 4
POOL_RECYCLE_SECONDS = 3600


class PooledPostgresStorage(DagsterPostgresStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            # statement_timeout 0: no limit, as without the pool.
            storage.optimize_for_webserver(
                statement_timeout=0, pool_recycle=POOL_RECYCLE_SECONDS, max_overflow=POOL_MAX_OVERFLOW
            )

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
