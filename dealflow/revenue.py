"""Wiring for issue 12's scheduled work: the worker gets the review digest from the read
models (projections/) and the list of pipelines to keep schedules for, which workflows/ may
not import itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def review_source(
    app: Any, pipeline_id: str, since: datetime, until: datetime
) -> tuple[dict[str, Any], str, str]:
    from projections.queries.review import review
    from projections.review_render import to_html, to_text

    # The read models as the projections process keeps them (a few moments behind at most).
    digest = review(app, pipeline_id, since, until, historical=False)
    return digest, to_text(digest), to_html(digest)


def schedule_pipelines(app: Any) -> list[tuple[str, str]]:
    """Every pipeline with deals (as the read models know them), with its review cron."""
    from engine.domain.pipeline import Review
    from projections.readmodel.schema import PIPELINES_TABLE

    try:
        rows = app.db.fetchall(f"SELECT pipeline_id FROM {PIPELINES_TABLE} ORDER BY pipeline_id")
    except Exception:  # noqa: BLE001 - no read models yet: no pipeline to review
        return []
    found: list[tuple[str, str]] = []
    for pipeline_id in (row["pipeline_id"] for row in rows):
        definition = app.pipeline_ref(pipeline_id).definition
        found.append((pipeline_id, (definition.review or Review()).cron))
    return found


def revenue_hooks(app: Any) -> dict[str, Any]:
    """The AutomationProcess arguments that plug this in."""
    return {"review_source": review_source, "schedule_pipelines": lambda: schedule_pipelines(app)}
