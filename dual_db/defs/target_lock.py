"""Which target databases a run locks, and how; taken by the executor before the run's first step.

The lock itself is `dual_db.db.run_lock`: a session-level advisory lock on each target database, held
by one session of the run's process until the run ends. What a run does decides its mode per target:

- materializing an asset of a target (`core/...`, `ai/...`: schema, tables, post-data, tuning) writes
  it, and the cutover writes both: exclusive;
- asset checks and the reports that read the targets (verification report, soak week): shared, so
  that two verifies may run together but never beside a migrate or a one-table redo. A table's checks
  read its own target; the database checks (soft references cross the split) read both;
- the rest (the backup or schema dump alone, the baseline, the rollback restore) takes no lock.

A run that finds a lock taken fails before any step, in one line naming the run that holds it. A
target whose URL is missing or whose server cannot be reached is not locked: the run's first step
that uses it fails on that with its own clear line, before writing anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import dagster as dg

from dual_db.db.connect import DatabaseUnreachable
from dual_db.db.run_lock import LockHolder, LockMode, TargetLocked, take_run_lock
from dual_db.defs.constants import (
    CUTOVER,
    DECOMMISSION_READINESS,
    POST_DATA_ASSETS,
    SOAK_HEALTH,
    VERIFICATION_REPORT,
)
from dual_db.defs.errors import one_line
from dual_db.defs.resources import PostgresDatabase
from dual_db.defs.run_guard import ProcessIdentity
from dual_db.routing import TARGETS

if TYPE_CHECKING:
    # Only annotations: the executor (defs/executor.py) hands these in.
    from dagster._core.execution.context.system import PlanExecutionContext
    from dagster._core.execution.plan.step import ExecutionStep

# Assets that read both targets and write neither; and those that write both.
READS_TARGETS = frozenset({VERIFICATION_REPORT, SOAK_HEALTH, DECOMMISSION_READINESS})
WRITES_TARGETS = frozenset({CUTOVER})


class TargetInUse(RuntimeError):
    """Another run holds the run lock of a target this run would use. The message is one line."""


def lock_modes(job_def: dg.JobDefinition, steps: Iterable[ExecutionStep]) -> dict[str, LockMode]:
    """The lock each target needs for running `steps`, in TARGETS order (core first, then AI).

    One order for every run: no two runs each hold the lock the other one still has to take.
    """
    wanted: dict[str, LockMode] = {}

    def want(targets: Iterable[str], mode: LockMode) -> None:
        for target in targets:
            if wanted.get(target) is not LockMode.EXCLUSIVE:
                wanted[target] = mode

    for step in steps:
        for key in job_def.asset_layer.get_selected_entity_keys_for_node(step.node_handle):
            if isinstance(key, dg.AssetCheckKey):
                # A table's checks read its target; a database's checks (soft references across the
                # split) and the others read both.
                asset = key.asset_key
                per_table = asset.path[0] in TARGETS and asset not in POST_DATA_ASSETS.values()
                want([asset.path[0]] if per_table else TARGETS, LockMode.SHARED)
            elif key in WRITES_TARGETS:
                want(TARGETS, LockMode.EXCLUSIVE)
            elif key.path[0] in TARGETS:
                want([key.path[0]], LockMode.EXCLUSIVE)
            elif key in READS_TARGETS:
                want(TARGETS, LockMode.SHARED)
    return {target: wanted[target] for target in TARGETS if target in wanted}


@contextmanager
def hold_target_locks(job_context: PlanExecutionContext, steps: Iterable[ExecutionStep]) -> Iterator[None]:
    """Hold the run lock of every target the run's `steps` use, until the block ends.

    Raises `TargetInUse` (and logs its line as an ERROR) when another run holds one of them.
    """
    modes = lock_modes(job_context.job_def, steps)
    resources: Mapping[str, object] = job_context.scoped_resources_builder.resource_instance_dict
    with ExitStack() as stack:
        taken = []
        for target, mode in modes.items():
            database = resources.get(target)
            if not isinstance(database, PostgresDatabase):
                continue
            try:
                url = database.database_url()
                conn = take_run_lock(
                    url, job_context.run_id, mode, connect_timeout=database.connect_timeout_seconds
                )
            except TargetLocked as exc:
                message = _in_use_message(job_context, target, exc, mode)
                job_context.log.error(message)
                raise TargetInUse(message) from None
            except (dg.Failure, DatabaseUnreachable) as exc:
                reason = exc.description if isinstance(exc, dg.Failure) else one_line(exc)
                job_context.log.warning(f"The {target} database is not locked for this run: {reason}")
                continue
            stack.callback(conn.close)
            taken.append(f"{target} ({mode.value})")
        if taken:
            job_context.log.info(
                f"Run lock taken on {' and '.join(taken)}: until this run ends, no other dual-db run "
                "writes these databases."
            )
        yield


def _in_use_message(job_context: PlanExecutionContext, target: str, exc: TargetLocked, mode: LockMode) -> str:
    held_by = " and ".join(_describe(job_context.instance, h) for h in exc.holders) or (
        "a run that ended while this one looked: run again"
    )
    return (
        f"The {target} database ({exc.url.masked()}) is in use by {held_by}; this run "
        f"({job_context.run_id}) needs its {mode.value} run lock there, so it started nothing. "
        "Run it again once that run has ended."
    )


def _describe(instance: dg.DagsterInstance, holder: LockHolder) -> str:
    if holder.run_id is None:
        return f"a session that is not a dual-db run (server pid {holder.pid}, {holder.application_name!r})"
    run = instance.get_run_by_id(holder.run_id)
    if run is None:
        return f"run {holder.run_id} (of another Dagster instance)"
    identity = ProcessIdentity.from_tags(run.tags)
    where = f", {identity.describe()}" if identity else ""
    return f"run {holder.run_id} ({run.job_name}, {run.status.value}{where})"
