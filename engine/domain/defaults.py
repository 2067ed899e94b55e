"""The built-in pipelines: classic B2B new business, and post-purchase for won customers."""

from __future__ import annotations

from typing import Any

from engine.domain.pipeline import PipelineDefinition

DEFAULT_PIPELINE_ID = "default"
POST_PURCHASE_PIPELINE_ID = "post-purchase"

DEFAULT_PIPELINE: dict[str, Any] = {
    "name": "New business (B2B)",
    "currency": "USD",
    "qualified_after": "qualification",
    "after_won": POST_PURCHASE_PIPELINE_ID,
    "stages": [
        {
            "id": "prospecting",
            "name": "Prospecting",
            "probability": 0.05,
            "max_days_in_stage": 14,
            "exit_criteria": [{"id": "contact_made", "kind": "fact"}],
        },
        {
            "id": "qualification",
            "name": "Lead qualification",
            "probability": 0.1,
            "max_days_in_stage": 21,
            "exit_criteria": [
                {"id": "need", "kind": "fact", "description": "A real need is confirmed"},
                {"id": "budget", "kind": "fact", "description": "Budget is available"},
                {"id": "authority", "kind": "fact", "description": "We talk to the decision maker"},
                {"id": "timeline", "kind": "fact", "description": "A buying timeline is known"},
            ],
        },
        {
            "id": "meeting",
            "name": "Meeting / demo",
            "probability": 0.25,
            "max_days_in_stage": 21,
            "exit_criteria": [
                {"id": "demo_held", "kind": "activity", "activity": "demo", "min_count": 1}
            ],
        },
        {
            "id": "proposal",
            "name": "Proposal",
            "probability": 0.5,
            "max_days_in_stage": 30,
            "exit_criteria": [
                {"id": "priced", "kind": "field", "field": "amount", "op": "gt", "value": 0},
                {"id": "proposal_sent", "kind": "activity", "activity": "proposal", "min_count": 1},
            ],
        },
        {
            "id": "negotiation",
            "name": "Negotiation and commitment",
            "probability": 0.7,
            "max_days_in_stage": 30,
            "exit_criteria": [{"id": "verbal_commit", "kind": "fact"}],
        },
        {
            "id": "contract",
            "name": "Contract signing",
            "probability": 0.9,
            "max_days_in_stage": 14,
            "exit_criteria": [{"id": "contract_signed", "kind": "fact"}],
        },
    ],
}

POST_PURCHASE_PIPELINE: dict[str, Any] = {
    "name": "Post-purchase (cross-sell and upsell)",
    "currency": "USD",
    "stages": [
        {
            "id": "onboarding",
            "name": "Onboarding",
            "probability": 0.1,
            "max_days_in_stage": 30,
            "exit_criteria": [{"id": "onboarded", "kind": "fact"}],
        },
        {
            "id": "adoption",
            "name": "Adoption review",
            "probability": 0.2,
            "max_days_in_stage": 60,
            "exit_criteria": [
                {"id": "review_held", "kind": "activity", "activity": "meeting", "min_count": 1}
            ],
        },
        {
            "id": "expansion",
            "name": "Cross-sell / upsell proposal",
            "probability": 0.4,
            "max_days_in_stage": 45,
            "exit_criteria": [
                {"id": "priced", "kind": "field", "field": "amount", "op": "gt", "value": 0}
            ],
        },
    ],
}

BUILT_IN_PIPELINES: dict[str, dict[str, Any]] = {
    DEFAULT_PIPELINE_ID: DEFAULT_PIPELINE,
    POST_PURCHASE_PIPELINE_ID: POST_PURCHASE_PIPELINE,
}


def built_in(pipeline_id: str) -> PipelineDefinition:
    return PipelineDefinition.model_validate(BUILT_IN_PIPELINES[pipeline_id])
