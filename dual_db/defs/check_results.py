"""The one converter from a verification engine's `CheckOutcome` to Dagster's `AssetCheckResult`."""

from __future__ import annotations

from typing import Any

import dagster as dg

from dual_db.verify.outcome import CheckOutcome

# How many failure lines go into a check's description (all of them stay in metadata).
DESCRIBED_FAILURES = 10


def to_check_result(
    outcome: CheckOutcome, *, asset_key: dg.AssetKey | None = None, check_name: str | None = None
) -> dg.AssetCheckResult:
    """`asset_key` and `check_name` are needed where one step yields several checks (the table assets)."""
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
