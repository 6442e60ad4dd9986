"""Find runs whose process died, mark them failed and free the pool slots they still hold.

A run killed with `kill -9` (or by the OOM killer, or a reboot) never records its end: Dagster keeps it
STARTED and keeps its slot in the `dual_db_source` pool, so every later run waits for it forever.
Dagster's run monitoring cannot help here: it needs the daemon and a run launcher, and a run started
with `dagster job execute` has neither.

So every run stamps itself with the identity of the process executing it (host, pid, the process's
start time, boot, machine and pid namespace: see `ProcessIdentity`), and before it claims any slot, and
again while it waits for one, it checks the runs that hold slots or claim to be running: a run of this
host whose process is gone is marked failed and its slots are freed. Runs of other hosts, and runs
without the stamp, cannot be checked from here; the waiting run names them instead.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES
from dagster._core.storage.event_log.base import EventLogStorage

TAG_HOST = "dual_db/host"
TAG_PID = "dual_db/pid"
# Start time of the process in clock ticks since boot (/proc/<pid>/stat field 22): with the boot id it
# tells a run's process from a later process that reused its pid.
TAG_PROCESS_START = "dual_db/process_start"
TAG_BOOT_ID = "dual_db/boot_id"
TAG_MACHINE_ID = "dual_db/machine_id"
TAG_PID_NAMESPACE = "dual_db/pid_namespace"

# Statuses of a run whose process may be executing it. STARTING runs are not stamped yet (the stamp
# is written when execution begins), so they are never judged.
RUNNING_STATUSES = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)

_PROC = Path("/proc")


def _read_first_line(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _boot_id() -> str | None:
    return _read_first_line(_PROC / "sys/kernel/random/boot_id")


def _machine_id() -> str | None:
    return _read_first_line(Path("/etc/machine-id"))


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(_PROC / str(pid) / "ns/pid")
    except OSError:
        return None


def _read_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of `pid` from /proc, or None when there is no such process."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces and parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def _has_proc() -> bool:
    return (_PROC / "self/stat").exists()


class Liveness(Enum):
    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"  # another host, or no identity recorded: cannot be checked from here


@dataclass(frozen=True)
class ProcessIdentity:
    """The process executing a run, as recorded in the run's tags.

    A host name alone does not say "this machine": containers sharing the host's network share its
    name but not its processes, and two machines may have the same name. So a process is only judged
    from a machine with the same name, machine id (when known) and boot, in the same pid namespace.
    """

    host: str
    pid: int
    start: str | None = None
    boot_id: str | None = None
    machine_id: str | None = None
    pid_namespace: str | None = None

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        stat = _read_stat(pid) if _has_proc() else None
        return cls(
            host=socket.gethostname(),
            pid=pid,
            start=stat[1] if stat else None,
            boot_id=_boot_id(),
            machine_id=_machine_id(),
            pid_namespace=_pid_namespace(pid),
        )

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ProcessIdentity | None:
        if TAG_HOST not in tags or not tags.get(TAG_PID, "").isdigit():
            return None
        return cls(
            host=tags[TAG_HOST],
            pid=int(tags[TAG_PID]),
            start=tags.get(TAG_PROCESS_START) or None,
            boot_id=tags.get(TAG_BOOT_ID) or None,
            machine_id=tags.get(TAG_MACHINE_ID) or None,
            pid_namespace=tags.get(TAG_PID_NAMESPACE) or None,
        )

    def as_tags(self) -> dict[str, str]:
        optional = {
            TAG_PROCESS_START: self.start,
            TAG_BOOT_ID: self.boot_id,
            TAG_MACHINE_ID: self.machine_id,
            TAG_PID_NAMESPACE: self.pid_namespace,
        }
        return {TAG_HOST: self.host, TAG_PID: str(self.pid)} | {k: v for k, v in optional.items() if v}

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"

    def liveness(self) -> tuple[Liveness, str]:
        """Whether this process still runs, and why that is known."""
        if self.host != socket.gethostname():
            return Liveness.UNKNOWN, f"it runs on another host ({self.host})"
        machine_id = _machine_id()
        if self.machine_id and machine_id and self.machine_id != machine_id:
            return Liveness.UNKNOWN, f"it runs on another machine named {self.host}"
        boot_id = _boot_id()
        if self.boot_id and boot_id and self.boot_id != boot_id:
            if self.machine_id and self.machine_id == machine_id:
                return Liveness.GONE, "the host has restarted since"
            return (
                Liveness.UNKNOWN,
                f"it ran before a restart of {self.host}, or on another machine of that name",
            )
        pid_namespace = _pid_namespace(os.getpid())
        if self.pid_namespace and pid_namespace and self.pid_namespace != pid_namespace:
            return Liveness.UNKNOWN, f"it runs in another container (pid namespace) on {self.host}"
        if not _has_proc():
            # No /proc (macOS): the pid alone, without protection against reuse.
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return Liveness.GONE, "no such process"
            except PermissionError:
                pass
            return Liveness.ALIVE, "its process is running"
        stat = _read_stat(self.pid)
        if stat is None:
            return Liveness.GONE, "no such process"
        state, start = stat
        if state in ("Z", "X"):
            return Liveness.GONE, "the process has exited"
        if self.start and start != self.start:
            return Liveness.GONE, "the pid now belongs to another process"
        return Liveness.ALIVE, "its process is running"


def process_identity_tags(pid: int | None = None) -> dict[str, str]:
    """The tags that identify the process `pid` (default: this one) as a run's executor."""
    return ProcessIdentity.of(os.getpid() if pid is None else pid).as_tags()


