"""The verification engine: every check returns a `CheckOutcome` (`outcome.py`) that the Dagster
layer maps 1:1 to an asset check result; `checks.py` gathers them.

Rules that hold for every function here:
- The source is only read (plain SELECTs: it runs as a role with SELECT privileges only, on a
  read-only session). Temporary tables are created on targets only (`soft_references`, and
  `schema_parity` to re-parse a differing source definition, in a transaction it rolls back).
- Every identifier is composed with `psycopg.sql`; catalog SQL is module-level constants.
- A check never raises for a finding: a missing table, column or sequence is a failure in the outcome.
  Queries that may fail on a target run inside a savepoint, so the caller's transaction survives.
"""
