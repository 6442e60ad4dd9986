"""The executor of every dual-db run: in-process, steps in threads, guarded against crashed runs.

Runs stay in-process: the `snapshot` resource holds the one exported source snapshot that every step
of a run reads, and resources live once per process. Dagster's in-process executor runs one step at a
time, so the core copy, the backup and the checks waited behind the AI copy and its HNSW build. Here
steps whose inputs are ready run at once, each in its own thread (`max_concurrent`, default 4; 1 is
Dagster's one-at-a-time order). The work of a step is database I/O, which releases the GIL. Step
events are written to the instance by the thread that makes them; the plan's bookkeeping (what is
done, what may start) stays on the run's main thread.

What this adds, for Dagster 1.13:

- Before any step: the run lock of each target database the run uses (target_lock.py). A second run on
  the same targets, a one-table redo during a migrate say, is refused in one line naming the holder.
- Steps of one run share the run's pool slot: a step whose run already holds a slot in its pool runs
  beside the holder instead of waiting for it, and withdraws the claim it queued while it waited.

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

import atexit
import functools
import gc
import os
import queue
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    _core_in_process_executor_creation,
)
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import (
    PlanExecutionContext,
    PlanOrchestrationContext,
    StepExecutionContext,
)
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.execute_plan import (
    _handle_compute_log_setup_error,
    _handle_compute_log_teardown_error,
    _trigger_hook,
    dagster_event_sequence_for_step,
)
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.step import ExecutionStep
from dagster._core.executor.in_process import InProcessExecutor
from dagster._core.executor.init import InitExecutorContext
from dagster._utils.interrupts import pop_captured_interrupt
from dagster._utils.timing import time_execution_scope
from dagster_shared.utils.timing import format_duration

from dual_db.db.cancel import cancel_run
from dual_db.defs.run_guard import RunGuard, SlotHolder
from dual_db.defs.run_origin import adopt_code_location
from dual_db.defs.target_lock import hold_target_locks

# How often a blocked step re-checks who holds its pool (a database query each time).
HOLDER_RECHECK_SECONDS = 5.0
# Longest sleep of a blocked run between checks: bounds how late a signal is acted upon.
MAX_BLOCKED_SLEEP_SECONDS = 0.5
# Steps of one run at once, unless the run's config says otherwise.
DEFAULT_MAX_CONCURRENT = 4
# An op tag: the step starts only once every other step of its run has ended, whether they succeeded or
# failed. For a step that reads the others' results from the event log (the verification report reads
# every check's), where a dependency would skip it when an upstream check fails.
RUNS_LAST_TAG = "dual_db/runs_last"


class GuardedConcurrencyContext(InstanceConcurrencyContext):
    """Dagster's per-run pool claims, plus recovery of dead holders, holder reports and interrupts."""

    def __init__(self, job_context: PlanExecutionContext, guard: RunGuard) -> None:
        super().__init__(job_context.instance, job_context.dagster_run)
        self._log = job_context.log
        self._guard = guard
        self._next_holder_check: dict[str, float] = {}  # per pool, time.monotonic()
        # The holders last reported per pool: one line per pool and change, not one per blocked step.
        self._reported: dict[str, tuple[str, ...]] = {}
        # Per pool: the step whose claim holds the run's slot, and every step of the run running on it.
        self._slot_claimed_by: dict[str, str] = {}
        self._steps_on_slot: dict[str, set[str]] = defaultdict(set)

    def claim(self, concurrency_key: str, step_key: str, step_priority: int = 0) -> bool:
        if pop_captured_interrupt():
            cancel_run(self._run_id, "the run was interrupted by a signal")
            raise DagsterExecutionInterruptedError(
                f"Interrupted by a signal while step {step_key} waited for a slot in pool {concurrency_key}."
            )
        if concurrency_key in self._slot_claimed_by:
            # The run holds a slot in this pool already: the pool keeps other runs out, not our steps.
            self._withdraw_pending_claim(step_key)
            self._steps_on_slot[concurrency_key].add(step_key)
            return True
        if super().claim(concurrency_key, step_key, step_priority):
            self._slot_claimed_by[concurrency_key] = step_key
            self._steps_on_slot[concurrency_key].add(step_key)
            if self._reported.pop(concurrency_key, None) is not None:
                self._log.info(f"Step {step_key} got its slot in pool {concurrency_key}.")
            return True
        now = time.monotonic()
        if now >= self._next_holder_check.get(concurrency_key, 0.0):
            self._next_holder_check[concurrency_key] = now + HOLDER_RECHECK_SECONDS
            self._check_holders(concurrency_key, step_key)
        return False

    def _withdraw_pending_claim(self, step_key: str) -> None:
        """Forget the claim `step_key` queued before its run got the slot it now runs on.

        Left behind, the claim kept the run's ActiveExecution from ever completing (it counts pending
        claims), its past retry time made the run's loop never sleep (at most of a core, logging "Step
        still blocked by limit for pool"), and its row in the pool's queue, once assigned the freed
        slot, kept every other run out of the pool until this run ended, which it never did.
        """
        if step_key not in self._pending_claims:
            return
        self._instance.event_log_storage.free_concurrency_slot_for_step(self._run_id, step_key)
        self._pending_claims.discard(step_key)
        self._pending_timeouts.pop(step_key, None)
        self._pending_claim_counts.pop(step_key, None)

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

    def free_step(self, step_key: str) -> None:
        # The slot is freed when the last of the run's steps on it is done, under the key that claimed it.
        for pool, steps in list(self._steps_on_slot.items()):
            if step_key not in steps:
                continue
            steps.discard(step_key)
            if not steps:
                del self._steps_on_slot[pool]
                super().free_step(self._slot_claimed_by.pop(pool))

    def interval_to_next_pending_claim_check(self) -> float:
        # Dagster returns min(0, ...) here, which is never positive: the run never slept while blocked.
        # Only the claims still pending count: a past retry time left by any other step never sleeps.
        ready_at = [self._pending_timeouts[k] for k in self._pending_claims if k in self._pending_timeouts]
        if not ready_at:
            return 0.0
        wait = min(ready_at) - time.time()
        return max(0.0, min(wait, MAX_BLOCKED_SLEEP_SECONDS))


