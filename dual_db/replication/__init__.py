"""Catch-up through PostgreSQL's own logical replication (issue 19): the engine's foundation.

Plain Python on psycopg 3, no Dagster. The parts, each usable alone:

- `guards`: what the source and a target must offer before anything is created, one line per refusal
  naming its fix, and a typed record of what was found.
- `names`: every publication, slot and subscription dual-db creates is named `dual_db_<run>_<target>_*`,
  and `is_dual_db_name` is the only test cleanup uses, so a foreign object is never touched.
- `slot`: the publication first, then the slot with an exported snapshot on a `replication=database`
  connection, held idle until the copy has joined it. `start_catch_up` runs the guards, the
  publication and the slot in that order, and leaves nothing behind when one of them fails.
- `subscribe`: the target's subscription on that slot (no slot, no initial copy, binary, streaming),
  and the lag per subscription (bytes behind the slot's `confirmed_flush_lsn`, apply errors).
- `cleanup`: drops what dual-db created, subscriptions on the targets first, then slots and
  publications on the source (`dual-db cleanup-replication`).

Measured here, on the embedded PostgreSQL 18 + pgvector source started with `wal_level=logical`
(dual_db_tests/test_replication.py): the slot's exported snapshot holds exactly the rows committed
before the slot; a table copied at that snapshot and then subscribed receives the inserts and updates
made after the slot, none lost and none applied twice; cleanup drops dual-db's objects and leaves a
foreign slot and publication alone.

Not yet done (next steps of issue 19): wiring into the `migrate` job behind the `catch_up` setting
(one publication and slot per target, each target copied in its own slot's snapshot), lag as asset
metadata, the freeze and drain, the switch and its verification, sequences (PostgreSQL does not
replicate them: set them at the switch from the frozen source), DDL detection during catch-up, the
WAL the copy will hold back at the current write rate, partitioned tables' replica identity (leaf
partitions), and the rollback backup after the switch.
"""
