"""AI database assets: `ai/schema` (with pgvector), one `ai/<table>` per AI table, `ai/vector_indexes`."""

import dagster as dg

from dual_db.defs.targets.assets import target_assets
from dual_db.routing import RoutingPlan


def ai_assets(plan: RoutingPlan) -> list[dg.AssetsDefinition]:
    return target_assets("ai", plan)
