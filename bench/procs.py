"""Run a command and measure it: wall time and the peak RSS of its whole process tree.

Every ~50 ms the sampler walks /proc, collects the command's process and all its descendants (by
parent pid, so a child that starts its own session is still counted) and sums their resident set
sizes. PostgreSQL servers are not descendants of the command (they were started before it, by the
bench), so their memory is never counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SECONDS = 0.05
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measured:
    seconds: float
    returncode: int
    peak_rss_bytes: int
    # Proportional set size: shared pages (libraries, a forked worker's copy-on-write pages) divided
    # among the processes sharing them, so that the sum is not inflated by processes that fork.
    peak_pss_bytes: int
    log: Path


def _process_table() -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(children by parent pid, processes by session id)."""
    children: dict[int, list[int]] = {}
    sessions: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
        rest = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(rest[1]), []).append(int(entry.name))
        sessions.setdefault(int(rest[3]), []).append(int(entry.name))
    return children, sessions


def tree_pids(root: int) -> set[int]:
    """`root`, its descendants, and whatever still runs in its session (orphans re-parented to init)."""
    children, sessions = _process_table()
    found: set[int] = set()
    todo = [root, *sessions.get(root, ())]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        return 0
    return 0


def tree_rss(root: int) -> int:
    return sum(_rss(pid) for pid in tree_pids(root))


def tree_memory(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) over the tree."""
    pids = tree_pids(root)
    return sum(_rss(pid) for pid in pids), sum(_pss(pid) for pid in pids)


def run_measured(
    argv: list[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> Measured:
    """Run `argv` (output to `log`) in its own session and measure it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = peak_pss = 0
    with open(log, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak, peak_pss
            while not stop.is_set():
                rss, pss = tree_memory(proc.pid)
                peak, peak_pss = max(peak, rss), max(peak_pss, pss)
                stop.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
        seconds = time.monotonic() - started
        stop.set()
        sampler.join()
    return Measured(
        seconds=seconds, returncode=returncode, peak_rss_bytes=peak, peak_pss_bytes=peak_pss, log=log
    )
