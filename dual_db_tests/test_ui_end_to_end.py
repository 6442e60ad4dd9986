"""The Dagster UI as the user's client, end to end: `dagster dev -w workspace.yaml` (what `make dev`
runs: webserver, daemon, code server) on a free loopback port, a PostgreSQL instance as dagster.yaml
configures it, the demo source (its 43 tables, at a small scale) on the embedded servers.

Through the webserver's GraphQL API: `migrate` launched and read back (every table's materialization,
every check), a run made with `dagster job execute` found where the job's page looks for it, one table
re-materialized alone, and a corruption found by `verify` with its key range; the daemon's alert sensor
posting that failure. Through headless chromium: the asset graph, the core group, a table's checks and
the report render, with their names and row counts, and are saved as screenshots.

One `dagster dev` and one `migrate` serve the whole module; the tests run in the order written: the
pages are photographed right after `migrate`, before any other run changes what they show.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dual_db.db.connect import connection
from dual_db.db.urls import DatabaseUrl
from dual_db.defs.constants import CODE_LOCATION, table_asset_keys
from dual_db.demo import build_demo_source
from dual_db.embedded import EmbeddedCluster
from dual_db.routing import DEFAULT_PLAN_FILE, RoutingPlan
from dual_db_tests.cli_support import _DUAL_DB_ENV, BIN_DIR, REPO_ROOT
from dual_db_tests.ui_support import DagsterUI, chromium_page, start_dagster_dev, stop_process_group

# The slow suite (make test-slow, which .ci/run also runs): keeps make test under 15 minutes.
pytestmark = pytest.mark.slow

SCALE = 0.01
SEED = 7
REPOSITORY = "__repository__"
LABEL = f"{REPOSITORY}@{CODE_LOCATION}"
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
UPDATE_SCREENSHOTS = os.environ.get("DUAL_DB_UPDATE_SCREENSHOTS") == "1"


class Webhook:
    """A Slack-like receiver on a loopback port: what the alert sensor posts, in order."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    ui: DagsterUI
    source: DatabaseUrl
    core: DatabaseUrl
    ai: DatabaseUrl
    cwd: Path
    env: dict[str, str]
    webhook: Webhook
    rows: dict[str, int]  # source rows per table, as the demo builder reports them
    plan: RoutingPlan


@pytest.fixture(scope="module")
def stack(servers: EmbeddedCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("ui")
    names = {role: f"ui_{role}_{os.getpid()}" for role in ("source", "core", "ai")}
    instance_name = f"ui_instance_{os.getpid()}"
    created = [(servers[role], name) for role, name in names.items()] + [(servers["core"], instance_name)]
    for server, name in created:
        server.drop_database(name)
        server.ensure_database(name)
    source, core, ai = (servers[role].url(names[role]) for role in ("source", "core", "ai"))
    instance_db = servers["core"].url(instance_name)
    summary = build_demo_source(source, scale=SCALE, seed=SEED)

    cwd, home = root / "project", root / "home"
    cwd.mkdir()
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    webhook = Webhook()
    env = {k: v for k, v in os.environ.items() if k not in _DUAL_DB_ENV}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_DISABLE_TELEMETRY="1",
        DAGSTER_POSTGRES_URL=instance_db.sqlalchemy_url(),
        DUAL_DB_PLAN_FILE=str(DEFAULT_PLAN_FILE),
        SOURCE_DATABASE_URL=source.uri(),
        CORE_DATABASE_URL=core.uri(),
        AI_DATABASE_URL=ai.uri(),
        DUAL_DB_ALERT_WEBHOOK_URL=webhook.url,
    )
    ui = start_dagster_dev(cwd=cwd, env=env, log_file=root / "dagster-dev.log", location=CODE_LOCATION)
    try:
        yield Stack(
            ui=ui,
            source=source,
            core=core,
            ai=ai,
            cwd=cwd,
            env=env,
            webhook=webhook,
            rows=dict(summary.row_counts),
            plan=RoutingPlan.load(DEFAULT_PLAN_FILE),
        )
    finally:
        stop_process_group(ui.process)
        webhook.close()
        for server, name in created:
            server.drop_database(name)


@dataclass
class Migrated:
    run: dict[str, Any]


@pytest.fixture(scope="module")
def migrated(stack: Stack) -> Migrated:
    run_id = stack.ui.launch(CODE_LOCATION, "migrate")
    run = stack.ui.wait_for_run(run_id, timeout=600)
    assert run["status"] == "SUCCESS", stack.ui.failures(run_id)
    return Migrated(run=run)


