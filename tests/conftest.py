"""Fixtures only (the helpers they use are the kit's, tests/kit/): a real primary started with the
CLI on loopback (alone, or behind the project's fault proxy), the sample print world on it, and a
fresh database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migrations.primary import migrations
from siteserver import sample
from siteserver.faultproxy import FaultProxyProcess
from siteserver.store import Database
from tests.kit.primary import Primary, open_database, start_primary


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[Primary]:
    """A single primary (guard disabled: simply active) on a fresh database."""
    p = start_primary(tmp_path)
    yield p
    p.process.stop()


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Primary, FaultProxyProcess]]:
    """A primary and the fault proxy in front of it (a site configured with the proxy's URL
    reaches the primary only through it)."""
    primary = start_primary(tmp_path)
    proxy = FaultProxyProcess.in_front_of(primary.url).start()
    try:
        yield primary, proxy
    finally:
        proxy.stop()
        primary.process.stop()


@pytest.fixture
def world(primary: Primary) -> sample.World:
    """The sample print world with its default names on `primary`: printers mono-1, color-1 and
    direct-1 at site s1, Find-Me queue findme, devices mfd-1 (at mono-1) and mfd-2 (at color-1),
    provider ps-1; no users."""
    with primary.admin() as c:
        return sample.build(c)


@pytest.fixture
def fresh_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh primary database file with every migration applied (no server)."""
    with open_database(tmp_path / "fresh.db", migrations) as db:
        yield db
