"""A typed client for the dealflow HTTP API (contract v1)."""

from dealflow_client.client import MAX_BATCH, BatchResult, DealflowClient, RetryPolicy
from dealflow_client.errors import ApiError, WebhookVerificationError
from dealflow_client.types import BatchItem, DealState, FeedEvent, FeedPage, Subscription
from dealflow_client.webhooks import verify_webhook

__all__ = [
    "MAX_BATCH",
    "ApiError",
    "BatchItem",
    "BatchResult",
    "DealState",
    "DealflowClient",
    "FeedEvent",
    "FeedPage",
    "RetryPolicy",
    "Subscription",
    "WebhookVerificationError",
    "verify_webhook",
]
