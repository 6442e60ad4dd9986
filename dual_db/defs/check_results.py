"""The one converter from a verification engine's `CheckOutcome` to Dagster's `AssetCheckResult`."""

from __future__ import annotations

from typing import Any

import dagster as dg

from dual_db.verify.outcome import CheckOutcome

# How many failure lines go into a check's description (all of them stay in metadata).
DESCRIBED_FAILURES = 10


def _log_failure(outcome: CheckOutcome, asset_key: dg.AssetKey | None, check_name: str | None) -> None:
    """A failing check's reason at ERROR (WARNING for a WARN check). Dagster logs the evaluation itself
    at DEBUG only, which `make demo` and most log filters hide, leaving "1 blocking asset check failed"."""
    try:
        context = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        context = None
    if context is not None and (asset_key is None or check_name is None):
        keys = list(context.selected_asset_check_keys)
        if len(keys) == 1:
            asset_key, check_name = asset_key or keys[0].asset_key, check_name or keys[0].name
    where = f"check {check_name or '?'}" + (f" on {asset_key.to_user_string()}" if asset_key else "")
    more = len(outcome.failures) - 1
    text = f"{where} did not pass: {outcome.summary}" + (
        f" ({more} more in the check's metadata)" if more > 0 else ""
    )
    log = context.log if context is not None else dg.get_dagster_logger()
    (log.error if outcome.severity == "ERROR" else log.warning)(text)


def to_check_result(
    outcome: CheckOutcome, *, asset_key: dg.AssetKey | None = None, check_name: str | None = None
) -> dg.AssetCheckResult:
    """`asset_key` and `check_name` are needed where one step yields several checks (the table assets).
    A failing outcome is logged with its reason (`_log_failure`)."""
    if not outcome.passed:
        _log_failure(outcome, asset_key, check_name)
    severity = dg.AssetCheckSeverity.ERROR if outcome.severity == "ERROR" else dg.AssetCheckSeverity.WARN
    lines = [
        outcome.summary,
        *outcome.failures[:DESCRIBED_FAILURES],
        *outcome.warnings[:DESCRIBED_FAILURES],
    ]
    metadata: dict[str, Any] = {
        key: dg.MetadataValue.json(value) if isinstance(value, list | dict) else value
        for key, value in outcome.metadata.items()
        if value is not None
    }
    metadata["failures"] = dg.MetadataValue.json(outcome.failures)
    if outcome.warnings:
        metadata["warnings"] = dg.MetadataValue.json(outcome.warnings)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=check_name,
        passed=outcome.passed,
        severity=severity,
        description="\n".join(dict.fromkeys(lines)),
        metadata=metadata,
    )
