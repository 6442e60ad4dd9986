-- Core database (OLTP): the migration plan's post-migration tuning, applied by the `core/tuning` asset
-- (materialized on purpose, never by `migrate`). ALTER SYSTEM changes the whole server the core
-- database lives on, not just that database.
--
-- shared_buffers is read only when the server starts: after this file it is reported
-- "pending restart" until someone restarts the server. The plan's `SELECT pg_reload_conf()` is not
-- here: the asset reloads the configuration itself, once, after every statement.

ALTER SYSTEM SET shared_buffers = '256MB';
ALTER SYSTEM SET work_mem = '64MB';
ALTER SYSTEM SET effective_cache_size = '768MB';
ALTER SYSTEM SET random_page_cost = 1.1;
ALTER SYSTEM SET max_parallel_workers_per_gather = 2;
