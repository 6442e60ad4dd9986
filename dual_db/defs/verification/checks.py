"""Database-level asset checks: extension rules, schema parity, foreign keys, sequences.

Each is a thin wrapper: open the connections, call the verification engine (`dual_db.verify.checks`),
turn its `CheckOutcome` into an `AssetCheckResult`. The per-table checks (count_parity,
checksum_parity) live with the table assets, which compute them as each table lands; source_drift
lives with `verification_report`, which computes it so that its summary can say the source moved.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg

from dual_db.db.names import TableName
from dual_db.defs.check_results import to_check_result
from dual_db.defs.constants import (
    AI_EXTENSION_RULES,
    CORE_EXTENSION_RULES,
    FOREIGN_KEYS_VALID,
    POST_DATA_ASSETS,
    SCHEMA_ASSETS,
    SCHEMA_PARITY,
    SEQUENCES_ALIGNED,
)
from dual_db.defs.errors import clear_failure
from dual_db.defs.resources import AiDatabase, CoreDatabase, SourceDatabase, target_database
from dual_db.defs.state import SequencesRecord, latest_metadata
from dual_db.defs.targets.schema import ACCEPTED_METADATA
from dual_db.routing import TARGETS, RoutingPlan
from dual_db.verify import checks as verify
from dual_db.verify.outcome import CheckOutcome


def _left_out_by_plan(instance: dg.DagsterInstance, target: str) -> dict[TableName, set[tuple[str, str]]]:
    """Per table, the (kind, name) of what the routing plan's accept_across_split left out of `target`,
    as its schema step recorded it: schema_parity does not expect them there."""
    kinds = {"TRIGGER": "trigger", "POLICY": "policy", "INDEX": "index", "CONSTRAINT": "constraint"}
    kinds["FK CONSTRAINT"] = "constraint"
    out: dict[TableName, set[tuple[str, str]]] = {}
    for item in (latest_metadata(instance, SCHEMA_ASSETS[target]) or {}).get(ACCEPTED_METADATA) or []:
        if not isinstance(item, dict) or not item.get("table") or item.get("kind") not in kinds:
            continue
        table = TableName.parse(str(item["table"]))
        out.setdefault(table, set()).add((kinds[str(item["kind"])], str(item.get("own_name") or "")))
    return out


def _not_materialized(check: str, key: dg.AssetKey) -> dg.AssetCheckResult:
    return to_check_result(
        CheckOutcome(False, f"{check}: {key.to_user_string()} has not been materialized yet", [])
    )


def _blocking_check(asset: dg.AssetKey, name: str, description: str) -> Callable[..., Any]:
    """`@dg.asset_check(asset=asset, name=name, blocking=True)`, one op per check as that makes, but its
    output named after the check instead of `result`.

    Dagster orders the blocking checks a downstream asset waits for by output name only
    (`_get_blocking_asset_check_output_handles_by_asset_key`), taken from a set: with four `result`s on
    one asset the order, and so the job snapshot's id, changed with each process's hash seed. The UI
    then saw every run, from the CLI or from an earlier `dagster dev`, as made from another version
    of its job, and its "Re-execute" warned.
    """
    spec = dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)
    return dg.multi_asset_check(specs=[spec], name=spec.get_python_identifier(), description=description)


def build_database_checks(target: str, plan: RoutingPlan) -> list[dg.AssetChecksDefinition]:
    """The checks on `core/post_data` or `ai/vector_indexes`: the target database as a whole."""
    asset = POST_DATA_ASSETS[target]
    tables = plan.tables(target)
    other_tables = {t for other in TARGETS if other != target for t in plan.tables(other)}
    routed = {*tables, *other_tables}
    # Each reference is counted once, on the database that holds its referencing rows (a key from core
    # into AI on core's check); AI's check also takes those whose holder the plan does not route.
    references = [
        ref
        for ref in plan.soft_references
        if ref.from_table in tables
        or (target == "ai" and ref.to_table in tables and ref.from_table not in routed)
    ]

    @_blocking_check(
        asset,
        SCHEMA_PARITY,
        description="Columns, keys, constraints, indexes and triggers of every migrated table equal the "
        "source's, minus what the routing removed.",
    )
    def schema_parity(
        context: dg.AssetCheckExecutionContext, source: SourceDatabase, core: CoreDatabase, ai: AiDatabase
    ) -> dg.AssetCheckResult:
        with clear_failure(context):
            with (
                source.get_connection() as source_conn,
                target_database(target, core, ai).get_connection(autocommit=True) as target_conn,
            ):
                return to_check_result(
                    verify.schema_parity(
                        source_conn,
                        target_conn,
                        tables,
                        ignore_foreign_keys_to=other_tables,
                        left_out=_left_out_by_plan(context.instance, target),
                    )
                )

    @_blocking_check(
        asset,
        FOREIGN_KEYS_VALID,
        description="Every foreign key is validated with no orphan rows; references to the other database "
        "(soft references) are reported with their orphan count.",
    )
    def foreign_keys_valid(
        context: dg.AssetCheckExecutionContext, core: CoreDatabase, ai: AiDatabase
    ) -> dg.AssetCheckResult:
        with clear_failure(context):
            with (
                core.get_connection(autocommit=True) as core_conn,
                ai.get_connection(autocommit=True) as ai_conn,
            ):
                outcome = verify.foreign_keys_valid(core_conn if target == "core" else ai_conn, tables)
                if not references:
                    return to_check_result(outcome)
                soft = verify.soft_references(ai_conn, core_conn, references)
            return to_check_result(
                CheckOutcome(
                    passed=outcome.passed and soft.passed,
                    summary=f"{outcome.summary}; {soft.summary}",
                    failures=[*outcome.failures, *soft.failures],
                    warnings=[*outcome.warnings, *soft.warnings],
                    metadata={**outcome.metadata, "soft_references": soft.metadata},
                )
            )

    @_blocking_check(
        asset,
        SEQUENCES_ALIGNED,
        description="Every sequence's next value is beyond the source's at the copy.",
    )
    def sequences_aligned(
        context: dg.AssetCheckExecutionContext, core: CoreDatabase, ai: AiDatabase
    ) -> dg.AssetCheckResult:
        with clear_failure(context):
            record = SequencesRecord.latest(context.instance, asset)
            if record is None:
                return _not_materialized(SEQUENCES_ALIGNED, asset)
            with target_database(target, core, ai).get_connection(autocommit=True) as conn:
                return to_check_result(verify.sequences_aligned(record.sequences, conn))

    checks: list[dg.AssetChecksDefinition] = [schema_parity, foreign_keys_valid, sequences_aligned]
    if target == "core":

        @_blocking_check(
            asset,
            CORE_EXTENSION_RULES,
            description="Core has no vector extension, no pgvector-typed column, no hnsw/ivfflat index.",
        )
        def core_extension_rules(
            context: dg.AssetCheckExecutionContext, core: CoreDatabase
        ) -> dg.AssetCheckResult:
            with clear_failure(context):
                with core.get_connection(autocommit=True) as conn:
                    return to_check_result(verify.core_extension_rules(conn))

        checks.append(core_extension_rules)
    else:

        @_blocking_check(
            asset,
            AI_EXTENSION_RULES,
            description="vector is installed; every hnsw/ivfflat index the source has exists on AI, with "
            "the source's access method, operator class and parameters, and is valid.",
        )
        def ai_extension_rules(
            context: dg.AssetCheckExecutionContext, source: SourceDatabase, ai: AiDatabase
        ) -> dg.AssetCheckResult:
            with clear_failure(context):
                with (
                    source.get_connection() as source_conn,
                    ai.get_connection(autocommit=True) as ai_conn,
                ):
                    return to_check_result(verify.ai_extension_rules(source_conn, ai_conn, tables))

        checks.append(ai_extension_rules)
    return checks


def verification_checks(plan: RoutingPlan) -> list[dg.AssetChecksDefinition]:
    return [
        *build_database_checks("core", plan),
        *build_database_checks("ai", plan),
    ]