def _waiting_message(step_key: str, pool: str, holders: list[SlotHolder]) -> str:
    held_by = "; ".join(holder.describe() for holder in holders)
    return f"Step {step_key} is waiting for a slot in pool {pool}, held by {held_by}."


_STEP_DONE = object()


@dataclass
class _RunningStep:
    context: StepExecutionContext
    events: list[DagsterEvent] = field(default_factory=list)


def _run_step(step_key: str, step_context: StepExecutionContext, out: queue.Queue) -> None:
    """A step's events, in its own thread, onto the run's queue; then its end (or the error that
    escaped Dagster's own step error handling)."""
    try:
        for event in dagster_event_sequence_for_step(step_context):
            out.put((step_key, event))
    except BaseException as exc:  # handed to the main thread, which raises it
        out.put((step_key, exc))
    finally:
        out.put((step_key, _STEP_DONE))


def _concurrent_execution_iterator(
    job_context: PlanExecutionContext,
    execution_plan: ExecutionPlan,
    max_concurrent: int,
) -> Iterator[DagsterEvent]:
    """Dagster's `inner_plan_execution_iterator`, with up to `max_concurrent` steps running at once,
    holding the run lock of each target database the run uses (defs/target_lock.py) throughout."""
    # Before any step and any pool claim: a run refused here has started and queued nothing.
    with hold_target_locks(job_context, execution_plan.get_steps_to_execute_in_topo_order()):
        yield from _run_steps(job_context, execution_plan, max_concurrent)


