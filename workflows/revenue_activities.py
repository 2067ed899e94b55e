"""The activities behind workflows.revenue: retrain a scoring model, send a pipeline review.

The review's content comes from the read models, which workflows/ may not import: the
composition root hands a ``review_source`` in (dealflow.revenue), which returns the digest with
its text and HTML renderings.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from engine.application import DealflowApp
from engine.domain.events import iso
from engine.domain.pipeline import Review
from engine.scoring.service import train
from workflows.channels import Channels, deliver
from workflows.models import RetrainInput, ReviewResult, ReviewRun
from workflows.outbox import Message, Outbox

# (app, pipeline id, since, until) -> (digest, text, html)
ReviewSource = Callable[[Any, str, datetime, datetime], tuple[dict[str, Any], str, str]]
REVIEW = "review"
FIRST_PERIOD = timedelta(days=7)  # what the first review of a pipeline looks back on


def review_message_id(pipeline_id: str, until: datetime) -> str:
    return f"review:{pipeline_id}:{iso(until)}"


def review_key(pipeline_id: str) -> str:
    """The outbox's ``deal_id`` of a pipeline's reviews (they concern no single deal)."""
    return f"pipeline:{pipeline_id}"


def last_review_end(outbox: Outbox, pipeline_id: str, before: datetime) -> datetime | None:
    """When the previous review's period ended (from its message id), if there was one."""
    ends = []
    for message in outbox.list(deal_id=review_key(pipeline_id), kind=REVIEW, limit=5000):
        end = datetime.fromisoformat(_end_of(message["id"]))
        if end < before:
            ends.append(end)
    return max(ends, default=None)


def _end_of(message_id: str) -> str:
    # "review:<pipeline>:<iso time>": the time itself holds colons, the pipeline id does not.
    return message_id.split(":", 2)[2].replace("Z", "+00:00")


class RevenueActivities:
    def __init__(
        self,
        app: DealflowApp,
        outbox: Outbox,
        channels: Channels,
        review_source: ReviewSource | None = None,
    ) -> None:
        self.app = app
        self.outbox = outbox
        self.channels = channels
        self.review_source = review_source

    @activity.defn(name="train_scoring")
    def train_scoring(self, job: RetrainInput) -> dict[str, Any]:
        return train(self.app, job.pipeline_id)

    @activity.defn(name="send_review")
    def send_review(self, run: ReviewRun) -> ReviewResult:
        if self.review_source is None:
            raise ApplicationError(
                "this worker has no review source", type="NoReviewSource", non_retryable=True
            )
        definition = self.app.pipeline_ref(run.pipeline_id).definition
        config = definition.review or Review()
        since = last_review_end(self.outbox, run.pipeline_id, run.until) or (
            run.until - FIRST_PERIOD
        )
        digest, text, html = self.review_source(self.app, run.pipeline_id, since, run.until)
        title = text.splitlines()[0]
        message = Message(
            id=review_message_id(run.pipeline_id, run.until),
            deal_id=review_key(run.pipeline_id),
            kind=REVIEW,
            channel=config.channel,
            to=config.to,
            subject=title,
            body=text,
            html=html,
        )
        entry = deliver(self.outbox, self.channels, message)
        return ReviewResult(
            message_id=message.id, since=since, until=run.until, delivery=entry.delivery
        )

    def all(self) -> list[Any]:
        return [self.train_scoring, self.send_review]
