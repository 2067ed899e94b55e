"""Plugs automation into a process: the outbox and bridge tables, and what the routes need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.application import DealflowApp
from workflows.bridge_state import create_tables as create_bridge_tables
from workflows.channels import Channels
from workflows.outbox import Outbox
from workflows.subscriptions import SubscriptionStore


@dataclass
class Automation:
    app: DealflowApp
    outbox: Outbox
    channels: Channels

    def close(self) -> None:
        return None


def attach(services: Any) -> None:
    """Give the API what automation routes need (``services.automation``)."""
    app: DealflowApp = services.app
    outbox = Outbox(app.db)
    outbox.create_tables()
    create_bridge_tables(app)
    SubscriptionStore(app.db).create_tables()
    services.automation = Automation(app=app, outbox=outbox, channels=Channels.from_env())