def _run_steps(
    job_context: PlanExecutionContext,
    execution_plan: ExecutionPlan,
    max_concurrent: int,
) -> Iterator[DagsterEvent]:
    guard = RunGuard(job_context.instance, job_context.run_id, job_context.log.warning)
    compute_log_manager = job_context.instance.compute_log_manager
    step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
    with (
        GuardedConcurrencyContext(job_context, guard) as concurrency_context,
        ActiveExecution(
            execution_plan,
            retry_mode=job_context.retry_mode,
            max_concurrent=max_concurrent,
            instance_concurrency_context=concurrency_context,
            step_dependency_config=job_context.step_dependency_config,
        ) as active_execution,
        ExitStack() as capture_stack,
    ):
        # One log capture for the whole process, as in-process execution does.
        file_key = create_compute_log_file_key()
        log_key = compute_log_manager.build_log_key_for_run(job_context.run_id, file_key)
        try:
            log_context = capture_stack.enter_context(compute_log_manager.capture_logs(log_key))
            yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
        except Exception:
            yield from _handle_compute_log_setup_error(job_context, sys.exc_info())

        events: queue.Queue[tuple[str, object]] = queue.Queue()
        running: dict[str, _RunningStep] = {}
        # Steps that start once every other step of the run has ended (RUNS_LAST_TAG).
        last: list[ExecutionStep] = []
        while running or last or not active_execution.is_complete:
            if pop_captured_interrupt():
                # Steps run in threads no signal reaches: their statements are cancelled on the servers.
                cancel_run(job_context.run_id, "the run was interrupted by a signal")
                raise DagsterExecutionInterruptedError(
                    f"Interrupted by a signal while steps {', '.join(sorted(running)) or '(none)'} ran."
                )
            free = max_concurrent - len(running)
            ready = active_execution.get_steps_to_execute(limit=free) if free > 0 else []
            yield from active_execution.concurrency_event_iterator(job_context)
            steps = [step for step in ready if (step.tags or {}).get(RUNS_LAST_TAG) != "true"]
            last += [step for step in ready if step not in steps]
            if last and not steps and not running and not concurrency_context.has_pending_claims():
                # Nothing runs, nothing else can start, nothing waits for a slot: the rest has ended.
                steps, last = last, []
            for step in steps:
                step_context = job_context.for_step(step, active_execution.get_known_state())
                running[step.key] = _RunningStep(step_context)
                threading.Thread(
                    target=_run_step,
                    args=(step.key, step_context, events),
                    name=f"dual-db-step-{step.key}",
                    daemon=True,
                ).start()
            if not running:
                active_execution.sleep_til_ready()
                continue
            try:
                # A bounded wait: blocked steps re-try their pool claims, signals are acted upon.
                step_key, item = events.get(timeout=MAX_BLOCKED_SLEEP_SECONDS)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            if item is _STEP_DONE:
                done = running.pop(step_key)
                active_execution.verify_complete(job_context, step_key)
                # Steps skipped because of a failure, or whose inputs will never come.
                for event in active_execution.plan_events_iterator(job_context):
                    done.events.append(event)
                    yield event
                yield from _trigger_hook(done.context, done.events)
                continue
            assert isinstance(item, DagsterEvent)
            running[step_key].events.append(item)
            yield item
            active_execution.handle_event(item)

        try:
            capture_stack.close()
        except Exception:
            yield from _handle_compute_log_teardown_error(job_context, sys.exc_info())


@functools.cache
def skip_final_collection_at_exit() -> None:
    """At interpreter exit, leave the objects alive then to the operating system.

    A process that ran a run holds Dagster's whole object graph (a few million objects), and the
    interpreter's last garbage collection walked it for about 1.3 s after the run had ended, on every
    `dagster job execute` and one-table redo. Atexit handlers and thread joins have run by then, and
    objects freed by reference count are still freed; only the final cycle walk is skipped
    (`gc.freeze`). Registered once per process; handlers registered before it still run after it.
    """
    atexit.register(gc.freeze)


class GuardedInProcessExecutor(InProcessExecutor):
    def __init__(self, *, max_concurrent: int = DEFAULT_MAX_CONCURRENT, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.max_concurrent = max_concurrent

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        # As InProcessExecutor.execute, with the guard first and the guarded iterator.
        skip_final_collection_at_exit()
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
                    iterator=functools.partial(
                        _concurrent_execution_iterator, max_concurrent=self.max_concurrent
                    ),
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


EXECUTOR_CONFIG = dg.Field(
    {
        **IN_PROC_CONFIG.config_type.fields,  # type: ignore[attr-defined]
        "max_concurrent": dg.Field(
            int,
            default_value=DEFAULT_MAX_CONCURRENT,
            description="Steps of a run that run at once (threads of the run's process); 1 runs one "
            "step after another.",
        ),
    },
    description="Execute all steps in a single process, several at once.",
)


@dg.executor(name="dual_db_in_process", config_schema=EXECUTOR_CONFIG)
def guarded_in_process_executor(init_context: InitExecutorContext) -> GuardedInProcessExecutor:
    """In-process execution, several steps at once, that recovers from crashed runs and can be
    interrupted while blocked."""
    base = _core_in_process_executor_creation(init_context.executor_config)
    max_concurrent = int(init_context.executor_config.get("max_concurrent", DEFAULT_MAX_CONCURRENT))
    if max_concurrent < 1:
        raise dg.DagsterInvalidConfigError(
            f"max_concurrent must be at least 1, got {max_concurrent}", [], max_concurrent
        )
    return GuardedInProcessExecutor(
        max_concurrent=max_concurrent,
        retries=base.retries,
        step_dependency_config=base.step_dependency_config,
        marker_to_close=base.marker_to_close,
    )
