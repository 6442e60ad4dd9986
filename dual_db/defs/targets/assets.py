"""The asset chain every target database gets: schema → one asset per table → post-data."""

import dagster as dg

from dual_db.defs.targets.schema import build_post_data_asset, build_schema_asset
from dual_db.defs.targets.tables import build_table_assets
from dual_db.routing import RoutingPlan


def target_assets(target: str, plan: RoutingPlan) -> list[dg.AssetsDefinition]:
    assets = [build_schema_asset(target, plan)]
    table_assets = build_table_assets(target, plan.tables(target), plan)
    if table_assets is not None:
        assets.append(table_assets)
    assets.append(build_post_data_asset(target, plan))
    return assets
