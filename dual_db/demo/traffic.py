"""Traffic that acts as the application, for the demo and the soak-week tests.

Everything goes through `dual_db.app` (the application's engines and sessions), so it reaches exactly
the databases the application is configured with (`DATABASE_URL`, `AI_DATABASE_URL`) and nothing else.
Each round runs the batch workload's reads on core, a RAG query on AI, and writes what a chat turn
writes: a message in core (`agent_messages`) and, on AI, feedback on it and a memory of its user — the
cross-database soft references no foreign key guards. Bounded: at most `rounds` rounds and `seconds`.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from dataclasses import dataclass

from pgvector import Vector
from sqlalchemy import text

from dual_db.app.database import DualDatabase
from dual_db.app.settings import AppSettings
from dual_db.db.sql_files import sql_file
from dual_db.schema.statements import statements_of


@dataclass
class TrafficSummary:
    rounds: int = 0
    batch_statements: int = 0
    rag_queries: int = 0
    messages_written: int = 0
    feedback_written: int = 0
    memories_written: int = 0
    seconds: float = 0.0


async def run_traffic_async(
    settings: AppSettings, *, rounds: int = 20, seconds: float = 60.0, seed: int = 1, orphans: int = 0
) -> TrafficSummary:
    """`orphans` of the feedback rows point at messages that do not exist (for tests of the soak's
    orphan check); the application's own bugs would look like that."""
    rng = random.Random(seed)
    database = DualDatabase.from_settings(settings)
    summary = TrafficSummary()
    started = time.monotonic()
    batch = [s.text for s in statements_of(sql_file("workload", "batch.sql").read_text())]
    rag = sql_file("workload", "rag.sql").read_text().replace("$1", ":query")
    try:
        async with database.CoreSessionLocal() as core:
            conversation = (
                await core.execute(text("SELECT id, user_id FROM agent_conversations ORDER BY id LIMIT 1"))
            ).first()
        if conversation is None:
            raise RuntimeError(
                "traffic needs at least one agent_conversations row in core (the demo has them)"
            )
        async with database.AISessionLocal() as ai:
            dims = (
                await ai.execute(
                    text(
                        "SELECT vector_dims(embedding) FROM ai_kb_documents "
                        "WHERE embedding IS NOT NULL LIMIT 1"
                    )
                )
            ).scalar()
        while summary.rounds < rounds and time.monotonic() - started < seconds:
            async with database.CoreSessionLocal() as core:
                for statement in batch:
                    await core.execute(text(statement))
                    summary.batch_statements += 1
                message_id = uuid.uuid4()
                await core.execute(
                    text(
                        "INSERT INTO agent_messages (id, conversation_id, role, content) "
                        "VALUES (:id, :conversation, 'user', :content)"
                    ),
                    {
                        "id": message_id,
                        "conversation": conversation.id,
                        "content": f"traffic round {summary.rounds}",
                    },
                )
                await core.commit()
                summary.messages_written += 1
            async with database.AISessionLocal() as ai:
                if dims:
                    raw = [rng.gauss(0.0, 1.0) for _ in range(int(dims))]
                    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
                    await ai.execute(text(rag), {"query": Vector([x / norm for x in raw])})
                    summary.rag_queries += 1
                target = uuid.uuid4() if summary.feedback_written < orphans else message_id
                await ai.execute(
                    text("INSERT INTO ai_feedback (id, message_id, rating) VALUES (:id, :message, 'up')"),
                    {"id": uuid.uuid4(), "message": target},
                )
                await ai.execute(
                    text(
                        "INSERT INTO ai_memories (id, user_id, scope, content) "
                        "VALUES (:id, :user, 'user', :c)"
                    ),
                    {
                        "id": uuid.uuid4(),
                        "user": conversation.user_id,
                        "c": f"remembered in round {summary.rounds}",
                    },
                )
                await ai.commit()
                summary.feedback_written += 1
                summary.memories_written += 1
            summary.rounds += 1
    finally:
        await database.dispose()
    summary.seconds = time.monotonic() - started
    return summary


def run_traffic(settings: AppSettings, **kwargs: object) -> TrafficSummary:
    return asyncio.run(run_traffic_async(settings, **kwargs))  # type: ignore[arg-type]
