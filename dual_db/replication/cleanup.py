"""Drop every subscription, slot and publication dual-db created, and nothing else.

Always possible, also after a kill mid-run: the names say what is dual-db's
(`dual_db.replication.names.is_dual_db_name`), no state file is needed. Only the connected database
is cleaned (subscriptions and publications belong to a database, a logical slot names its database).

Order: the targets first. Each of dual-db's subscriptions is disabled (its apply worker stops and the
source's walsender for it ends), detached from its slot (`slot_name = NONE`, so DROP SUBSCRIPTION does
not reach out to the source) and dropped. Then on the source each of dual-db's slots is dropped once it
is inactive; a walsender still serving it after `wait_seconds` (a target that could not be reached) is
ended, since the slot is dual-db's own. Then dual-db's publications.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from dual_db.replication.names import is_dual_db_name

_SUBSCRIPTIONS_SQL = """
SELECT s.subname FROM pg_subscription s
WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1
"""
_SLOTS_SQL = """
SELECT slot_name, active, active_pid FROM pg_replication_slots
WHERE database = current_database() AND slot_type = 'logical' ORDER BY 1
"""
_PUBLICATIONS_SQL = "SELECT pubname FROM pg_publication ORDER BY 1"


class CleanupError(RuntimeError):
    """A dual-db replication object could not be dropped. Names it and what to do."""


@dataclass
class SourceCleanup:
    slots: list[str] = field(default_factory=list)
    publications: list[str] = field(default_factory=list)
    ended_walsenders: list[int] = field(default_factory=list)


def dual_db_subscriptions(target: psycopg.Connection) -> list[str]:
    return [
        str(r[0]) for r in target.execute(_SUBSCRIPTIONS_SQL).fetchall() if is_dual_db_name(str(r[0]), "sub")
    ]


def dual_db_slots(source: psycopg.Connection) -> list[str]:
    return [str(r[0]) for r in source.execute(_SLOTS_SQL).fetchall() if is_dual_db_name(str(r[0]), "slot")]


def dual_db_publications(source: psycopg.Connection) -> list[str]:
    return [
        str(r[0]) for r in source.execute(_PUBLICATIONS_SQL).fetchall() if is_dual_db_name(str(r[0]), "pub")
    ]


def cleanup_target(target: psycopg.Connection) -> list[str]:
    """Drop dual-db's subscriptions in the connected database (autocommit). Returns their names."""
    if not target.autocommit:
        raise ValueError("cleanup_target needs an autocommit connection")
    dropped = []
    for name in dual_db_subscriptions(target):
        ident = sql.Identifier(name)
        try:
            target.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
            target.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
            target.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
        except psycopg.Error as exc:
            raise CleanupError(
                f"cannot drop subscription {name}: {exc.diag.message_primary or type(exc).__name__}; "
                "connect as its owner or a superuser"
            ) from None
        dropped.append(name)
    return dropped


def cleanup_source(source: psycopg.Connection, *, wait_seconds: float = 10.0) -> SourceCleanup:
    """Drop dual-db's slots, then its publications, in the connected database (autocommit)."""
    if not source.autocommit:
        raise ValueError("cleanup_source needs an autocommit connection")
    done = SourceCleanup()
    deadline = time.monotonic() + wait_seconds
    while True:
        rows = [r for r in source.execute(_SLOTS_SQL).fetchall() if is_dual_db_name(str(r[0]), "slot")]
        if not rows:
            break
        for name, active, pid in rows:
            if active and time.monotonic() >= deadline and pid is not None:
                # Still streaming to a subscription that cleanup could not reach: it is dual-db's slot.
                source.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
                done.ended_walsenders.append(int(pid))
                continue
            if active:
                continue
            try:
                source.execute("SELECT pg_drop_replication_slot(%s)", (name,))
            except psycopg.errors.ObjectInUse:
                continue  # became active again (a subscription reconnected): the next round
            except psycopg.errors.UndefinedObject:
                pass  # dropped meanwhile
            except psycopg.Error as exc:
                raise CleanupError(
                    f"cannot drop replication slot {name}: {exc.diag.message_primary or type(exc).__name__}"
                ) from None
            done.slots.append(str(name))
        if time.monotonic() > deadline + 10:
            left = ", ".join(str(r[0]) for r in rows)
            raise CleanupError(f"replication slot(s) {left} stay active: drop their subscriptions first")
        time.sleep(0.1)
    for name in dual_db_publications(source):
        source.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
        done.publications.append(name)
    return done
