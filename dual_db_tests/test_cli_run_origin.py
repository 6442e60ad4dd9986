"""A run made with `dagster job execute` (the README's CLI path) belongs to the code location `dual_db`,
as a run launched from the UI does: the UI lists a job's runs by the job's name and the run tag
`.dagster/repository` = `<repository>@<location>`, and re-executes a run in the location its
`remote_job_origin` names (without one, "Re-execute" warns that the job came from elsewhere)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from dual_db.defs.constants import CODE_LOCATION, DEFINITIONS_MODULE
from dual_db.embedded import EmbeddedCluster
from dual_db_tests.cli_support import REPO_ROOT, DagsterProject, make_project

# The repository Dagster makes of a Definitions object.
REPOSITORY = "__repository__"


@pytest.fixture
def project(servers: EmbeddedCluster, new_database, tmp_path: Path) -> DagsterProject:  # type: ignore[no-untyped-def]
    return make_project(tmp_path, servers, new_database)


def test_the_code_location_has_one_name_everywhere() -> None:
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    [entry] = workspace["load_from"]
    assert entry["python_module"] == {"module_name": DEFINITIONS_MODULE, "location_name": CODE_LOCATION}
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert f'code_location_name = "{CODE_LOCATION}"' in pyproject


def test_a_dagster_job_execute_run_belongs_to_the_job_and_the_code_location(project: DagsterProject) -> None:
    run = project.dagster_job("migrate", env=project.urls_env())
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]

    label = f"{REPOSITORY}@{CODE_LOCATION}"
    with project.instance() as instance:
        [record] = instance.get_run_records()
        dagster_run = record.dagster_run
        assert dagster_run.status == dg.DagsterRunStatus.SUCCESS
        origin = dagster_run.remote_job_origin
        assert origin is not None, "the CLI run has no code location (repositoryOrigin: null in the UI)"
        assert origin.job_name == "migrate"
        assert origin.repository_origin.repository_name == REPOSITORY
        assert origin.location_name == CODE_LOCATION
        code_location = origin.repository_origin.code_location_origin
        assert isinstance(code_location, ManagedGrpcPythonEnvCodeLocationOrigin)
        assert code_location.loadable_target_origin.module_name == DEFINITIONS_MODULE
        # What Jobs → migrate → Runs asks for (PipelineRunsFeedRoot: job name + repository label tag).
        listed = instance.get_run_records(
            filters=dg.RunsFilter(job_name="migrate", tags={REPOSITORY_LABEL_TAG: label})
        )
        assert [r.dagster_run.run_id for r in listed] == [dagster_run.run_id]
        assert dagster_run.tags[REPOSITORY_LABEL_TAG] == label


def test_a_run_from_another_code_pointer_claims_no_location(project: DagsterProject) -> None:
    """Only the workspace's module is the workspace's location: a file that builds the definitions
    itself is another code location, and its run keeps no origin rather than a wrong one."""
    defs_file = project.cwd / "my_defs.py"
    defs_file.write_text("from dual_db.definitions import build_definitions\n\ndefs = build_definitions()\n")
    run = project.run(
        "dagster", "job", "execute", "-f", str(defs_file), "-j", "verify", env=project.urls_env()
    )
    # verify on empty targets fails its checks, but the run itself is what matters here.
    with project.instance() as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.remote_job_origin is None, run.stderr[-2000:]
        assert REPOSITORY_LABEL_TAG not in record.dagster_run.tags


def test_job_snapshots_are_the_same_in_every_process() -> None:
    """The UI re-executes a run without a warning only when the run's job snapshot is the one the code
    location has loaded now: a CLI run, or a run from an earlier `dagster dev`, was made by another
    process, whose string hashing is seeded differently."""
    program = (
        "from dual_db.definitions import defs\n"
        "repository = defs.get_repository_def()\n"
        "for job in repository.get_all_jobs():\n"
        "    print(job.name, job.get_job_snapshot_id())\n"
    )
    snapshots = set()
    for seed in ("1", "2"):  # these two seeds ordered the checks differently
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "DUAL_DB_PLAN_FILE": str(REPO_ROOT / "routing_plan.yaml"),
        }
        result = subprocess.run(
            [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
        )
        snapshots.add(result.stdout)
    assert len(snapshots) == 1, "\n".join(sorted(snapshots))
