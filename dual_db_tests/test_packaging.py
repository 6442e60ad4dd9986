"""A plain (non-editable) `pip install .` carries everything dual-db needs, the demo's SQL included."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from dual_db.embedded import EmbeddedCluster
from dual_db_tests.conftest import DatabaseFactory

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "dual_db").rglob("__init__.py")
    }
    sql_folders = {
        ".".join(("dual_db", "sql", *d.relative_to(ROOT / "sql").parts))
        for d in (ROOT / "sql").rglob("*")
        if d.is_dir()
    }
    assert listed == on_disk | {"dual_db.sql"} | sql_folders


def test_a_wheel_install_builds_the_demo_source(
    tmp_path: Path, servers: EmbeddedCluster, new_database: DatabaseFactory
) -> None:
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("dual_db-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    url = new_database(servers["source"])
    env = {**os.environ, "PYTHONPATH": str(target), "SOURCE_DATABASE_URL": url.uri()}
    env.pop("DATABASE_URL", None)
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dual_db.db.sql_files as f; print(f.sql_file('demo_source', 'schema.sql'))",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(target)) and Path(where).is_file()  # the wheel's copy, not the checkout's
    built = subprocess.run(
        [sys.executable, "-m", "dual_db.cli", "demo-source", "--scale", "0.001"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert "built demo source" in built.stdout and "43 tables" in built.stdout
