"""Alembic filters from the routing plan: each database autogenerates only its own tables.

After the split the application's models still describe every table, core and AI. Without a filter,
`alembic revision --autogenerate` against core proposes to create the AI tables there (and, against
the AI database, the core tables). In `alembic/env.py`:

    from dual_db.app.migrations import include_object_for, include_name_for

    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=include_object_for("core"),
        include_name=include_name_for("core"),
    )

Core keeps every table the plan does not route to AI, so a model added after the split lands in core
unless the plan routes it to AI; AI keeps only the plan's AI tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Column, Constraint, Index, Table
from sqlalchemy.sql.schema import SchemaItem

from dual_db.db.names import TableName
from dual_db.routing import TARGETS, RoutingPlan

IncludeObject = Callable[[SchemaItem, str | None, str, bool, SchemaItem | None], bool]
IncludeName = Callable[[str | None, str, Mapping[str, Any]], bool]


def _table_filter(database: str, plan: RoutingPlan | None) -> Callable[[TableName], bool]:
    if database not in TARGETS:
        raise ValueError(f"database must be one of {', '.join(TARGETS)}, not {database!r}")
    plan = plan or RoutingPlan.load()
    ai_tables = frozenset(plan.ai)
    if database == "core":
        return lambda table: table not in ai_tables
    return lambda table: table in ai_tables


def include_object_for(
    database: str, plan: RoutingPlan | None = None, *, default_schema: str = "public"
) -> IncludeObject:
    """Alembic's `include_object(object, name, type_, reflected, compare_to)` for `database`
    ("core" or "ai"): a table, and its columns, indexes and constraints, are compared only in the
    database the plan routes the table to. `plan` defaults to `RoutingPlan.load()`; tables without
    a schema (`schema=None` in the models and in reflection) are in `default_schema`."""
    keeps = _table_filter(database, plan)

    def include_object(
        object_: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: SchemaItem | None
    ) -> bool:
        table = _owning_table(object_)
        if table is None:
            return True
        return keeps(TableName(table.schema or default_schema, table.name))

    return include_object


def include_name_for(
    database: str, plan: RoutingPlan | None = None, *, default_schema: str = "public"
) -> IncludeName:
    """Alembic's `include_name(name, type_, parent_names)` for `database`: the other database's
    tables are not even reflected. Complements `include_object_for`, which also covers the models."""
    keeps = _table_filter(database, plan)

    def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
        if type_ == "table" and name is not None:
            return keeps(TableName(parent_names.get("schema_name") or default_schema, name))
        table_name = parent_names.get("table_name")
        if table_name is not None:
            return keeps(TableName(parent_names.get("schema_name") or default_schema, table_name))
        return True

    return include_name


def _owning_table(object_: SchemaItem) -> Table | None:
    """The table a schema item belongs to (the item itself for a table)."""
    if isinstance(object_, Table):
        return object_
    if isinstance(object_, Column | Index | Constraint):
        table = object_.table
        return table if isinstance(table, Table) else None
    return None
