"""Shared fixtures: real stores (a fresh SQLite file, a fresh PostgreSQL database) and the API.

PostgreSQL comes from DEALFLOW_TEST_DATABASE_URL (default: the local server, trust auth);
each test that asks for it gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from engine.application import DealflowApp
from engine.persistence.settings import StoreSettings

ADMIN_URL = os.environ.get(
    "DEALFLOW_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_TOKEN = "test-bootstrap-token"
# The projection process's score refresher works on its own clock; tests that rank by score
# bring the kept parts up to date themselves (or turn it on, as test_score_ranking does).
os.environ["DEALFLOW_SCORE_REFRESH"] = "0"
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture
def pg_url(postgres_available: bool) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    if not postgres_available:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not answering at {ADMIN_URL}")
        pytest.skip("PostgreSQL is not answering")
    with fresh_database() as url:
        yield url


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped when the block ends."""
    name = f"dealflow_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> StoreSettings:
    return StoreSettings(database_url=None, home=tmp_path / "home")


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSettings:
    """Run the test once on each backend."""
    if request.param == "sqlite":
        return StoreSettings(database_url=None, home=tmp_path / "home")
    return StoreSettings(database_url=request.getfixturevalue("pg_url"), home=tmp_path / "home")


@pytest.fixture
def app(store_settings: StoreSettings) -> Iterator[DealflowApp]:
    application = DealflowApp(store_settings)
    try:
        yield application
    finally:
        application.close()
