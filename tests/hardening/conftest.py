"""Fixtures of the hardening suite: the whole app in-process, on a fresh store, with a bootstrap token."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dealflow.http import create_app
from engine.persistence.settings import StoreSettings
from engine.services import Services
from tests.conftest import AUTH, TEST_TOKEN
from tests.helpers import api_services

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

__all__ = ["AUTH", "TEST_TOKEN", "live_client"]


@contextmanager
def live_client(
    settings: StoreSettings, *, raise_server_exceptions: bool = False, **app_kwargs: Any
) -> Iterator[tuple[TestClient, Services]]:
    """The real app (all areas' routers) over ``settings``; a 500 comes back as a response."""
    with (
        api_services(settings) as services,
        TestClient(
            create_app(services, **app_kwargs), raise_server_exceptions=raise_server_exceptions
        ) as client,
    ):
        yield client, services


@pytest.fixture
def sqlite_client(sqlite_settings: StoreSettings) -> Iterator[tuple[TestClient, Services]]:
    with live_client(sqlite_settings) as pair:
        yield pair
