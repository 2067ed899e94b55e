"""What one dealflow process holds: the application, the tokens and each area's service.

``engine`` only defines the container; :mod:`dealflow.runtime` (the composition root) fills it,
so the lowest layer never imports the areas above it. The read side and automation are typed
``Any`` here for the same reason: ``projections`` and ``workflows`` plug in objects of their own.
"""

from __future__ import annotations

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
    # projections.runtime.ProjectionsService: start(), stop(), status(), wait(position, timeout).
    projections: Any = None
    # workflows.runtime.Automation: the outbox and channels the automation routes need.
    automation: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        if self.projections is not None:
            self.projections.stop()
        if self.automation is not None and hasattr(self.automation, "close"):
            self.automation.close()
        self.app.close()
