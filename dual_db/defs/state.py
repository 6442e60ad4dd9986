"""dual-db's state lives in Dagster metadata: one typed record per kind, written and read here only.

- `SnapshotRecord`: which exported snapshot of the source a step read, when, and the WAL position.
- `TableCopyRecord`: one table's copy — rows, bytes, time, the source's fingerprint at the snapshot
  (what count_parity, checksum_parity and source_drift hold the target and the source to), the
  sequences it set. It also writes Dagster's standard table metadata (`dagster/row_count`,
  `dagster/table_name`, `dagster/column_schema`) so that the UI shows them natively.
- `SequencesRecord`: every sequence's value as post-data aligned it (what sequences_aligned checks).

Every other module asks for a record (`TableCopyRecord.latest(instance, key)`), never for a string key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from dual_db.db.catalog import ColumnInfo
from dual_db.db.fingerprint import TEXT_V1, Fingerprint
from dual_db.db.names import TableName
from dual_db.db.snapshot import ExportedSnapshot, TransactionHorizon
from dual_db.verify.outcome import human_bytes as human_bytes


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


def numeric_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers as Dagster's int/float metadata (the UI plots those across materializations); other
    values as they are."""

    def typed(value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, float):
            return dg.MetadataValue.float(value)
        if isinstance(value, int):
            return dg.MetadataValue.int(value)
        return value

    return {name: typed(value) for name, value in values.items()}


# TransactionHorizon's fields, in order, as SnapshotRecord's metadata keys.
_HORIZON_KEYS = (
    "snapshot_transactions",
    "source_system_identifier",
    "source_database_oid",
    "source_server_started_at",
)


@dataclass(frozen=True)
class SnapshotRecord:
    snapshot_id: str
    taken_at: str
    wal_lsn: str
    # Which transactions the snapshot saw, in which database of which cluster, since which server start:
    # what proves later that the source has not changed since (dual_db.verify.drift). None in records
    # written before dual-db kept it, or where the server did not tell.
    horizon: TransactionHorizon | None = None

    def to_metadata(self) -> dict[str, Any]:
        metadata = {
            "snapshot_id": self.snapshot_id,
            "snapshot_taken_at": self.taken_at,
            "wal_lsn": self.wal_lsn,
        }
        if self.horizon is not None:
            metadata.update(zip(_HORIZON_KEYS, astuple(self.horizon), strict=True))
        return metadata

    @classmethod
    def of(cls, exported: ExportedSnapshot) -> SnapshotRecord:
        return cls(exported.snapshot_id, exported.taken_at, exported.wal_lsn or "", exported.horizon)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> SnapshotRecord | None:
        if not metadata.get("snapshot_id"):
            return None
        horizon = [metadata.get(key) for key in _HORIZON_KEYS]
        return cls(
            snapshot_id=str(metadata["snapshot_id"]),
            taken_at=str(metadata.get("snapshot_taken_at") or ""),
            wal_lsn=str(metadata.get("wal_lsn") or ""),
            horizon=TransactionHorizon(*(str(v) for v in horizon)) if all(horizon) else None,
        )


# A sequence's state: (last_value, is_called), as setval takes it.
SequenceState = tuple[int, bool]


def _sequences_from(value: object) -> dict[TableName, SequenceState]:
    result: dict[TableName, SequenceState] = {}
    for name, state in dict(value or {}).items():  # type: ignore[call-overload]
        last_value, is_called = (state if isinstance(state, list | tuple) else (state, True))[:2]
        result[TableName.parse(name)] = (int(last_value), bool(is_called))
    return result


def _sequences_metadata(sequences: Mapping[TableName, SequenceState]) -> dg.MetadataValue:
    return dg.MetadataValue.json({t.qualified: [v, c] for t, (v, c) in sorted(sequences.items())})


@dataclass(frozen=True)
class PartitionCopyRecord:
    """One leaf partition of a partitioned table's copy: what its COPY loaded and both fingerprints."""

    table: TableName
    rows: int
    source: Fingerprint
    target_checksum: str
    copy_seconds: float = 0.0


