"""Cancelling a run's statements on the servers when the run is interrupted.

A step's statements run in threads that a signal never reaches: Python delivers signals to the main
thread only, and a thread blocked in libpq waits for the server. So when a run was interrupted (SIGTERM
or SIGINT on `dagster job execute`), the run was marked failed at once while its CREATE INDEX went on
for as long as the build took (27 s for a test table; hours for a production one), and the process
waited for it at exit. Long statements run here on sessions registered with their run's
`Cancellation`; whoever learns of the interrupt (the executor's main thread) calls `cancel_run`, which
sends each registered session's server a cancel request (libpq's, no new login) and makes every later
registration fail at once. The cancelled statement's transaction rolls back: a cancelled CREATE INDEX
leaves no index behind, a cancelled load leaves the table as it was. A process killed outright cannot
cancel: its sessions ask their servers to notice that it is gone (`stop_when_client_is_gone`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

# How long one cancel request may take to reach a server (libpq 17's non-blocking cancel).
CANCEL_TIMEOUT_SECONDS = 5.0
# How often a server checks, while a statement runs, that the client is still there (PostgreSQL 14+).
CLIENT_CHECK_INTERVAL = "2s"


def stop_when_client_is_gone(conn: psycopg.Connection) -> None:
    """Have `conn`'s server stop what it runs once this process is gone: a killed process (kill -9,
    the OOM killer) cancels nothing, and a server notices a closed socket only when it next talks to
    the client, which a CREATE INDEX does only at its end. A no-op before PostgreSQL 14."""
    if conn.info.server_version >= 140000:
        conn.execute(
            sql.SQL("SET client_connection_check_interval = {}").format(sql.Literal(CLIENT_CHECK_INTERVAL))
        )


class Interrupted(RuntimeError):
    """The run was interrupted: its statements were cancelled on the servers and rolled back."""


class Cancellation:
    """The sessions one run's long statements are running on, cancelled together on an interrupt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: set[psycopg.Connection] = set()
        self._reason: str | None = None

    @property
    def reason(self) -> str | None:
        """Why the run was interrupted, once it was."""
        return self._reason

    def check(self) -> None:
        """Raise `Interrupted` once the run was interrupted: no new statement starts."""
        if self._reason is not None:
            raise Interrupted(self._reason)

    @contextmanager
    def session(self, conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
        """`conn` is cancelled on an interrupt while inside this block."""
        with self._lock:
            self.check()
            self._sessions.add(conn)
        try:
            yield conn
        finally:
            with self._lock:
                self._sessions.discard(conn)

    def cancel(self, reason: str) -> int:
        """Cancel what every registered session runs now, and refuse new registrations; how many
        sessions were sent a cancel request."""
        with self._lock:
            self._reason = self._reason or reason
            sessions = list(self._sessions)
        sent = 0
        for conn in sessions:
            try:
                conn.cancel_safe(timeout=CANCEL_TIMEOUT_SECONDS)
                sent += 1
            except Exception:
                continue  # closed meanwhile, or its server is gone: nothing runs there
        return sent


# Per run id, while a step of that run holds it: an interrupt with no step holding one cancels nothing.
_RUNS: weakref.WeakValueDictionary[str, Cancellation] = weakref.WeakValueDictionary()
_RUNS_LOCK = threading.Lock()


def run_cancellation(run_id: str) -> Cancellation:
    """The `Cancellation` of run `run_id`, shared by its steps (hold it while statements run)."""
    with _RUNS_LOCK:
        found = _RUNS.get(run_id)
        if found is None:
            found = _RUNS[run_id] = Cancellation()
        return found


def cancel_run(run_id: str, reason: str) -> int:
    """Cancel run `run_id`'s registered statements (`Cancellation.cancel`); 0 when none runs."""
    with _RUNS_LOCK:
        found = _RUNS.get(run_id)
    return found.cancel(reason) if found is not None else 0