def _key(path: list[str]) -> str:
    return "/".join(path)


def _table_keys(plan: RoutingPlan) -> dict[str, list[str]]:
    """Each table's asset key, as the code location names them, by table name."""
    return {str(table): list(key.path) for key, table in table_asset_keys(plan).items()}


ASSET_NODES = """
query { assetNodes { assetKey { path } groupName jobNames
  assetChecksOrError { ... on AssetChecks { checks { name } } } } }
"""

LATEST = """
query Latest($keys: [AssetKeyInput!]!) {
  assetsLatestInfo(assetKeys: $keys) {
    assetKey { path }
    latestMaterialization { runId timestamp metadataEntries { label
      ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } }
  }
}
"""

CHECK_EXECUTIONS = """
query Checks($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 1) {
    runId status
    evaluation { success severity description metadataEntries { label
      ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
      ... on IntMetadataEntry { intValue } } }
  }
}
"""


def _latest(ui: DagsterUI, keys: list[list[str]]) -> dict[str, dict[str, Any]]:
    infos = ui.graphql(LATEST, {"keys": [{"path": k} for k in keys]})["assetsLatestInfo"]
    return {_key(i["assetKey"]["path"]): i["latestMaterialization"] for i in infos}


def _check_execution(ui: DagsterUI, key: list[str], check: str) -> dict[str, Any]:
    [execution] = ui.graphql(CHECK_EXECUTIONS, {"key": {"path": key}, "check": check})["assetCheckExecutions"]
    return dict(execution)


def _metadata(entries: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for entry in entries:
        value = entry.get("intValue", entry.get("text", entry.get("jsonString")))
        out[entry["label"]] = json.loads(value) if "jsonString" in entry else value
    return out


def test_migrate_launched_from_the_webserver_materializes_every_table_and_passes_every_check(
    stack: Stack, migrated: Migrated
) -> None:
    ui, run = stack.ui, migrated.run
    assert run["repositoryOrigin"] == {"repositoryLocationName": CODE_LOCATION, "repositoryName": REPOSITORY}
    nodes = ui.graphql(ASSET_NODES)["assetNodes"]
    in_migrate = [n for n in nodes if "migrate" in n["jobNames"]]
    tables = _table_keys(stack.plan)
    assert len(tables) == len(stack.rows) == 43
    assert {_key(k) for k in tables.values()} <= {_key(n["assetKey"]["path"]) for n in in_migrate}

    # Every asset of the job was materialized by this run; every table with its source's row count.
    latest = _latest(ui, [n["assetKey"]["path"] for n in in_migrate])
    assert {key for key, m in latest.items() if m is None or m["runId"] != run["runId"]} == set()
    for table, key in tables.items():
        metadata = _metadata(latest[_key(key)]["metadataEntries"])
        assert metadata["rows"] == metadata["source_rows"] == stack.rows[table], table

    # Every check of every asset in the job: its latest execution is this run's, and it passed.
    checks = [
        (node["assetKey"]["path"], check["name"])
        for node in in_migrate
        for check in node["assetChecksOrError"].get("checks", [])
    ]
    assert len(checks) >= 2 * 43
    results = {(_key(k), c): _check_execution(ui, k, c) for k, c in checks}
    not_passed = {
        name: (e["status"], (e["evaluation"] or {}).get("description"))
        for name, e in results.items()
        if e["runId"] != run["runId"] or e["status"] != "SUCCEEDED" or not e["evaluation"]["success"]
    }
    assert not_passed == {}
    report = _metadata(_latest(ui, [["verification_report"]])["verification_report"]["metadataEntries"])
    assert report["summary"] == "43/43 tables identical, 0 rows missing"


def _wait_and_shoot(page: Any, url: str, expected: list[str], name: str, out: Path) -> str:
    """Opens `url`, waits until every `expected` text is rendered (and no error boundary), saves
    `name`.png and the rendered text as `name`.txt (also when it fails, for the failure's story)."""
    page.open(url)
    shot = out / f"{name}.png"
    try:
        page.wait_for(lambda t: all(e in t for e in expected), f"{url} showing {expected}")
    finally:
        page.screenshot(shot)
        (out / f"{name}.txt").write_text(page.text())
    time.sleep(1.5)  # layout and fonts settle; the graph fits its viewport
    text = page.text()
    (out / f"{name}.txt").write_text(text)
    page.screenshot(shot)
    assert shot.stat().st_size > 20_000, f"{shot} is nearly empty"
    if UPDATE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOTS / shot.name)
    return text


