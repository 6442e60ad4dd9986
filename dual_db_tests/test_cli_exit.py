"""A process that ran a run does not walk its whole object graph again at exit (executor.py,
`skip_final_collection_at_exit`): the interpreter's final garbage collection cost about 1.3 s of every
`dagster job execute` after the run had ended."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dual_db.embedded import EmbeddedCluster
from dual_db_tests.cli_support import DagsterProject, make_project

# The real `dagster` CLI in this interpreter, with a hook registered before anything else: atexit runs
# handlers last-in first-out, so this one runs last and sees what the run left for the final collection.
_CLI_WITH_EXIT_PROBE = """
import atexit, gc, sys
atexit.register(lambda: print(f"frozen at exit: {gc.get_freeze_count()}", file=sys.stderr))
from dagster._cli import main
sys.argv = ["dagster", *sys.argv[1:]]
main()
"""


@pytest.fixture
def project(servers: EmbeddedCluster, new_database, tmp_path: Path) -> DagsterProject:  # type: ignore[no-untyped-def]
    return make_project(tmp_path, servers, new_database)


def test_a_cli_run_leaves_its_objects_to_the_os_at_exit(project: DagsterProject) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            _CLI_WITH_EXIT_PROBE,
            "job",
            "execute",
            "-m",
            "dual_db.definitions",
            "-j",
            "migrate",
        ],
        cwd=project.cwd,
        env={**project.env, **project.urls_env()},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    [line] = [line for line in run.stderr.splitlines() if line.startswith("frozen at exit: ")]
    # Every object alive when the run's process exits is frozen: hundreds of thousands, not none.
    assert int(line.removeprefix("frozen at exit: ")) > 100_000, line
