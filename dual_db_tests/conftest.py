"""Real PostgreSQL servers for the tests: embedded PostgreSQL 18 (source, core, ai) and 16 on demand.

Servers start once per session; every test gets fresh databases on them, dropped afterwards.
Nothing here is mocked and nothing skips: without a server the session fails loudly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dual_db.db.urls import DatabaseUrl
from dual_db.embedded import EmbeddedCluster, EmbeddedServer

_counter = itertools.count()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("servers"), roles=("source", "core", "ai"))
    cluster.up()
    yield cluster
    cluster.down()


@pytest.fixture(scope="session")
def pg16_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A PostgreSQL 16 server (with pgvector), for cross-version splits."""
    server = EmbeddedServer(name="pg16", root=tmp_path_factory.mktemp("pg16"), version=16)
    server.start()
    yield server
    server.stop()


DatabaseFactory = Callable[[EmbeddedServer], DatabaseUrl]


@pytest.fixture
def new_database() -> Iterator[DatabaseFactory]:
    """`new_database(server)` creates an empty database on `server`, dropped after the test."""
    created: list[tuple[EmbeddedServer, str]] = []

    def make(server: EmbeddedServer) -> DatabaseUrl:
        name = f"t{next(_counter)}_{server.name}"
        server.drop_database(name)
        server.ensure_database(name)
        created.append((server, name))
        return server.url(name)

    yield make
    for server, name in created:
        server.drop_database(name)


@dataclass(frozen=True)
class Databases:
    source: DatabaseUrl
    core: DatabaseUrl
    ai: DatabaseUrl


@pytest.fixture
def databases(servers: EmbeddedCluster, new_database: DatabaseFactory) -> Databases:
    """Fresh, empty source/core/ai databases, each on its own server."""
    return Databases(
        source=new_database(servers["source"]),
        core=new_database(servers["core"]),
        ai=new_database(servers["ai"]),
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path
