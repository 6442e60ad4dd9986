"""Names that are part of dual-db's interface: asset keys, check names, job names, pools."""

import hashlib
import re

import dagster as dg

from dual_db.db.names import TableName
from dual_db.routing import TARGETS, RoutingPlan
from dual_db.verify.parity import CHECKSUM_PARITY as CHECKSUM_PARITY
from dual_db.verify.parity import COUNT_PARITY as COUNT_PARITY

SOURCE_FULL_BACKUP = dg.AssetKey(["source", "full_backup"])
SOURCE_SCHEMA_DUMP = dg.AssetKey(["source", "schema_dump"])
# Named after their database: the graph shows a key's last part, and two "schema" nodes read alike.
CORE_SCHEMA = dg.AssetKey(["core", "core_schema"])
AI_SCHEMA = dg.AssetKey(["ai", "ai_schema"])
CORE_POST_DATA = dg.AssetKey(["core", "post_data"])
AI_VECTOR_INDEXES = dg.AssetKey(["ai", "vector_indexes"])
VERIFICATION_REPORT = dg.AssetKey(["verification_report"])
CUTOVER = dg.AssetKey(["cutover"])
BASELINE = dg.AssetKey(["baseline", "metrics"])
SOAK_HEALTH = dg.AssetKey(["soak", "health"])
DECOMMISSION_READINESS = dg.AssetKey(["soak", "decommission_readiness"])
CORE_TUNING = dg.AssetKey(["core", "tuning"])
AI_TUNING = dg.AssetKey(["ai", "tuning"])
ROLLBACK_RESTORED_SOURCE = dg.AssetKey(["rollback", "restored_source"])

# Asset checks (count_parity and checksum_parity are named by the engine that runs them, above)
ROUTING_COMPLETE = "routing_complete"
CORE_EXTENSION_RULES = "core_extension_rules"
AI_EXTENSION_RULES = "ai_extension_rules"
SCHEMA_PARITY = "schema_parity"
FOREIGN_KEYS_VALID = "foreign_keys_valid"
SEQUENCES_ALIGNED = "sequences_aligned"
SOURCE_DRIFT = "source_drift"

# The code location: workspace.yaml and pyproject.toml's [tool.dagster] load this module under this name.
DEFINITIONS_MODULE = "dual_db.definitions"
CODE_LOCATION = "dual_db"

# Jobs
MIGRATE_JOB = "migrate"
VERIFY_JOB = "verify"
SOAK_JOB = "soak"
ROLLBACK_JOB = "rollback"

# Concurrency pool for steps that read the source: one heavy reader at a time per target server.
SOURCE_POOL = "dual_db_source"

# The steps that read the source's exported snapshot (dumps, table copies); once every one of them in a
# run is done, the snapshot is released.
SNAPSHOT_READER_STEPS = frozenset({"source__full_backup", "source__schema_dump", "core_tables", "ai_tables"})

SCHEMA_ASSETS = {"core": CORE_SCHEMA, "ai": AI_SCHEMA}
POST_DATA_ASSETS = {"core": CORE_POST_DATA, "ai": AI_VECTOR_INDEXES}
TUNING_ASSETS = {"core": CORE_TUNING, "ai": AI_TUNING}


_UNSAFE = re.compile(r"[^a-z0-9_]+")
# Names the target groups use (or used) for their own assets: a table called `core_schema` must not
# become the asset `core/core_schema`.
_TARGET_ASSET_NAMES = frozenset(
    {"schema", "core_schema", "ai_schema", "post_data", "vector_indexes", "tuning"}
)


def table_asset_name(table: TableName) -> str:
    """A Dagster-safe asset key component: `positions`, `analytics__daily_pnl`.

    Names that need changing (case, spaces, punctuation) get a short hash of the real name so that
    two tables never share an asset name.
    """
    base = table.name if table.schema == "public" else f"{table.schema}__{table.name}"
    safe = _UNSAFE.sub("_", base.lower()).strip("_") or "table"
    if safe != base or safe in _TARGET_ASSET_NAMES:
        digest = hashlib.sha1(f"{table.schema}.{table.name}".encode()).hexdigest()[:6]
        safe = f"{safe}_{digest}"
    return safe


def table_key(target: str, table: TableName) -> dg.AssetKey:
    """`core/positions`: the asset of `table` in `target`."""
    return dg.AssetKey([target, table_asset_name(table)])


def table_asset_keys(plan: RoutingPlan) -> dict[dg.AssetKey, TableName]:
    """Every table asset of the plan, core's then AI's, with its table."""
    return {table_key(target, table): table for target in TARGETS for table in plan.tables(target)}
