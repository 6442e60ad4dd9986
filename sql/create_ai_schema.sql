-- The AI tables as the migration plan (Phase 4.2, scripts/database/create_ai_schema.sql) defines them.
--
-- dual-db does NOT run this file against the AI database: the AI schema is generated from the source
-- database's own pg_dump by dual_db.schema.split_schema, so it matches what production really has
-- (extra columns, indexes, triggers, comments) rather than what the plan assumed. This file is the
-- reference definition, and the tests load it into a source database to exercise the split.
-- The plan's trailing "verify" SELECTs are left out: a schema file should only create things.

CREATE EXTENSION IF NOT EXISTS vector;

-- ai_kb_documents: RAG knowledge base with embeddings
CREATE TABLE IF NOT EXISTS ai_kb_documents (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    scope VARCHAR(100) NOT NULL,
    title VARCHAR(500) NOT NULL,
    content TEXT NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    embedding vector(1536),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS ix_ai_kb_documents_scope
ON ai_kb_documents(scope);

-- HNSW index for vector similarity
CREATE INDEX IF NOT EXISTS ix_ai_kb_documents_embedding_hnsw
ON ai_kb_documents USING hnsw (embedding vector_cosine_ops)
WITH (m = 16, ef_construction = 64);

-- ai_memories: Persistent rules and preferences
CREATE TABLE IF NOT EXISTS ai_memories (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID,  -- Soft reference to users table in core DB
    tenant_id UUID,
    scope VARCHAR(20) NOT NULL,
    content TEXT NOT NULL,
    tags JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS ix_ai_memories_scope ON ai_memories(scope);
CREATE INDEX IF NOT EXISTS ix_ai_memories_user_id ON ai_memories(user_id);
CREATE INDEX IF NOT EXISTS ix_ai_memories_tenant_id ON ai_memories(tenant_id);

-- ai_feedback: User feedback on AI responses
CREATE TABLE IF NOT EXISTS ai_feedback (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    message_id UUID NOT NULL,  -- Soft reference to agent_messages in core DB
    rating VARCHAR(10) NOT NULL,
    edited_text TEXT,
    comment TEXT,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS ix_ai_feedback_message_id ON ai_feedback(message_id);
CREATE INDEX IF NOT EXISTS ix_ai_feedback_rating ON ai_feedback(rating);
