"""`make bench`: dual-db's `migrate` timed against the tools people use instead, on the same servers.

The harness lives beside the project, not inside its engines: it may import `dual_db.embedded` (to run
its own servers) and the demo builder and schema split (to prepare sources and schema files before any
clock starts), but it judges every contender, dual-db included, with its own SQL (`bench.verifier`).

Layout: `servers` (three embedded PostgreSQL 18 + pgvector servers and a Dagster instance server under
`.dual_db/bench/`), `sources` (demo sources cached by scale and seed), `contenders` (the shell scripts
timed), `procs` (peak RSS of a process tree), `verifier` (the independent verification), `run` (the
driver: `python -m bench.run`), `report` (JSON and Markdown under `bench/results/`).
"""
