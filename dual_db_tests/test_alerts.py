"""The check_failure_alerts sensor against a real Dagster instance and a real local HTTP webhook."""

from __future__ import annotations

import ast
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
from dagster_postgres.event_log import PostgresEventLogStorage

from dual_db.alerting import (
    MAX_TEXT_VALUE,
    WEBHOOK_URL_ENV,
    AlertPostError,
    mask_webhook_url,
    post_alert,
    scalar_metadata,
)
from dual_db.defs.alerts import ALERTS_PER_TICK, check_failure_alerts
from dual_db.embedded import EmbeddedCluster
from dual_db_tests.conftest import DatabaseFactory

# The part of a Slack webhook URL that is the credential.
SECRET_PATH = "/services/T0DUALDB/B0ALERTS/s3cr3tT0k3nXYZ"


@dataclass
class Webhook:
    """A local receiver: answers each POST with the next status in `statuses` (then 200)."""

    port: int
    statuses: list[int] = field(default_factory=list)
    accepted: list[dict[str, object]] = field(default_factory=list)
    attempts: int = 0
    paths: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    state = Webhook(port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                state.attempts += 1
                state.paths.append(self.path)
                status = state.statuses.pop(0) if state.statuses else 200
                if 200 <= status < 300:
                    state.accepted.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(params=["ephemeral", "postgres"])
def instance(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """In-memory storage, and the project's own: dagster.yaml's PostgreSQL storage on a fresh database."""
    if request.param == "ephemeral":
        with dg.DagsterInstance.ephemeral() as memory_instance:
            yield memory_instance
        return
    servers: EmbeddedCluster = request.getfixturevalue("servers")
    new_database: DatabaseFactory = request.getfixturevalue("new_database")
    instance_db = new_database(servers["core"])
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", instance_db.sqlalchemy_url("psycopg2"))
    (tmp_path / "dagster.yaml").write_text((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as postgres_instance:
        assert isinstance(postgres_instance.event_log_storage, PostgresEventLogStorage)
        yield postgres_instance


# A tiny asset with one check per outcome the sensor must tell apart.
@dg.asset(key=["alerts_test", "rows"])
def rows() -> None:
    return None


@dg.asset_check(asset=rows, name="count_parity")
def count_parity() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description="target has 7 rows, source 10 at the snapshot\nmissing key range (8..10)",
        metadata={"source_rows": 10, "target_rows": 7, "failures": dg.MetadataValue.json(["rows 8..10"])},
    )


@dg.asset_check(asset=rows, name="orphan_growth")
def orphan_growth() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description="orphans grew from 2 to 5",
        metadata={"orphans_before": 2, "orphans_after": 5},
    )


@dg.asset_check(asset=rows, name="always_passes")
def always_passes() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, description="fine", metadata={"rows": 10})


def _run_checks(instance: dg.DagsterInstance, *checks: dg.AssetChecksDefinition) -> None:
    result = dg.materialize([rows, *checks], instance=instance)
    assert result.success


@dataclass
class Tick:
    cursor: str | None
    reason: str
    log: str


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> Tick:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        context.log.addHandler(Collect())
        result = check_failure_alerts(context)
    if isinstance(result, dg.SkipReason):
        return Tick(cursor=cursor, reason=result.skip_message or "", log="\n".join(records))
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    reason = result.skip_reason.skip_message if result.skip_reason else ""
    return Tick(cursor=result.cursor, reason=reason or "", log="\n".join(records))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_each_failed_check_is_posted_once_passing_checks_never(
    instance: dg.DagsterInstance, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEBHOOK_URL_ENV, webhook.url)
    _run_checks(instance, count_parity, orphan_growth, always_passes)

    first = _tick(instance, None)
    assert webhook.attempts == 2 and webhook.paths == [SECRET_PATH, SECRET_PATH]
    by_check = {alert["check"]: alert for alert in webhook.accepted}
    assert set(by_check) == {"count_parity", "orphan_growth"}
    error, warn = by_check["count_parity"], by_check["orphan_growth"]
    assert error["asset"] == "alerts_test/rows" and error["severity"] == "ERROR"
    assert warn["severity"] == "WARN"
    assert error["metadata"] == {"source_rows": 10, "target_rows": 7}  # the JSON list is left out
    assert error["description"].startswith("target has 7 rows, source 10")
    assert isinstance(error["run_id"], str) and error["run_id"]
    # Slack's text names the check, the asset, the severity, the summary line and the counts.
    text = error["text"]
    assert "[ERROR]" in text and "count_parity" in text and "alerts_test/rows" in text
    assert "target has 7 rows, source 10 at the snapshot" in text and "missing key range" not in text
    assert "source_rows=10, target_rows=7" in text
    assert (
        "[WARN]" in warn["text"] and "orphans_before=2" in warn["text"] and "orphans_after=5" in warn["text"]
    )
    assert "posted 2 alert(s) to http://127.0.0.1:" in first.reason
    assert first.log.count("posted ") == 2

    second = _tick(instance, first.cursor)
    assert webhook.attempts == 2 and second.cursor == first.cursor
    assert second.reason == "no new check evaluations"

    # A later run where only the passing check runs: read, not posted, and the cursor moves past it.
    _run_checks(instance, always_passes)
    third = _tick(instance, second.cursor)
    assert webhook.attempts == 2
    assert third.reason == "1 new check evaluation(s), none failed"
    assert json.loads(third.cursor)["after_storage_id"] > json.loads(second.cursor)["after_storage_id"]

    # A new failure after that is posted, once.
    _run_checks(instance, orphan_growth)
    fourth = _tick(instance, third.cursor)
    fifth = _tick(instance, fourth.cursor)
    assert [alert["check"] for alert in webhook.accepted] == [
        "count_parity",
        "orphan_growth",
        "orphan_growth",
    ]
    assert webhook.attempts == 3 and fifth.cursor == fourth.cursor


def test_a_refused_or_unreachable_webhook_loses_nothing_and_never_shows_the_url(
    instance: dg.DagsterInstance, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_checks(instance, count_parity, orphan_growth)
    seen: list[str] = []

    # The receiver is down: nothing is posted and the cursor does not move.
    down_url = f"http://127.0.0.1:{_free_port()}{SECRET_PATH}"
    monkeypatch.setenv(WEBHOOK_URL_ENV, down_url)
    down = _tick(instance, None)
    assert down.cursor is None and "retried on the next tick" in down.reason
    seen += [down.reason, down.log]

    # The receiver answers 500 to the first post, then accepts: the first failure stops the tick, the
    # evaluation it was for is posted on the next tick, and the second evaluation follows it.
    monkeypatch.setenv(WEBHOOK_URL_ENV, webhook.url)
    webhook.statuses = [500]
    refused = _tick(instance, down.cursor)
    assert webhook.attempts == 1 and webhook.accepted == []
    assert refused.cursor is None and "HTTP 500" in refused.reason and "HTTP 500" in refused.log
    seen += [refused.reason, refused.log]

    retried = _tick(instance, refused.cursor)
    assert sorted(alert["check"] for alert in webhook.accepted) == ["count_parity", "orphan_growth"]
    assert webhook.attempts == 3
    seen += [retried.reason, retried.log, retried.cursor or ""]

    # 500 on the second of two evaluations: the first is not posted again on the retry.
    _run_checks(instance, count_parity, orphan_growth)
    webhook.statuses = [200, 503]
    partly = _tick(instance, retried.cursor)
    assert "posted 1 alert(s)" in partly.reason and "HTTP 503" in partly.reason
    assert partly.cursor != retried.cursor
    rest = _tick(instance, partly.cursor)
    again = _tick(instance, rest.cursor)
    assert [alert["check"] for alert in webhook.accepted][2:] == ["count_parity", "orphan_growth"]
    assert webhook.attempts == 6 and again.cursor == rest.cursor
    seen += [partly.reason, partly.log, partly.cursor or "", rest.reason, rest.log, rest.cursor or ""]

    # The exceptions the engine raises name the masked URL only, and chain nothing that has the URL.
    for url in (down_url, f"htp:/{SECRET_PATH}", f"http://127.0.0.1:{webhook.port}{SECRET_PATH}?token=x"):
        webhook.statuses = [404]
        with pytest.raises(AlertPostError) as raised:
            post_alert(url, {"text": "t"}, timeout=5)
        assert raised.value.__cause__ is None and raised.value.__suppress_context__
        seen.append(str(raised.value))

    assert len(seen) == 16
    for text in seen:
        assert "s3cr3t" not in text and "B0ALERTS" not in text and "token=x" not in text, text


def _failing_check(index: int) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=rows, name=f"failing_{index:02d}")
    def failing() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, description=f"failure {index}")

    return failing


