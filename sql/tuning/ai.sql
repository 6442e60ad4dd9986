-- AI database (vectors): the migration plan's post-migration tuning, applied by the `ai/tuning` asset
-- (materialized on purpose, never by `migrate`). ALTER SYSTEM changes the whole server the AI
-- database lives on, not just that database.
--
-- shared_buffers is read only when the server starts: after this file it is reported
-- "pending restart" until someone restarts the server. The plan's `SELECT pg_reload_conf()` is not
-- here: the asset reloads the configuration itself, once, after every statement.

ALTER SYSTEM SET shared_buffers = '512MB';
ALTER SYSTEM SET work_mem = '256MB';
ALTER SYSTEM SET effective_cache_size = '1GB';
ALTER SYSTEM SET maintenance_work_mem = '256MB';

-- Not in the plan, which sets it for core only. PostgreSQL's seq-scan cost counts the heap's pages, not
-- the TOASTed embeddings the distance reads: at the default 4, the RAG query over the demo's 3000
-- documents is a sequential scan reading ~21,000 buffers (66 ms) where the HNSW index reads ~580
-- (0.8 ms). At 1.1 (the core's value: the same SSDs) the planner takes the index.
ALTER SYSTEM SET random_page_cost = 1.1;

-- pgvector: the plan's `SET hnsw.ef_search = 100` would last only as long as the session that ran
-- it. Set for the database instead, every new session of the application gets it.
-- `target_database` stands for the database the asset tunes (the AI database of the run).
ALTER DATABASE target_database SET hnsw.ef_search = 100;
