"""Builds the services of one dealflow process: the application, tokens, and each area."""

from __future__ import annotations

from engine.application import DealflowApp
from engine.collector import tune_gc
from engine.persistence.settings import StoreSettings
from engine.services import Services
from engine.settings import Settings
from engine.tokens import TokenStore
from projections.runtime import attach as attach_projections
from workflows.runtime import attach as attach_automation


def build_services(
    settings: StoreSettings | None = None,
    *,
    bootstrap_token: str | None = None,
    run_projections: bool = True,
) -> Services:
    """Wire one process. ``run_projections`` decides whether this process also keeps the read
    models up to date (``dealflow serve`` does by default; API replicas in production do not)."""
    tune_gc()
    settings = settings or StoreSettings.from_env()
    app = DealflowApp(settings)
    token = bootstrap_token if bootstrap_token is not None else Settings.load().bootstrap_token
    services = Services(app=app, tokens=TokenStore(app.db, token or None), settings=settings)
    attach_projections(services, run=run_projections)
    attach_automation(services)
    return services
