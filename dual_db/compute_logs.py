"""Dagster's local compute log manager, without the database URLs in its children's environment.

To capture a run's stdout and stderr, Dagster's `LocalComputeLogManager` starts `tail -F` and an
orphan watcher (`dagster._core.execution.compute_logs.execute_posix_tail`) with the run process's
whole environment: `SOURCE_DATABASE_URL`, `CORE_DATABASE_URL`, `DAGSTER_POSTGRES_URL` and the rest,
passwords included, readable in /proc/<pid>/environ for the whole run, even when they came from
`.env` and the user's shell never held them. Those processes need none of it. This manager starts
them without the variables `client_tool_environment` keeps from client tools; the run process keeps
its own.

The variables are unset only while the children are started. The executor starts its one capture
per run before any step thread runs (`dual_db.defs.executor`), so no step reads the environment then.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from dagster import Field, StringSource

# Dagster's one compute log manager for local files has no public import: the subclass below is the only
# private use left here at run time (test_private_dagster_api.py fails naming it when Dagster moves it).
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

from dual_db.db.urls import client_tool_environment

if TYPE_CHECKING:
    from dagster._core.storage.compute_log_manager import CapturedLogContext
    from dagster._serdes import ConfigurableClassData


@contextmanager
def _environment_without_passwords() -> Iterator[None]:
    kept = client_tool_environment()
    removed = {name: value for name, value in os.environ.items() if name not in kept}
    for name in removed:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(removed)


class PrivateLocalComputeLogManager(LocalComputeLogManager):
    """`LocalComputeLogManager` (same files, same UI), whose `tail -F` children hold no URL."""

    def __init__(self, base_dir: str | None = None, **kwargs: Any) -> None:
        # Without base_dir, Dagster's own default: <instance root>/storage, known once the instance
        # registers itself (an instance made by DagsterInstance.from_config(dir) has no DAGSTER_HOME).
        self._default_base_dir = base_dir is None
        super().__init__(base_dir=base_dir or "", **kwargs)

    def register_instance(self, instance: Any) -> None:
        super().register_instance(instance)
        if self._default_base_dir:
            # Dagster's default (dagster._core.instance.ref.compute_logs_directory): <root>/storage.
            self._base_dir = os.path.join(instance.root_directory, "storage")

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {**super().config_type(), "base_dir": Field(StringSource, is_required=False)}  # type: ignore[dict-item]

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> PrivateLocalComputeLogManager:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        with ExitStack() as stack:
            with _environment_without_passwords():
                context = stack.enter_context(super().capture_logs(log_key))
            yield context
