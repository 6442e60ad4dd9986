"""Sensor `check_failure_alerts`: one webhook post per asset-check evaluation that did not pass.

Open-source Dagster alerts on failed runs only (`run_failure_sensor`), and a failed check does not fail
its run, so this sensor reads the asset-check evaluations from the instance's event log instead.

Exactly once: the cursor is the storage id of the last evaluation handled (posted, or passed and so
not posted). A post that fails stops the tick there, so the next tick starts again at that evaluation;
evaluations before it are never posted twice, and none after it is skipped.
"""

from __future__ import annotations

import json
import os
import time

import dagster as dg

from dual_db.alerting import (
    POST_TIMEOUT_SECONDS,
    WEBHOOK_URL_ENV,
    AlertPostError,
    CheckFailure,
    alert_payload,
    mask_webhook_url,
    post_alert,
    scalar_metadata,
)

# Evaluations read per tick; a backlog is worked off over the following ticks, in order.
EVALUATIONS_PER_TICK = 100

# Posts per tick. Dagster abandons a sensor tick after 60 s (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS) and then
# keeps its old cursor, which would post the tick's alerts again: 10 posts of at most
# POST_TIMEOUT_SECONDS (5 s) each stay well inside that. A failed migration (dozens of failed checks)
# is posted over a few ticks, in order.
ALERTS_PER_TICK = 10

# On its first tick (no cursor) the sensor reports only this recent past, not the whole history of an
# instance it is switched on for.
FIRST_TICK_LOOKBACK_SECONDS = 24 * 3600


def _failure(record: dg.EventLogRecord) -> CheckFailure | None:
    """The alert for a record, or None when the check passed."""
    event = record.event_log_entry.dagster_event
    if event is None:
        return None
    evaluation = event.asset_check_evaluation_data
    if evaluation.passed:
        return None
    return CheckFailure(
        storage_id=record.storage_id,
        check=evaluation.check_name,
        asset=evaluation.asset_key.to_user_string(),
        severity=evaluation.severity.value,
        run_id=record.run_id,
        description=evaluation.description,
        metadata=scalar_metadata({key: value.value for key, value in evaluation.metadata.items()}),
    )


def _read_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    return int(json.loads(cursor)["after_storage_id"])


def _write_cursor(after_storage_id: int | None) -> str | None:
    return None if after_storage_id is None else json.dumps({"after_storage_id": after_storage_id})


@dg.sensor(
    name="check_failure_alerts",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        f"Posts every asset-check evaluation that did not pass (ERROR or WARN) once to the webhook in "
        f"{WEBHOOK_URL_ENV} (Slack-compatible JSON); a failed post is retried on the next tick."
    ),
)
def check_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    url = os.environ.get(WEBHOOK_URL_ENV, "").strip()
    if not url:
        return dg.SkipReason(f"{WEBHOOK_URL_ENV} is not set: no alerts are posted")
    if context.instance.event_log_storage.is_run_sharded:
        # Dagster's default SQLite storage keeps one event table per run: storage ids restart in each
        # run, so they cannot be a cursor. The project's dagster.yaml stores events in PostgreSQL.
        return dg.SkipReason(
            "the instance stores events per run (SQLite): check alerts need the project's dagster.yaml "
            "(PostgreSQL event storage)"
        )
    masked = mask_webhook_url(url)
    after = _read_cursor(context.cursor)
    records = context.instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            after_cursor=after,
            after_timestamp=None if after is not None else time.time() - FIRST_TICK_LOOKBACK_SECONDS,
        ),
        limit=EVALUATIONS_PER_TICK,
        ascending=True,
    )
    posted = 0
    for record in records:
        failure = _failure(record)
        if failure is not None:
            if posted == ALERTS_PER_TICK:
                break
            try:
                status = post_alert(url, alert_payload(failure), timeout=POST_TIMEOUT_SECONDS)
            except AlertPostError as error:
                context.log.error(f"{error}; retried on the next tick")
                return dg.SensorResult(
                    skip_reason=f"posted {posted} alert(s); {error}; retried on the next tick",
                    cursor=_write_cursor(after),
                )
            posted += 1
            context.log.info(
                f"posted {failure.severity} alert for check {failure.check} on {failure.asset} "
                f"(run {failure.run_id}) to {masked}: HTTP {status}"
            )
        after = record.storage_id
    if posted:
        reason = f"posted {posted} alert(s) to {masked}"
    elif records:
        reason = f"{len(records)} new check evaluation(s), none failed"
    else:
        reason = "no new check evaluations"
    return dg.SensorResult(skip_reason=reason, cursor=_write_cursor(after))