def _shown_value(text: str, label: str) -> str:
    """The value the metadata table shows next to `label`, from the rendered text."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert label in lines, f"{label} is not shown"
    return lines[lines.index(label) + 1]


def test_the_ui_pages_render_in_a_browser(
    stack: Stack, migrated: Migrated, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What a user opens after `make demo` and `make dev`, rendered by chromium from the webserver:
    screenshots in the test's folder (and docs/screenshots/ with DUAL_DB_UPDATE_SCREENSHOTS=1)."""
    out = tmp_path_factory.mktemp("screenshots")
    base = stack.ui.url
    positions = stack.rows["positions"]
    with chromium_page() as page:
        # The global asset graph: one box per group, source → core/ai → verification.
        _wait_and_shoot(
            page, f"{base}/asset-groups", ["source", "core", "ai", "verification"], "asset-graph", out
        )

        # The core group in its code location (one name everywhere: `dual_db`), its tables checked.
        text = _wait_and_shoot(
            page,
            f"{base}/locations/{CODE_LOCATION}/asset-groups/core",
            ["post_data", "2 / 2 Passed", "Materialized"],
            "core-group",
            out,
        )
        shown = [str(t) for t in stack.plan.tables("core") if f"\n{t}\n" in f"\n{text}\n"]
        assert len(shown) >= 5, f"only {shown} of the core tables are named in the group's graph"

        # A table's checks: both parity checks passed, the row count in the latest execution's summary.
        text = _wait_and_shoot(
            page,
            f"{base}/assets/core/positions?view=checks",
            ["checksum_parity", "count_parity", "Passed", f"({positions} rows"],
            "positions-checks",
            out,
        )
        assert "Failed" not in text

        # The table's latest materialization: Dagster's row count and table name, the copy's figures.
        text = _wait_and_shoot(
            page,
            f"{base}/assets/core/positions?view=events",
            ["dagster/row_count", "dagster/table_name", "source_rows", "public.positions"],
            "positions-materialization",
            out,
        )
        assert _shown_value(text, "dagster/row_count") == str(positions)
        assert _shown_value(text, "source_rows") == str(positions)

        # The verification report: its summary and figures.
        _wait_and_shoot(
            page,
            f"{base}/assets/verification_report?view=events",
            ["43/43 tables identical, 0 rows missing", "tables_identical"],
            "verification-report",
            out,
        )


