"""`dual-db` as a user runs it: up, status, demo-source, plan --discover, down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dual_db.routing import RoutingPlan


def test_cli_round_trip(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "dual-db")
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    state = tmp_path / "state"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, "--state-dir", str(state), *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    try:
        up = run("up")
        assert up.returncode == 0, up.stderr
        env_file = (tmp_path / ".env").read_text()
        assert "SOURCE_DATABASE_URL=postgresql://postgres:" in env_file
        assert "DAGSTER_POSTGRES_URL=postgresql+psycopg2://" in env_file
        # What it prints is masked; the passwords live only in .env.
        passwords = [line.split(":", 2)[2].split("@")[0] for line in env_file.splitlines() if "://" in line]
        assert passwords and all(p and p not in up.stdout + up.stderr for p in passwords)

        status = run("status")
        assert status.returncode == 0 and status.stdout.count("running pid") == 4, status.stdout

        built = run("demo-source", "--scale", "0.05")
        assert built.returncode == 0, built.stderr
        assert "43 tables" in built.stdout
        again = run("demo-source", "--scale", "0.05")
        assert again.returncode == 2 and "--reset" in again.stderr

        plan_file = tmp_path / "plan.yaml"
        discovered = run("plan", "--discover", "--file", str(plan_file))
        assert discovered.returncode == 0, discovered.stderr
        plan = RoutingPlan.load(plan_file)
        assert {t.name for t in plan.ai} == {"ai_kb_documents"}  # the table with a vector column
        assert len(plan.core) == 42  # ai_memories/ai_feedback have no vector column: discovery says core
    finally:
        down = run("down")
    assert down.returncode == 0 and down.stdout.count("stopped") == 4
