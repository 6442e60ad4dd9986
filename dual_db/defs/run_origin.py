"""Runs made outside the webserver (`dagster job execute`, `dagster asset materialize`) join the code
location `dual_db`, as runs launched from the UI do.

Dagster gives such runs no `remote_job_origin`: `execute_job` knows the Python module it loaded, not the
workspace's name for it. The UI then lists them under Runs only, not under the job (Jobs → migrate →
Runs asks for the job's name and the run tag `.dagster/repository` = `<repository>@<location>`), and
its "Re-execute" warns that the job came from another code location.

A run whose job was loaded from `dual_db.definitions` (the module workspace.yaml loads as `dual_db`) is
given, when it starts, the origin that workspace entry produces and the label tag: the same records
`dagster run migrate-repository` rewrites. A run from any other code pointer (a file of one's own, a
test) is another code location and is left without one: no origin is better than a wrong one.
"""

from __future__ import annotations

import sys

import dagster as dg
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG
from dagster._core.workspace.load import location_origin_from_module_name

from dual_db.defs.constants import CODE_LOCATION, DEFINITIONS_MODULE


def workspace_origin(job_code_origin: JobPythonOrigin | None) -> RemoteJobOrigin | None:
    """The origin workspace.yaml's `dual_db` location gives this job, or None when the job was loaded
    from something other than the module that location loads."""
    if job_code_origin is None:
        return None
    pointer = job_code_origin.repository_origin.code_pointer
    if not isinstance(pointer, ModuleCodePointer) or pointer.module != DEFINITIONS_MODULE:
        return None
    # As workspace.yaml's `python_module` entry: no attribute, no working directory, this interpreter.
    location = location_origin_from_module_name(
        module_name=DEFINITIONS_MODULE,
        attribute=None,
        working_directory=None,
        location_name=CODE_LOCATION,
        executable_path=sys.executable,
    )
    # `defs` (a Definitions) is one repository, which Dagster names `__repository__`.
    return RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=location, repository_name=SINGLETON_REPOSITORY_NAME
        ),
        job_name=job_code_origin.job_name,
    )


def adopt_code_location(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RemoteJobOrigin | None:
    """Give `run` the workspace's origin and label when it has none; returns the origin it now has."""
    if run.remote_job_origin is not None:
        return run.remote_job_origin
    origin = workspace_origin(run.job_code_origin)
    if origin is None:
        return None
    # The label tag row first (replace_job_origin only updates an existing one), then the run's body.
    instance.add_run_tags(run.run_id, {REPOSITORY_LABEL_TAG: origin.repository_origin.get_label()})
    tagged = instance.get_run_by_id(run.run_id)
    assert tagged is not None
    instance.run_storage.replace_job_origin(tagged, origin)
    return origin