def test_a_backlog_is_posted_over_several_ticks_in_order(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick posts at most ALERTS_PER_TICK alerts, so it ends well before Dagster's sensor timeout."""
    monkeypatch.setenv(WEBHOOK_URL_ENV, webhook.url)
    count = ALERTS_PER_TICK + 3
    with dg.DagsterInstance.ephemeral() as instance:
        _run_checks(instance, *(_failing_check(i) for i in range(count)))
        first = _tick(instance, None)
        assert (
            len(webhook.accepted) == ALERTS_PER_TICK and f"posted {ALERTS_PER_TICK} alert(s)" in first.reason
        )
        second = _tick(instance, first.cursor)
        third = _tick(instance, second.cursor)
    assert sorted(alert["check"] for alert in webhook.accepted) == [f"failing_{i:02d}" for i in range(count)]
    assert webhook.attempts == count and third.reason == "no new check evaluations"


def test_the_webhook_url_is_masked_after_the_host() -> None:
    assert mask_webhook_url(f"https://hooks.slack.com{SECRET_PATH}") == "https://hooks.slack.com/***"
    assert mask_webhook_url("https://user:pw@example.com:8443/x?token=y") == "https://example.com:8443/***"
    assert mask_webhook_url("not a url s3cr3t") == "***"


def test_alert_metadata_keeps_what_json_and_chat_can_show() -> None:
    kept = scalar_metadata(
        {"rows": 3, "ratio": 0.5, "nan": float("nan"), "ok": False, "keys": [1, 2], "long": "x" * 500}
    )
    assert kept == {"rows": 3, "ratio": 0.5, "ok": False, "long": "x" * (MAX_TEXT_VALUE - 1) + "…"}


def test_without_a_webhook_the_sensor_skips_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEBHOOK_URL_ENV, raising=False)
    with dg.DagsterInstance.ephemeral() as instance:
        _run_checks(instance, count_parity)
        with dg.build_sensor_context(instance=instance) as context:
            result = check_failure_alerts(context)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == f"{WEBHOOK_URL_ENV} is not set: no alerts are posted"


def test_on_per_run_sqlite_storage_the_sensor_skips_and_says_why(
    webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster's default storage restarts storage ids in every run: no cursor can be kept on them."""
    monkeypatch.setenv(WEBHOOK_URL_ENV, webhook.url)
    with dg.instance_for_test() as instance:
        _run_checks(instance, count_parity)
        tick = _tick(instance, None)
    assert "stores events per run (SQLite)" in tick.reason and tick.cursor is None
    assert webhook.attempts == 0


def test_the_alert_engine_does_not_import_dagster() -> None:
    module = Path(__file__).resolve().parents[1] / "dual_db" / "alerting.py"
    imported = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "json", "math", "urllib", "collections", "dataclasses"}, imported
