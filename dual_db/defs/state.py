"""dual-db keeps its state in Dagster metadata: the latest materialization of an asset says where its
files are, which snapshot it read and what the source held then."""

from typing import Any

import dagster as dg


def latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any] | None:
    """Plain values of `key`'s latest materialization metadata, or None if it never materialized."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def required_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    """Like `latest_metadata`, failing the step when `key` was never materialized."""
    metadata = latest_metadata(instance, key)
    if metadata is None:
        raise dg.Failure(f"{key.to_user_string()} has not been materialized yet: materialize it first")
    return metadata
