"""Errors as the user sees them: one line saying what is wrong and how to fix it, the trace below.

A guard or connection error raised inside an asset reaches the user wrapped by Dagster in
`DagsterExecutionStepExecutionError` and a 70 to 300 line trace, with the one useful sentence in the
middle. `clear_failure()` turns dual-db's own errors (whose messages already say what to do) into a
`dg.Failure` whose description is that sentence, on one line: `dagster job execute` prints it right
under "Execution of step ... failed.", the UI shows it as the step's failure, and the original
exception stays attached below as the cause.

    with clear_failure(context):
        preflight(...)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from dual_db.copy.engine import CopyError
from dual_db.db.connect import DatabaseUnreachable
from dual_db.db.env import URL_VARIABLES, EnvironmentConflict, MissingVariable, mask_value
from dual_db.db.snapshot import SnapshotLost
from dual_db.db.urls import DatabaseUrlError
from dual_db.preflight import GuardError
from dual_db.routing import RoutingPlanError
from dual_db.schema.apply import SchemaApplyError
from dual_db.schema.dump import PgToolError
from dual_db.schema.ownership import OwnershipError
from dual_db.schema.split import SchemaSplitError
from dual_db.tune.apply import TuningError

# Errors whose message tells the user what is wrong. Anything else is a bug and keeps Dagster's trace.
USER_ERRORS: tuple[type[Exception], ...] = (
    GuardError,
    DatabaseUrlError,
    DatabaseUnreachable,
    EnvironmentConflict,
    MissingVariable,
    RoutingPlanError,
    PgToolError,
    SchemaSplitError,
    SchemaApplyError,
    CopyError,
    OwnershipError,
    SnapshotLost,
    TuningError,
)

# Long enough for any guard's message; a longer one (SQL in it) is cut, the whole text is in metadata.
MAX_DESCRIPTION = 600


def one_line(exc: BaseException) -> str:
    """`exc`'s message on one line, with how to fix it where dual-db can tell."""
    text = re.sub(r"\s+", " ", str(exc)).strip() or type(exc).__name__
    if isinstance(exc, DatabaseUnreachable):
        names = _variables_holding(text)
        where = " or ".join(names) if names else "the database URL"
        text += (
            f". Check that the server is running and that {where} has the right host, port, user and password"
        )
    if len(text) > MAX_DESCRIPTION:
        text = text[: MAX_DESCRIPTION - 1] + "…"
    return text


def _variables_holding(message: str) -> list[str]:
    """dual-db's URL variables whose masked value the message names."""
    names = []
    for name in URL_VARIABLES:
        value = os.environ.get(name)
        if value and mask_value(name, value) in message:
            names.append(name)
    return names


def failure_from(exc: BaseException) -> dg.Failure:
    return dg.Failure(
        description=one_line(exc),
        metadata={"error": dg.MetadataValue.text(f"{type(exc).__name__}: {exc}")},
        allow_retries=False,
    )


@contextmanager
def clear_failure(
    context: dg.AssetExecutionContext | dg.OpExecutionContext | dg.AssetCheckExecutionContext | None = None,
) -> Iterator[None]:
    """Re-raise dual-db's user errors as a `dg.Failure` with a one-line description.

    With `context`, the line is also logged as an ERROR, so that it is the first thing of the
    failure in `dagster job execute`'s output and in the run's log.
    """
    try:
        yield
    except USER_ERRORS as exc:
        failure = failure_from(exc)
        if context is not None:
            context.log.error(failure.description)
        raise failure from exc