def _partitions_metadata(partitions: Sequence[PartitionCopyRecord]) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                data={
                    "partition": p.table.qualified,
                    "rows": p.rows,
                    "source_rows": p.source.rows,
                    "source_checksum": p.source.checksum,
                    "target_checksum": p.target_checksum,
                    "copy_s": round(p.copy_seconds, 3),
                }
            )
            for p in partitions
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("partition", "string"),
                dg.TableColumn("rows", "int"),
                dg.TableColumn("source_rows", "int"),
                dg.TableColumn("source_checksum", "string"),
                dg.TableColumn("target_checksum", "string"),
                dg.TableColumn("copy_s", "float"),
            ]
        ),
    )


def _partitions_from(value: object, algorithm: str) -> tuple[PartitionCopyRecord, ...]:
    records = getattr(value, "records", None) or []
    return tuple(
        PartitionCopyRecord(
            table=TableName.parse(str(r.data["partition"])),
            rows=int(r.data.get("rows") or 0),
            source=Fingerprint(int(r.data["source_rows"]), str(r.data["source_checksum"]), algorithm),
            target_checksum=str(r.data.get("target_checksum") or ""),
            copy_seconds=float(r.data.get("copy_s") or 0.0),
        )
        for r in records
    )


@dataclass(frozen=True)
class TableCopyRecord:
    table: TableName
    rows: int
    bytes: int
    seconds: float
    snapshot: SnapshotRecord | None
    source: Fingerprint  # the source table at the snapshot
    target_checksum: str  # the target right after the load
    copy_format: str = ""
    empty_method: str = ""
    replaced_rows: int = 0
    sequences: dict[TableName, SequenceState] = field(default_factory=dict)
    # Where `seconds` went (0.0 in records written before dual-db timed them separately).
    source_fingerprint_seconds: float = 0.0
    copy_seconds: float = 0.0
    target_fingerprint_seconds: float = 0.0
    size_bytes: int = 0  # the target table right after the load (heap and TOAST, no indexes)
    # A partitioned table's leaves, each copied and checked on its own (empty for a plain table).
    partitions: tuple[PartitionCopyRecord, ...] = ()

    @property
    def fingerprint_seconds(self) -> float:
        return self.source_fingerprint_seconds + self.target_fingerprint_seconds

    @property
    def rows_per_second(self) -> float:
        """Rows per second of the COPY stream (the whole table step for older records)."""
        seconds = self.copy_seconds or self.seconds
        return self.rows / seconds if seconds > 0 else float(self.rows)

    def to_metadata(self, columns: Sequence[ColumnInfo] = ()) -> dict[str, Any]:
        # Dagster's standard table metadata first (the documented `dagster/` keys; 1.13 does not export
        # TableMetadataSet at the top level): the asset page shows the row count, the table name, the
        # column schema and `dagster/size_bytes` as "Storage" natively.
        metadata: dict[str, Any] = {
            "dagster/row_count": dg.MetadataValue.int(self.rows),
            "dagster/table_name": self.table.qualified,
            "dagster/size_bytes": dg.MetadataValue.int(self.size_bytes),
            "rows": dg.MetadataValue.int(self.rows),
            "size": human_bytes(self.size_bytes),
            "bytes": dg.MetadataValue.int(self.bytes),  # the COPY stream
            "streamed": human_bytes(self.bytes),
            "rows_per_second": dg.MetadataValue.float(round(self.rows_per_second, 1)),
            "seconds": dg.MetadataValue.float(round(self.seconds, 3)),
            "copy_seconds": dg.MetadataValue.float(round(self.copy_seconds, 3)),
            "source_fingerprint_seconds": dg.MetadataValue.float(round(self.source_fingerprint_seconds, 3)),
            "target_fingerprint_seconds": dg.MetadataValue.float(round(self.target_fingerprint_seconds, 3)),
            "source_rows": dg.MetadataValue.int(self.source.rows),
            "source_checksum": self.source.checksum,
            # The row hash both checksums were computed with: a re-check recomputes with the same one.
            "fingerprint_algorithm": self.source.algorithm,
            "target_checksum": self.target_checksum,
            "copy_format": self.copy_format,
            "empty_method": self.empty_method,
            "replaced_rows": dg.MetadataValue.int(self.replaced_rows),
            "sequences": _sequences_metadata(self.sequences),
        }
        if columns:
            metadata["dagster/column_schema"] = dg.MetadataValue.table_schema(
                dg.TableSchema(
                    columns=[
                        dg.TableColumn(
                            c.name, c.type_sql, constraints=dg.TableColumnConstraints(nullable=not c.not_null)
                        )
                        for c in columns
                    ]
                )
            )
        if self.partitions:
            metadata["partitions"] = _partitions_metadata(self.partitions)
        if self.snapshot is not None:
            metadata.update(self.snapshot.to_metadata())
        return metadata

    @classmethod
    def from_metadata(cls, table: TableName, metadata: Mapping[str, Any]) -> TableCopyRecord | None:
        """None when the metadata holds no copy (never copied, or written by an older dual-db)."""
        if "source_checksum" not in metadata or "source_rows" not in metadata:
            return None
        return cls(
            table=table,
            rows=int(metadata.get("rows") or 0),
            bytes=int(metadata.get("bytes") or 0),
            seconds=float(metadata.get("seconds") or 0.0),
            snapshot=SnapshotRecord.from_metadata(metadata),
            # Records written before the algorithm was recorded hold text-v1 checksums.
            source=Fingerprint(
                int(metadata["source_rows"]),
                str(metadata["source_checksum"]),
                str(metadata.get("fingerprint_algorithm") or TEXT_V1),
            ),
            target_checksum=str(metadata.get("target_checksum") or ""),
            copy_format=str(metadata.get("copy_format") or ""),
            empty_method=str(metadata.get("empty_method") or ""),
            replaced_rows=int(metadata.get("replaced_rows") or 0),
            sequences=_sequences_from(metadata.get("sequences")),
            source_fingerprint_seconds=float(metadata.get("source_fingerprint_seconds") or 0.0),
            copy_seconds=float(metadata.get("copy_seconds") or 0.0),
            target_fingerprint_seconds=float(metadata.get("target_fingerprint_seconds") or 0.0),
            size_bytes=int(metadata.get("dagster/size_bytes") or 0),
            partitions=_partitions_from(
                metadata.get("partitions"), str(metadata.get("fingerprint_algorithm") or TEXT_V1)
            ),
        )

    @classmethod
    def latest(
        cls, instance: dg.DagsterInstance, key: dg.AssetKey, table: TableName
    ) -> TableCopyRecord | None:
        return cls.latest_many(instance, {key: table})[key]

    @classmethod
    def latest_many(
        cls, instance: dg.DagsterInstance, tables: Mapping[dg.AssetKey, TableName]
    ) -> dict[dg.AssetKey, TableCopyRecord | None]:
        """The latest copy record of every table asset in `tables`, in one event-log query."""
        events = instance.get_latest_materialization_events(list(tables))
        records: dict[dg.AssetKey, TableCopyRecord | None] = {}
        for key, table in tables.items():
            event = events.get(key)
            materialization = event.asset_materialization if event is not None else None
            records[key] = (
                cls.from_metadata(table, {k: v.value for k, v in materialization.metadata.items()})
                if materialization is not None
                else None
            )
        return records


