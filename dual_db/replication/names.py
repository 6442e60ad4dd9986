"""Names of the replication objects dual-db creates, and the one test of whether a name is dual-db's.

A publication, slot or subscription is dual-db's when its name is `dual_db_<run>_<target>_<kind>`:
the prefix, a run token of 1-16 lowercase letters or digits, the target (`core`, `ai`, ...) and the
kind (`pub`, `slot`, `sub`). Cleanup drops only names that pass `is_dual_db_name`; an object a user or
another tool made (even one that merely starts with `dual_db`) is left alone. All parts are lowercase
ASCII, so a slot name (which PostgreSQL restricts to `[a-z0-9_]`) is valid as it is.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX = "dual_db_"
KINDS = ("pub", "slot", "sub")

# Not SQL: a catalog name is compared with dual-db's own naming scheme.
_NAME = re.compile(r"dual_db_([0-9a-z]{1,16})_([a-z][0-9a-z]{0,15})_(pub|slot|sub)")
_TOKEN = re.compile(r"[0-9a-z]{1,16}")
_TARGET = re.compile(r"[a-z][0-9a-z]{0,15}")


class ReplicationNameError(ValueError):
    """A run token or target that cannot be part of a dual-db replication name."""


def new_run_token() -> str:
    """A fresh run token (8 hex characters)."""
    return secrets.token_hex(4)


def run_token(run_id: str) -> str:
    """A token from a Dagster run id (a UUID): its first 12 hex digits, lowercase."""
    token = "".join(ch for ch in run_id.lower() if ch.isascii() and ch.isalnum())[:12]
    if not _TOKEN.fullmatch(token):
        raise ReplicationNameError(f"run id {run_id!r} has no letters or digits to name replication objects")
    return token


@dataclass(frozen=True)
class ReplicationNames:
    """The publication, slot and subscription of one target in one run."""

    token: str
    target: str

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.token):
            raise ReplicationNameError(
                f"run token {self.token!r} must be 1-16 lowercase letters or digits (see run_token)"
            )
        if not _TARGET.fullmatch(self.target):
            raise ReplicationNameError(
                f"target {self.target!r} must be a lowercase letter followed by up to 15 letters or digits"
            )

    def _name(self, kind: str) -> str:
        return f"{PREFIX}{self.token}_{self.target}_{kind}"

    @property
    def publication(self) -> str:
        return self._name("pub")

    @property
    def slot(self) -> str:
        return self._name("slot")

    @property
    def subscription(self) -> str:
        return self._name("sub")


def is_dual_db_name(name: str, kind: str | None = None) -> bool:
    """True when `name` follows dual-db's scheme (and, with `kind`, is of that kind)."""
    match = _NAME.fullmatch(name)
    return match is not None and (kind is None or match.group(3) == kind)
