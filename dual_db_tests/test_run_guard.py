"""Finding dead runs: process identities of real processes, and recovery on a PostgreSQL-backed instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from dual_db.defs.constants import SOURCE_POOL
from dual_db.defs.run_guard import (
    TAG_PID,
    TAG_PROCESS_START,
    Liveness,
    ProcessIdentity,
    RunGuard,
    process_identity_tags,
)
from dual_db_tests.conftest import DatabaseFactory

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def test_a_running_process_is_alive(sleeper: subprocess.Popen[bytes]) -> None:
    assert ProcessIdentity.of(os.getpid()).liveness()[0] is Liveness.ALIVE
    identity = ProcessIdentity.of(sleeper.pid)
    assert identity.start  # read from /proc
    assert identity.liveness() == (Liveness.ALIVE, "its process is running")


def test_a_killed_process_is_gone_reaped_or_not(sleeper: subprocess.Popen[bytes]) -> None:
    identity = ProcessIdentity.of(sleeper.pid)
    os.kill(sleeper.pid, signal.SIGKILL)
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
    liveness, reason = identity.liveness()
    assert (liveness, reason) == (Liveness.GONE, "the process has exited")
    sleeper.wait()  # reaped: no such pid any more
    liveness, reason = identity.liveness()
    assert (liveness, reason) == (Liveness.GONE, "no such process")


def test_a_reused_pid_or_a_restarted_host_is_gone(sleeper: subprocess.Popen[bytes]) -> None:
    identity = ProcessIdentity.of(sleeper.pid)
    assert identity.start is not None
    reused = replace(identity, start=str(int(identity.start) - 1))
    assert reused.liveness() == (Liveness.GONE, "the pid now belongs to another process")
    assert identity.machine_id, "this test needs /etc/machine-id"
    rebooted = replace(identity, boot_id="00000000-0000-0000-0000-000000000000")
    assert rebooted.liveness() == (Liveness.GONE, "the host has restarted since")


def test_processes_this_host_cannot_see_are_never_judged_dead(sleeper: subprocess.Popen[bytes]) -> None:
    """Another host, another machine of the same name, another container: wait, never free on a guess."""
    identity = ProcessIdentity.of(sleeper.pid)
    gone_here = replace(identity, pid=2**22 + 1)  # no such pid here
    assert gone_here.liveness()[0] is Liveness.GONE
    cases = {
        "it runs on another host (some-other-host)": replace(gone_here, host="some-other-host"),
        f"it runs on another machine named {identity.host}": replace(gone_here, machine_id="0" * 32),
        f"it ran before a restart of {identity.host}, or on another machine of that name": replace(
            gone_here, boot_id="00000000-0000-0000-0000-000000000000", machine_id=None
        ),
        f"it runs in another container (pid namespace) on {identity.host}": replace(
            gone_here, pid_namespace="pid:[1]"
        ),
    }
    for reason, elsewhere in cases.items():
        assert elsewhere.liveness() == (Liveness.UNKNOWN, reason)


def test_identity_round_trips_through_run_tags(sleeper: subprocess.Popen[bytes]) -> None:
    tags = process_identity_tags(sleeper.pid)
    assert tags[TAG_PID] == str(sleeper.pid) and tags[TAG_PROCESS_START]
    assert ProcessIdentity.from_tags(tags) == ProcessIdentity.of(sleeper.pid)
    assert ProcessIdentity.from_tags({"dagster/priority": "1"}) is None


@pytest.fixture
def instance(
    servers,  # type: ignore[no-untyped-def]
    new_database: DatabaseFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance as the project configures it: PostgreSQL storage, pools with limit 1."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((PROJECT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", new_database(servers["core"]).sqlalchemy_url())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default(SOURCE_POOL)
        yield instance


def _started_run(
    instance: dg.DagsterInstance,
    tags: dict[str, str],
    status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED,
    holds_slot: bool = True,
) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="migrate", run_id=run_id, status=status, tags=tags))
    if holds_slot:
        claim = instance.event_log_storage.claim_concurrency_slot(SOURCE_POOL, run_id, "core_tables")
        assert claim.is_claimed
    return run_id


def _holders(instance: dg.DagsterInstance) -> list[str]:
    return [s.run_id for s in instance.event_log_storage.get_concurrency_info(SOURCE_POOL).claimed_slots]


def test_recover_marks_a_dead_run_failed_and_frees_its_slot(
    instance: dg.DagsterInstance, sleeper: subprocess.Popen[bytes]
) -> None:
    dead = _started_run(instance, process_identity_tags(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    warnings: list[str] = []
    guard = RunGuard(instance, "the-current-run", warnings.append)

    assert guard.recover() == [dead]

    run = instance.get_run_by_id(dead)
    assert run is not None and run.status is dg.DagsterRunStatus.FAILURE
    assert _holders(instance) == []
    (warning,) = warnings
    host = ProcessIdentity.of(0).host
    assert warning == (
        f"Run {dead} (migrate) is no longer running: its process (pid {sleeper.pid} on host {host}) is gone "
        f"(no such process); marked it failed and freed its slot in pool {SOURCE_POOL}."
    )
    failure = instance.get_records_for_run(dead, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert len(failure) == 1 and "no longer running" in (failure[0].event_log_entry.message or "")
    # Recovering again finds nothing: the run is failed once, not twice.
    assert guard.recover() == [] and len(warnings) == 1


def test_a_dead_run_without_a_slot_is_marked_failed_and_a_canceling_one_canceled(
    instance: dg.DagsterInstance, sleeper: subprocess.Popen[bytes]
) -> None:
    tags = process_identity_tags(sleeper.pid)
    slotless = _started_run(instance, tags, holds_slot=False)
    canceling = _started_run(instance, tags, status=dg.DagsterRunStatus.CANCELING, holds_slot=False)
    sleeper.kill()
    sleeper.wait()
    warnings: list[str] = []
    assert sorted(RunGuard(instance, "the-current-run", warnings.append).recover()) == sorted(
        [slotless, canceling]
    )
    assert instance.get_run_by_id(slotless).status is dg.DagsterRunStatus.FAILURE  # type: ignore[union-attr]
    assert instance.get_run_by_id(canceling).status is dg.DagsterRunStatus.CANCELED  # type: ignore[union-attr]
    assert any("it held no pool slot" in w for w in warnings)


def test_a_live_holder_is_left_alone_and_named(
    instance: dg.DagsterInstance, sleeper: subprocess.Popen[bytes]
) -> None:
    live = _started_run(instance, process_identity_tags(sleeper.pid))
    warnings: list[str] = []
    guard = RunGuard(instance, "the-current-run", warnings.append)
    assert guard.recover() == [] and warnings == []
    (holder,) = guard.holders(SOURCE_POOL)
    assert holder.run_id == live and holder.liveness is Liveness.ALIVE
    assert holder.describe() == (
        f"run {live} (migrate, step core_tables, pid {sleeper.pid} on host {ProcessIdentity.of(0).host}), "
        "which is still running"
    )
    assert instance.get_run_by_id(live).status is dg.DagsterRunStatus.STARTED  # type: ignore[union-attr]
    assert _holders(instance) == [live]


def test_holders_that_cannot_be_checked_are_named_with_what_to_do(instance: dg.DagsterInstance) -> None:
    untagged = _started_run(instance, {})
    guard = RunGuard(instance, "the-current-run", lambda _: None)
    (holder,) = guard.holders(SOURCE_POOL)
    assert holder.run_id == untagged and holder.liveness is Liveness.UNKNOWN
    assert "without dual-db's process tags" in holder.describe()
    assert "force-terminate the run in the Dagster UI" in holder.describe()
    remote = ProcessIdentity(host="some-other-host", pid=1, start="1", boot_id=None).as_tags()
    instance.event_log_storage.free_concurrency_slots_for_run(untagged)
    elsewhere = _started_run(instance, remote)
    (holder,) = guard.holders(SOURCE_POOL)
    assert holder.run_id == elsewhere and "another host (some-other-host)" in holder.describe()
    assert _holders(instance) == [elsewhere]  # never freed on a guess


def test_a_slot_left_by_an_ended_run_is_freed(instance: dg.DagsterInstance) -> None:
    ended = _started_run(instance, {})
    run = instance.get_run_by_id(ended)
    assert run is not None
    instance.report_run_canceled(run, message="force-terminated in the UI")
    warnings: list[str] = []
    assert RunGuard(instance, "the-current-run", warnings.append).holders(SOURCE_POOL) == []
    assert _holders(instance) == []
    assert warnings == [
        f"Freed the {SOURCE_POOL} pool slot held by run {ended}, which had already ended (CANCELED)."
    ]


def test_every_job_runs_on_the_guarded_executor() -> None:
    """`migrate`, `verify` and single-asset materializations (UI, `dagster asset materialize`) alike."""
    from dual_db.definitions import build_definitions
    from dual_db.defs.executor import guarded_in_process_executor
    from dual_db.routing import DEFAULT_PLAN_FILE, RoutingPlan

    defs = build_definitions(RoutingPlan.load(DEFAULT_PLAN_FILE))
    jobs = [*defs.resolve_all_job_defs(), defs.resolve_implicit_global_asset_job_def()]
    assert {job.executor_def.name for job in jobs} == {guarded_in_process_executor.name}


class _RunContext:
    """What GuardedConcurrencyContext reads of a run's execution context: the instance, run and log."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, log: list[str]) -> None:
        self.instance = instance
        self.dagster_run = instance.get_run_by_id(run_id)
        self.log = self

        def record(message: str) -> None:
            log.append(message)

        self.info = self.warning = record