@dataclass(frozen=True)
class SequencesRecord:
    """Every sequence as post-data left it on a target, aligned with the source."""

    sequences: dict[TableName, SequenceState]

    def to_metadata(self) -> dict[str, Any]:
        return {"sequences": _sequences_metadata(self.sequences)}

    @classmethod
    def latest(cls, instance: dg.DagsterInstance, key: dg.AssetKey) -> SequencesRecord | None:
        metadata = latest_metadata(instance, key)
        if metadata is None or "sequences" not in metadata:
            return None
        return cls(_sequences_from(metadata["sequences"]))


@dataclass(frozen=True)
class SchemaFilesRecord:
    """Where a schema step left its scripts: the source's dump (pre-data and post-data files) or a
    target's cleaned schema (its pre-data file and the folder of its post-data parts)."""

    pre_data_path: Path
    post_data_path: Path  # the dump's post-data file, or the folder of a target's post-data parts

    def to_metadata(self, *, post_key: str = "post_data_path") -> dict[str, Any]:
        return {
            "pre_data_path": dg.MetadataValue.path(str(self.pre_data_path)),
            post_key: dg.MetadataValue.path(str(self.post_data_path)),
        }

    @classmethod
    def required(
        cls, instance: dg.DagsterInstance, key: dg.AssetKey, *, post_key: str = "post_data_path"
    ) -> SchemaFilesRecord:
        metadata = required_metadata(instance, key)
        return cls(Path(metadata["pre_data_path"]), Path(metadata[post_key]))