def test_a_dagster_job_execute_run_is_listed_under_its_job_and_reexecutes_in_its_location(
    stack: Stack, migrated: Migrated
) -> None:
    """Item 1 of issue 12 through the real webserver: the README's CLI path, then what the job's Runs
    page asks the webserver for (job name + repository label tag), and the re-execute button's test
    (origin and snapshot match the loaded job)."""
    cli = subprocess.run(
        [str(BIN_DIR / "dagster"), "job", "execute", "-m", "dual_db.definitions", "-j", "verify"],
        cwd=stack.cwd,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, (cli.stdout + cli.stderr)[-3000:]
    listed = stack.ui.graphql(
        """query Runs($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results {
             runId pipelineSnapshotId parentPipelineSnapshotId
             repositoryOrigin { repositoryLocationName repositoryName } } } } }""",
        {"filter": {"pipelineName": "verify", "tags": [{"key": ".dagster/repository", "value": LABEL}]}},
    )["runsOrError"]["results"]
    assert len(listed) == 1, listed
    [run] = listed
    assert run["repositoryOrigin"] == {"repositoryLocationName": CODE_LOCATION, "repositoryName": REPOSITORY}
    job = stack.ui.graphql(
        """query Job($selector: PipelineSelector!) { pipelineOrError(params: $selector) {
             ... on Pipeline { pipelineSnapshotId } } }""",
        {
            "selector": {
                "pipelineName": "verify",
                "repositoryName": REPOSITORY,
                "repositoryLocationName": CODE_LOCATION,
            }
        },
    )["pipelineOrError"]
    # useJobAvailabilityErrorForRun: origin and snapshot both match, so "Re-execute" shows no warning
    # (the snapshot of a run of a subset, as `verify`'s checks are, is its parent's).
    assert (run["parentPipelineSnapshotId"] or run["pipelineSnapshotId"]) == job["pipelineSnapshotId"]


def test_rematerializing_one_table_from_the_webserver_touches_only_that_table(
    stack: Stack, migrated: Migrated
) -> None:
    ui = stack.ui
    keys = [n["assetKey"]["path"] for n in ui.graphql(ASSET_NODES)["assetNodes"]]
    before = _latest(ui, keys)
    run_id = ui.launch(CODE_LOCATION, "__ASSET_JOB", asset_selection=[["core", "positions"]])
    run = ui.wait_for_run(run_id)
    assert run["status"] == "SUCCESS", ui.failures(run_id)
    assert [a["path"] for a in run["assetSelection"]] == [["core", "positions"]]
    after = _latest(ui, keys)
    changed = {k for k in after if (after[k] or {}).get("runId") != (before[k] or {}).get("runId")}
    assert changed == {"core/positions"}
    assert after["core/positions"]["runId"] == run_id
    metadata = _metadata(after["core/positions"]["metadataEntries"])
    assert metadata["rows"] == stack.rows["positions"]
    parity = _check_execution(ui, ["core", "positions"], "checksum_parity")
    assert (parity["runId"], parity["status"]) == (run_id, "SUCCEEDED")


def test_verify_from_the_webserver_finds_a_corruption_and_names_its_key_range(
    stack: Stack, migrated: Migrated
) -> None:
    ui = stack.ui
    with connection(stack.core, autocommit=True) as conn:
        row = conn.execute("SELECT id FROM positions ORDER BY id LIMIT 1 OFFSET 7").fetchone()
        assert row is not None
        changed = str(row[0])
        conn.execute("UPDATE positions SET quantity = quantity + 1 WHERE id = %s", (row[0],))
    run_id = ui.launch(CODE_LOCATION, "verify")
    run = ui.wait_for_run(run_id)
    # checksum_parity blocks: its failure fails the table step, and the report waits for a good copy.
    assert run["status"] == "FAILURE"
    assert any("blocking asset check" in failure for failure in ui.failures(run_id)), ui.failures(run_id)
    parity = _check_execution(ui, ["core", "positions"], "checksum_parity")
    assert (parity["runId"], parity["status"]) == (run_id, "FAILED")
    evaluation = parity["evaluation"]
    assert evaluation["severity"] == "ERROR" and not evaluation["success"]
    metadata = _metadata(evaluation["metadataEntries"])
    assert "id >=" in metadata["range"] or "id <" in metadata["range"], metadata["range"]
    assert {"kind": "changed", "key": [changed]} in metadata["differences"]
    assert "first differing key range" in evaluation["description"]
    assert changed in evaluation["description"]
    # Every other table still passes.
    count = _check_execution(ui, ["core", "positions"], "count_parity")
    assert count["status"] == "SUCCEEDED"
    users = _check_execution(ui, ["core", "users"], "checksum_parity")
    assert (users["runId"], users["status"]) == (run_id, "SUCCEEDED")


def test_the_daemon_runs_the_alert_sensor_and_it_posts_the_failed_check(
    stack: Stack, migrated: Migrated
) -> None:
    """The sensor ticks every 60 s in the daemon `dagster dev` started; the failed checksum_parity of
    the previous test reaches the webhook within a tick or two."""
    ui = stack.ui
    deadline = time.monotonic() + 150
    while not any("checksum_parity" in json.dumps(p) for p in stack.webhook.posts):
        assert time.monotonic() < deadline, f"no alert posted; posts: {stack.webhook.posts}\n{ui.log_tail()}"
        time.sleep(2)
    [post] = [p for p in stack.webhook.posts if "checksum_parity" in json.dumps(p)]
    assert post["check"] == "checksum_parity" and post["asset"] == "core/positions"
    assert post["severity"] == "ERROR"
    ticks = ui.graphql(
        """query Sensor($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
             ... on Sensor { sensorState { status
               ticks(limit: 10) { status skipReason error { message } } } } } }""",
        {
            "selector": {
                "sensorName": "check_failure_alerts",
                "repositoryName": REPOSITORY,
                "repositoryLocationName": CODE_LOCATION,
            }
        },
    )["sensorOrError"]["sensorState"]
    assert ticks["status"] == "RUNNING"
    assert ticks["ticks"] and all(t["error"] is None for t in ticks["ticks"]), ticks["ticks"]
