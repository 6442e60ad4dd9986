"""The private Dagster API that dual_db/compute_logs.py stands on at run time, named, so that a Dagster
release that moves it fails here with its name instead of somewhere in a run.

(The executor's, the run origin's and the instance storage's private imports are issue 20's to remove.)
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

# (module, name, who relies on it and how)
PRIVATE_USES = [
    (
        "dagster._core.storage.local_compute_log_manager",
        "LocalComputeLogManager",
        "dual_db/compute_logs.py subclasses it (capture_logs, register_instance, _base_dir)",
    ),
]


@pytest.mark.parametrize(("module", "name", "why"), PRIVATE_USES, ids=[u[1] for u in PRIVATE_USES])
def test_private_dagster_names_are_still_there(module: str, name: str, why: str) -> None:
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"Dagster no longer has {module}.{name}: {why} ({exc})")
    assert inspect.isclass(found), f"{module}.{name} is no longer a class: {why}"


def test_the_local_compute_log_manager_keeps_what_the_subclass_overrides(tmp_path: Path) -> None:
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

    for method in ("capture_logs", "register_instance", "config_type", "from_config_value"):
        assert callable(getattr(LocalComputeLogManager, method, None)), (
            f"LocalComputeLogManager.{method} is gone: dual_db/compute_logs.py overrides it"
        )
    manager = LocalComputeLogManager(base_dir=str(tmp_path))
    # The subclass sets the directory after registration, as Dagster's default does.
    assert getattr(manager, "_base_dir", None) == str(tmp_path), (
        "LocalComputeLogManager no longer keeps its directory in _base_dir: dual_db/compute_logs.py sets it"
    )
