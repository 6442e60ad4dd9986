"""The executor of every dual-db run: Dagster's in-process executor, guarded against crashed runs.

Runs stay in-process: the `snapshot` resource holds the one exported source snapshot that every step
of a run reads, and resources live once per process. What this adds, for Dagster 1.13:

- At the start of a run: a run made outside the webserver (`dagster job execute`) is given the origin of
  the code location `dual_db`, so the UI lists it under its job and re-executes it there (run_origin.py).
- At the start of a run, before any slot is claimed: the run is stamped with its process identity, and
  runs whose process is gone are marked failed and their pool slots freed (`run_guard.RunGuard`).
- While a step waits for a pool slot: the holders are re-checked every few seconds (a holder that dies
  meanwhile is recovered the same way), and the user is told which run holds the slot.
- The wait sleeps between checks instead of spinning: Dagster's in-process loop computes its sleep as
  `min(0, ...)`, i.e. never sleeps, and burned a core while blocked.
- The wait reacts to SIGINT/SIGTERM: Dagster defers signals during a run to "checkpoints" in step code,
  and the in-process loop has none while no step runs, so a blocked run ignored both.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import dagster as dg
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    _core_in_process_executor_creation,
)
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.context.system import PlanExecutionContext, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.executor.init import InitExecutorContext
from dagster._utils.interrupts import pop_captured_interrupt
from dagster._utils.timing import time_execution_scope
from dagster_shared.utils.timing import format_duration

from dual_db.defs.run_guard import RunGuard, SlotHolder
from dual_db.defs.run_origin import adopt_code_location

# How often a blocked step re-checks who holds its pool (a database query each time).
HOLDER_RECHECK_SECONDS = 5.0
# Longest sleep of a blocked run between checks: bounds how late a signal is acted upon.
MAX_BLOCKED_SLEEP_SECONDS = 0.5


class GuardedConcurrencyContext(InstanceConcurrencyContext):
    """Dagster's per-run pool claims, plus recovery of dead holders, holder reports and interrupts."""

    def __init__(self, job_context: PlanExecutionContext, guard: RunGuard) -> None:
        super().__init__(job_context.instance, job_context.dagster_run)
        self._log = job_context.log
        self._guard = guard
        self._next_holder_check: dict[str, float] = {}  # per pool, time.monotonic()
        # The holders last reported per pool: one line per pool and change, not one per blocked step.
        self._reported: dict[str, tuple[str, ...]] = {}

    def claim(self, concurrency_key: str, step_key: str, step_priority: int = 0) -> bool:
        if pop_captured_interrupt():
            raise DagsterExecutionInterruptedError(
                f"Interrupted by a signal while step {step_key} waited for a slot in pool {concurrency_key}."
            )
        if super().claim(concurrency_key, step_key, step_priority):
            if self._reported.pop(concurrency_key, None) is not None:
                self._log.info(f"Step {step_key} got its slot in pool {concurrency_key}.")
            return True
        now = time.monotonic()
        if now >= self._next_holder_check.get(concurrency_key, 0.0):
            self._next_holder_check[concurrency_key] = now + HOLDER_RECHECK_SECONDS
            self._check_holders(concurrency_key, step_key)
        return False

    def _check_holders(self, pool: str, step_key: str) -> None:
        holders = self._guard.holders(pool)
        described = tuple(holder.run_id for holder in holders)
        if not holders:
            # The holders were dead or had ended and are freed now: claim again at once.
            self._pending_timeouts[step_key] = 0.0
            return
        if self._reported.get(pool) != described:
            self._reported[pool] = described
            self._log.warning(_waiting_message(step_key, pool, holders))

    def interval_to_next_pending_claim_check(self) -> float:
        # Dagster returns min(0, ...) here, which is never positive: the run never slept while blocked.
        if not self._pending_timeouts:
            return 0.0
        wait = min(self._pending_timeouts.values()) - time.time()
        return max(0.0, min(wait, MAX_BLOCKED_SLEEP_SECONDS))


def _waiting_message(step_key: str, pool: str, holders: list[SlotHolder]) -> str:
    held_by = "; ".join(holder.describe() for holder in holders)
    return f"Step {step_key} is waiting for a slot in pool {pool}, held by {held_by}."


def _guarded_execution_iterator(
    job_context: PlanExecutionContext,
    execution_plan: ExecutionPlan,
) -> Iterator[DagsterEvent]:
    guard = RunGuard(job_context.instance, job_context.run_id, job_context.log.warning)
    with GuardedConcurrencyContext(job_context, guard) as concurrency_context:
        yield from inner_plan_execution_iterator(job_context, execution_plan, concurrency_context)


class GuardedInProcessExecutor(InProcessExecutor):
    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        # As InProcessExecutor.execute, with the guard first and the guarded iterator.
        # A run made by `dagster job execute` joins the code location `dual_db` (defs/run_origin.py).
        adopt_code_location(plan_context.instance, plan_context.dagster_run)
        guard = RunGuard(plan_context.instance, plan_context.run_id, plan_context.log.warning)
        guard.stamp()
        guard.recover()

        step_keys_to_execute = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys_to_execute),
        )
        with time_execution_scope() as timer_result:
            yield from iter(
                ExecuteRunWithPlanIterable(
                    execution_plan=plan_context.execution_plan,
                    iterator=_guarded_execution_iterator,
                    execution_context_manager=PlanExecutionContextManager(
                        job=plan_context.job,
                        retry_mode=plan_context.retry_mode,
                        execution_plan=plan_context.execution_plan,
                        run_config=plan_context.run_config,
                        dagster_run=plan_context.dagster_run,
                        instance=plan_context.instance,
                        raise_on_error=plan_context.raise_on_error,
                        output_capture=plan_context.output_capture,
                        step_dependency_config=self.step_dependency_config,
                    ),
                )
            )
        yield DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in process (pid: {os.getpid()}) in {format_duration(timer_result.millis)}",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys_to_execute),
        )


@dg.executor(name="dual_db_in_process", config_schema=IN_PROC_CONFIG)
def guarded_in_process_executor(init_context: InitExecutorContext) -> GuardedInProcessExecutor:
    """In-process execution that recovers from crashed runs and can be interrupted while blocked."""
    base = _core_in_process_executor_creation(init_context.executor_config)
    return GuardedInProcessExecutor(
        retries=base.retries,
        step_dependency_config=base.step_dependency_config,
        marker_to_close=base.marker_to_close,
    )
