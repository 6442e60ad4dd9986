"""Core database assets: `core/schema`, one `core/<table>` per core table, `core/post_data`."""

import dagster as dg

from dual_db.defs.targets.assets import target_assets
from dual_db.routing import RoutingPlan


def core_assets(plan: RoutingPlan) -> list[dg.AssetsDefinition]:
    return target_assets("core", plan)
