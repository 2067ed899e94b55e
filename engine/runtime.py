"""The composition root: builds the application and everything around it for one process.

Each area plugs itself in through an ``attach(services)`` function so that ``engine`` stays
free of imports from ``projections`` and ``workflows`` everywhere but here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from engine.application import DealflowApp
from engine.persistence.settings import StoreSettings
from engine.tokens import TokenStore


@dataclass
class Services:
    app: DealflowApp
    tokens: TokenStore
    settings: StoreSettings
    # Filled in by projections.runtime.attach(): start(), stop(), status(), wait(position, timeout).
    projections: Any = None
    # Filled in by workflows.runtime.attach(): whatever the automation routes need.
    automation: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        if self.projections is not None:
            self.projections.stop()
        if self.automation is not None and hasattr(self.automation, "close"):
            self.automation.close()
        self.app.close()


def build_services(
    settings: StoreSettings | None = None,
    *,
    bootstrap_token: str | None = None,
    run_projections: bool = True,
) -> Services:
    """Wire one process. ``run_projections`` decides whether this process also keeps the read
    models up to date (``dealflow serve`` does by default; API replicas in production do not)."""
    settings = settings or StoreSettings.from_env()
    app = DealflowApp(settings)
    token = (
        bootstrap_token
        if bootstrap_token is not None
        else os.environ.get("DEALFLOW_BOOTSTRAP_TOKEN")
    )
    services = Services(app=app, tokens=TokenStore(app.db, token or None), settings=settings)

    from projections.runtime import attach as attach_projections
    from workflows.runtime import attach as attach_automation

    attach_projections(services, run=run_projections)
    attach_automation(services)
    return services
