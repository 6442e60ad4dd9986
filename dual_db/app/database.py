"""Two async SQLAlchemy engines on asyncpg, their sessions, and the plan's names for them (phase 6.2).

The engines are built on first use from the environment (`AppSettings.from_environment`), not at
import: importing the module never connects, and tests or scripts may `configure()` other settings.
The plan's module-level names (`core_engine`, `ai_engine`, `CoreSessionLocal`, `AISessionLocal`,
`AsyncSessionLocal`) resolve to the current engines and session factories.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from pgvector.asyncpg import register_vector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from dual_db.app.settings import AppSettings, PoolSettings, asyncpg_target
from dual_db.db.urls import DatabaseUrl

# The schema pgvector was installed in: the codec must be registered on that schema's `vector` type.
_VECTOR_SCHEMA_SQL = (
    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
    "WHERE e.extname = 'vector'"
)


def create_engine(url: DatabaseUrl, pool: PoolSettings, *, vector_codec: bool = False) -> AsyncEngine:
    """An async engine on asyncpg for `url`. With `vector_codec`, every new connection registers
    pgvector's codec, so `vector` columns read back as `pgvector.Vector` (`.to_list()`, `.to_numpy()`)
    and parameters accept lists or numpy arrays."""
    target = asyncpg_target(url)
    connect_args = dict(target.connect_args)
    if vector_codec:
        # asyncpg prepares every statement, and after five executions PostgreSQL may switch to a
        # generic plan; the generic plan of `ORDER BY embedding <=> $1` does not use the HNSW index
        # (measured on the demo data: 3 of 10 RAG queries used it). Custom plans keep it in use.
        settings = dict(connect_args.get("server_settings") or {})
        settings.setdefault("plan_cache_mode", "force_custom_plan")
        connect_args["server_settings"] = settings
    engine = create_async_engine(target.url, connect_args=connect_args, **pool.engine_kwargs())
    if vector_codec:
        event.listen(engine.sync_engine, "connect", _register_vector_codec)
    return engine


def _register_vector_codec(dbapi_connection: Any, _connection_record: Any) -> None:
    # SQLAlchemy's asyncpg adapter runs a coroutine on the raw asyncpg connection through run_async.
    dbapi_connection.run_async(register_vector_if_installed)


async def register_vector_if_installed(conn: asyncpg.Connection) -> bool:
    """Register pgvector's codec when the `vector` extension is installed in this database.

    Without the extension there is nothing to decode: that is the core database, which the AI engine
    uses while `AI_DATABASE_URL` is unset, and it must still connect."""
    schema = await conn.fetchval(_VECTOR_SCHEMA_SQL)
    if schema is None:
        return False
    await register_vector(conn, schema=schema)
    return True


@dataclass
class DualDatabase:
    """The engines and session factories of one `AppSettings`."""

    settings: AppSettings
    core_engine: AsyncEngine
    ai_engine: AsyncEngine
    CoreSessionLocal: async_sessionmaker[AsyncSession]
    AISessionLocal: async_sessionmaker[AsyncSession]

    @classmethod
    def from_settings(cls, settings: AppSettings) -> DualDatabase:
        core_engine = create_engine(settings.core_database_url, settings.core_pool)
        ai_engine = create_engine(settings.ai_database_url, settings.ai_pool, vector_codec=True)
        return cls(
            settings=settings,
            core_engine=core_engine,
            ai_engine=ai_engine,
            CoreSessionLocal=async_sessionmaker(core_engine, class_=AsyncSession, expire_on_commit=False),
            AISessionLocal=async_sessionmaker(ai_engine, class_=AsyncSession, expire_on_commit=False),
        )

    async def dispose(self) -> None:
        await self.core_engine.dispose()
        await self.ai_engine.dispose()


_current: DualDatabase | None = None


def configure(settings: AppSettings | None = None) -> DualDatabase:
    """(Re)build the engines from `settings`, or from the environment. Call `dispose()` first when
    replacing engines that have connections open."""
    global _current
    _current = DualDatabase.from_settings(settings or AppSettings.from_environment())
    return _current


def current() -> DualDatabase:
    """The engines in use, built from the environment on first use."""
    return _current if _current is not None else configure()


async def dispose() -> None:
    """Close both pools (application shutdown) and forget the engines; the next use rebuilds them."""
    global _current
    if _current is not None:
        database, _current = _current, None
        await database.dispose()


@asynccontextmanager
async def _session(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with factory() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise


@asynccontextmanager
async def get_core_session() -> AsyncIterator[AsyncSession]:
    """Async session for the core database."""
    async with _session(current().CoreSessionLocal) as session:
        yield session


@asynccontextmanager
async def get_ai_session() -> AsyncIterator[AsyncSession]:
    """Async session for the AI database (RAG, memories, feedback); core while AI_DATABASE_URL is unset."""
    async with _session(current().AISessionLocal) as session:
        yield session


async def get_db() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency for a core database session: `Depends(get_db)`."""
    async with get_core_session() as session:
        yield session


async def get_ai_db() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency for an AI database session: `Depends(get_ai_db)`."""
    async with get_ai_session() as session:
        yield session


# Backwards compatibility (plan 6.2): existing code uses these names; they mean the core database.
get_async_session = get_core_session

# The plan's module-level engine and session-factory names, resolved lazily (PEP 562).
LAZY_NAMES = {
    "core_engine": "core_engine",
    "ai_engine": "ai_engine",
    "CoreSessionLocal": "CoreSessionLocal",
    "AISessionLocal": "AISessionLocal",
    "AsyncSessionLocal": "CoreSessionLocal",
}


def __getattr__(name: str) -> Any:
    if name in LAZY_NAMES:
        return getattr(current(), LAZY_NAMES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
