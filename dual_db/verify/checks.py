"""Every verification check, in one import: each returns a `CheckOutcome` that the Dagster layer maps
1:1 to an asset check result. One module per family:

- `parity`: count_parity, checksum_parity (per table; `table_parity` runs both);
- `extensions`: core_extension_rules, ai_extension_rules;
- `schema_parity`: schema_parity;
- `integrity`: foreign_keys_valid, soft_references;
- `sequences`: sequences_aligned;
- `drift`: source_drift.
"""

from dual_db.verify.drift import source_drift
from dual_db.verify.extensions import ai_extension_rules, core_extension_rules
from dual_db.verify.integrity import foreign_keys_valid, soft_references
from dual_db.verify.parity import CHECKSUM_PARITY, COUNT_PARITY, checksum_parity, count_parity, table_parity
from dual_db.verify.schema_parity import schema_parity
from dual_db.verify.sequences import sequences_aligned

__all__ = [
    "CHECKSUM_PARITY",
    "COUNT_PARITY",
    "ai_extension_rules",
    "checksum_parity",
    "core_extension_rules",
    "count_parity",
    "foreign_keys_valid",
    "schema_parity",
    "sequences_aligned",
    "soft_references",
    "source_drift",
    "table_parity",
]