@dataclass(frozen=True)
class SlotHolder:
    """A live (or uncheckable) run that holds a slot of a pool."""

    run_id: str
    job_name: str | None
    step_keys: tuple[str, ...]
    identity: ProcessIdentity | None
    liveness: Liveness
    reason: str

    def describe(self) -> str:
        where = self.identity.describe() if self.identity else "no process recorded"
        job = f"{self.job_name}, " if self.job_name else ""
        steps = ", ".join(self.step_keys)
        text = f"run {self.run_id} ({job}step {steps}, {where})"
        if self.liveness is Liveness.ALIVE:
            return f"{text}, which is still running"
        return (
            f"{text}, which dual-db cannot check ({self._uncheckable_reason()}); if that run's process is "
            "gone, force-terminate the run in the Dagster UI and this run takes the slot"
        )

    def _uncheckable_reason(self) -> str:
        return self.reason if self.identity else "the run was started without dual-db's process tags"


Log = Callable[[str], None]


class RunGuard:
    """Recovers from runs that died without recording their end, on behalf of the run `run_id`."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, warn: Log) -> None:
        self._instance = instance
        self._run_id = run_id
        self._warn = warn

    @property
    def _storage(self) -> EventLogStorage:
        return self._instance.event_log_storage

    def stamp(self) -> None:
        """Record this process as the one executing the run."""
        self._instance.add_run_tags(self._run_id, process_identity_tags())

    def recover(self) -> list[str]:
        """Mark every dead run failed and free every slot held by a run that has ended.

        Returns the ids of the runs found dead.
        """
        dead = []
        for run in self._instance.get_runs(filters=dg.RunsFilter(statuses=list(RUNNING_STATUSES))):
            if run.run_id == self._run_id:
                continue
            identity = ProcessIdentity.from_tags(run.tags)
            if identity is None:
                continue
            liveness, reason = identity.liveness()
            if liveness is Liveness.GONE and self._mark_dead(run, identity, reason):
                dead.append(run.run_id)
        if self._storage.supports_global_concurrency_limits:
            for pool in sorted(self._storage.get_concurrency_keys()):
                self.holders(pool)
        return dead

    def holders(self, pool: str) -> list[SlotHolder]:
        """The runs other than this one that hold slots of `pool`, once dead and ended runs are freed."""
        if not self._storage.supports_global_concurrency_limits:
            return []
        steps_by_run: dict[str, list[str]] = {}
        for slot in self._storage.get_concurrency_info(pool).claimed_slots:
            if slot.run_id != self._run_id:
                steps_by_run.setdefault(slot.run_id, []).append(slot.step_key)
        holders = []
        for run_id, step_keys in sorted(steps_by_run.items()):
            run = self._instance.get_run_by_id(run_id)
            if run is None or run.status in FINISHED_STATUSES:
                self._storage.free_concurrency_slots_for_run(run_id)
                status = run.status.value if run else "deleted"
                self._warn(
                    f"Freed the {pool} pool slot held by run {run_id}, which had already ended ({status})."
                )
                continue
            identity = ProcessIdentity.from_tags(run.tags)
            if identity is None:
                liveness, reason = Liveness.UNKNOWN, "no process recorded"
            else:
                liveness, reason = identity.liveness()
            if identity is not None and liveness is Liveness.GONE:
                self._mark_dead(run, identity, reason)
                continue
            holders.append(
                SlotHolder(run_id, run.job_name, tuple(sorted(step_keys)), identity, liveness, reason)
            )
        return holders

    def _mark_dead(self, run: dg.DagsterRun, identity: ProcessIdentity, reason: str) -> bool:
        """Mark `run` failed (canceled if it was being canceled) and free its slots."""
        current = self._instance.get_run_by_id(run.run_id)
        if current is None or current.status not in RUNNING_STATUSES:
            return False  # another run recovered it meanwhile, or it ended on its own
        outcome = "canceled" if current.status is dg.DagsterRunStatus.CANCELING else "failed"
        message = (
            f"Run {run.run_id} is no longer running: its process ({identity.describe()}) is gone "
            f"({reason}). Marked {outcome} by run {self._run_id}, which freed its concurrency pool slots."
        )
        # Failed first, slots second: if this process dies in between, the next run frees the slots of
        # an ended run; the other way round, it would find the dead run again.
        if outcome == "canceled":
            self._instance.report_run_canceled(current, message=message)
        else:
            self._instance.report_run_failed(current, message=message)
        pools = self._pools_held_by(run.run_id)
        if pools:
            self._storage.free_concurrency_slots_for_run(run.run_id)
        freed = f"freed its slot in pool {', '.join(pools)}" if pools else "it held no pool slot"
        self._warn(
            f"Run {run.run_id} ({run.job_name}) is no longer running: its process "
            f"({identity.describe()}) is gone ({reason}); marked it {outcome} and {freed}."
        )
        return True

    def _pools_held_by(self, run_id: str) -> list[str]:
        if not self._storage.supports_global_concurrency_limits:
            return []
        infos = self._storage.get_concurrency_infos(sorted(self._storage.get_concurrency_keys()))
        return [
            pool
            for pool, info in infos.items()
            if any(slot.run_id == run_id for slot in info.claimed_slots)
            or any(step.run_id == run_id for step in info.pending_steps)
        ]
