"""The application's side of the split (migration plan phase 6): core and AI databases from one module.

Plain Python (SQLAlchemy, asyncpg, pgvector, Alembic); never imports Dagster.

How an application uses it
--------------------------

Environment (the plan's names; every URL form dual-db accepts, e.g. `postgresql+asyncpg://`,
`postgresql://`, `postgres://`, libpq `key=value`, `sslmode=` or `ssl=`):

    DATABASE_URL=postgresql+asyncpg://app:secret@core-host:5432/railway      # core
    AI_DATABASE_URL=postgresql+asyncpg://app:secret@ai-host:5432/railway     # optional: core if unset
    CORE_DB_POOL_SIZE=20 CORE_DB_MAX_OVERFLOW=10 CORE_DB_POOL_RECYCLE=1800 CORE_DB_POOL_PRE_PING=true
    AI_DB_POOL_SIZE=10 AI_DB_MAX_OVERFLOW=5                                  # optional pool settings

`backend/app/database.py` becomes a re-export:

    from dual_db.app import (AsyncSessionLocal, get_ai_db, get_ai_session, get_async_session,
                             get_core_session, get_db)

Sessions, as in the plan:

    async with get_core_session() as session:          # portfolios, positions, ...
        await session.execute(text("SELECT ..."))
    async with get_ai_session() as session:            # ai_* tables; vectors decode via pgvector
        row = (await session.execute(text("SELECT embedding FROM ai_kb_documents"))).first()
        row.embedding.to_list()

    @router.post("/feedback")
    async def submit_feedback(db: AsyncSession = Depends(get_ai_db)): ...

`get_async_session`, `get_db` and `AsyncSessionLocal` keep meaning core. Engines are built on first
use from the environment; `configure(AppSettings(...))` builds them from explicit settings, and
`await dispose()` closes both pools at shutdown. `str(settings)` and the engines' URLs mask passwords.

Alembic (`alembic/env.py`), so that autogenerate against core stops proposing the AI tables:

    from dual_db.app.migrations import include_name_for, include_object_for
    context.configure(connection=connection, target_metadata=Base.metadata,
                      include_object=include_object_for("core"), include_name=include_name_for("core"))

The filters read the routing plan (`routing_plan.yaml` or `$DUAL_DB_PLAN_FILE`, or pass a
`RoutingPlan`).
"""

from __future__ import annotations

from typing import Any

from dual_db.app import database as _database
from dual_db.app.database import (
    DualDatabase,
    configure,
    create_engine,
    current,
    dispose,
    get_ai_db,
    get_ai_session,
    get_async_session,
    get_core_session,
    get_db,
    register_vector_if_installed,
)
from dual_db.app.settings import AppSettings, AppSettingsError, AsyncpgTarget, PoolSettings, asyncpg_target

__all__ = [
    "AppSettings",
    "AppSettingsError",
    "AsyncpgTarget",
    "DualDatabase",
    "PoolSettings",
    "asyncpg_target",
    "configure",
    "create_engine",
    "current",
    "dispose",
    "get_ai_db",
    "get_ai_session",
    "get_async_session",
    "get_core_session",
    "get_db",
    "register_vector_if_installed",
]


def __getattr__(name: str) -> Any:
    # The plan's engine and session-factory names, resolved on use (see dual_db.app.database).
    if name in _database.LAZY_NAMES:
        return getattr(_database, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
