"""Schema handling: dumping the source schema with a compatible pg_dump, splitting it into the core and
AI schemas with a real SQL parser (pglast), and applying the result in one transaction."""

from dual_db.schema.apply import SchemaApplyError, apply_sql
from dual_db.schema.dump import (
    BackupResult,
    PgToolError,
    SchemaSections,
    backup_compression,
    check_pg_dump_compatible,
    choose_backup_compression,
    dump_full_backup,
    dump_schema_sections,
    pg_tool_version,
    pg_tool_version_string,
    resolve_pg_bin_dir,
)
from dual_db.schema.split import (
    CoreTableHasVectorColumn,
    PostData,
    RemovedObject,
    SchemaSplit,
    SchemaSplitError,
    SoftReference,
    TargetVersionError,
    VectorIndex,
    split_schema,
    vector_indexes,
)
from dual_db.schema.statements import SchemaParseError, Statement, statements_of, strip_restrict_commands

__all__ = [
    "BackupResult",
    "CoreTableHasVectorColumn",
    "PgToolError",
    "PostData",
    "RemovedObject",
    "SchemaApplyError",
    "SchemaParseError",
    "SchemaSections",
    "SchemaSplit",
    "SchemaSplitError",
    "SoftReference",
    "Statement",
    "TargetVersionError",
    "VectorIndex",
    "apply_sql",
    "backup_compression",
    "check_pg_dump_compatible",
    "choose_backup_compression",
    "dump_full_backup",
    "dump_schema_sections",
    "pg_tool_version",
    "pg_tool_version_string",
    "resolve_pg_bin_dir",
    "split_schema",
    "statements_of",
    "strip_restrict_commands",
    "vector_indexes",
]