def test_a_step_that_joins_its_runs_slot_leaves_no_pending_claim_behind(instance: dg.DagsterInstance) -> None:
    """Two runs whose two source-pool steps each became ready while the other run held the slot.

    The second step of a run that got the slot runs on it; its earlier, refused claim used to stay in
    the pool's queue and in the run's pending claims. Dagster then counted the run as never complete
    (the run looped on "Step still blocked by limit for pool" without sleeping, at most of a core),
    and the stale claim, once assigned the freed slot, kept every other run out of the pool.
    """
    from dual_db.defs.executor import GuardedConcurrencyContext

    tags = process_identity_tags(os.getpid())
    first = _started_run(instance, tags, holds_slot=False)
    second = _started_run(instance, tags, holds_slot=False)
    log: list[str] = []

    def context(run_id: str) -> GuardedConcurrencyContext:
        job_context = _RunContext(instance, run_id, log)
        guard = RunGuard(instance, run_id, log.append)
        return GuardedConcurrencyContext(job_context, guard)  # type: ignore[arg-type]

    with context(first) as a, context(second) as b:
        assert a.claim(SOURCE_POOL, "source__schema_dump")
        assert not b.claim(SOURCE_POOL, "core_tables")
        assert not b.claim(SOURCE_POOL, "ai_tables")
        a.free_step("source__schema_dump")
        time.sleep(1.2)  # past Dagster's first re-claim interval (1 s)
        assert b.claim(SOURCE_POOL, "core_tables")
        assert b.claim(SOURCE_POOL, "ai_tables")  # beside core_tables, on the run's slot
        assert not b.has_pending_claims(), b.pending_claim_steps()
        assert b.interval_to_next_pending_claim_check() == 0.0
        queued = instance.event_log_storage.get_concurrency_info(SOURCE_POOL).pending_steps
        assert [(p.run_id, p.step_key) for p in queued] == [(second, "core_tables")]
        b.free_step("core_tables")
        b.free_step("ai_tables")
        # The slot is free again, for the first run's next step.
        assert a.claim(SOURCE_POOL, "core__post_data")
