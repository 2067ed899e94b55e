"""Pipeline definitions: the contract's shape, and clear errors for bad definitions."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from engine.domain.defaults import BUILT_IN_PIPELINES, DEFAULT_PIPELINE, built_in
from engine.domain.pipeline import PipelineDefinition

CONTRACT_EXAMPLE: dict[str, Any] = {
    "name": "New business",
    "currency": "USD",
    "qualified_after": "qualification",
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
            "exit_criteria": [
                {"id": "need", "kind": "fact"},
                {"id": "budget", "kind": "fact"},
                {"id": "authority", "kind": "fact"},
                {"id": "timeline", "kind": "fact"},
            ],
        },
        {
            "id": "proposal",
            "name": "Proposal",
            "probability": 0.5,
            "exit_criteria": [
                {"id": "priced", "kind": "field", "field": "amount", "op": "gt", "value": 0},
                {"id": "proposal_sent", "kind": "activity", "activity": "proposal", "min_count": 1},
            ],
        },
    ],
}


def _invalid(mutate: Any) -> str:
    body = copy.deepcopy(CONTRACT_EXAMPLE)
    mutate(body)
    with pytest.raises(ValidationError) as error:
        PipelineDefinition.model_validate(body)
    return str(error.value)


def test_contract_example_is_valid() -> None:
    definition = PipelineDefinition.model_validate(CONTRACT_EXAMPLE)
    assert definition.stage_ids == ["prospecting", "qualification", "proposal"]
    assert definition.qualified_stage == "qualification"
    assert definition.stages[0].max_days_in_stage == 14


def test_fractional_max_days_and_default_qualified_after() -> None:
    body = copy.deepcopy(CONTRACT_EXAMPLE)
    del body["qualified_after"]
    body["stages"][0]["max_days_in_stage"] = 0.5
    definition = PipelineDefinition.model_validate(body)
    assert definition.qualified_stage == "prospecting"
    assert definition.stages[0].max_days_in_stage == 0.5


def test_duplicate_stage_ids() -> None:
    message = _invalid(lambda b: b["stages"].append(dict(b["stages"][0])))
    assert "duplicate stage ids: prospecting" in message


@pytest.mark.parametrize("probability", [-0.01, 1.01, 2, "high"])
def test_probability_outside_zero_one(probability: Any) -> None:
    message = _invalid(lambda b: b["stages"][1].__setitem__("probability", probability))
    assert "probability" in message


@pytest.mark.parametrize("probability", [0, 1, 0.999])
def test_probability_bounds_inclusive(probability: float) -> None:
    body = copy.deepcopy(CONTRACT_EXAMPLE)
    body["stages"][1]["probability"] = probability
    PipelineDefinition.model_validate(body)


def test_unknown_criterion_kind() -> None:
    message = _invalid(
        lambda b: b["stages"][0]["exit_criteria"].append({"id": "x", "kind": "vibe"})
    )
    assert "vibe" in message or "kind" in message


def test_unknown_criterion_field() -> None:
    message = _invalid(
        lambda b: b["stages"][2]["exit_criteria"].append(
            {"id": "x", "kind": "field", "field": "colour", "op": "eq", "value": "red"}
        )
    )
    assert "unknown deal field 'colour'" in message


@pytest.mark.parametrize(
    "where",
    [
        lambda b: b.__setitem__("owner", "me"),
        lambda b: b["stages"][0].__setitem__("colour", "red"),
        lambda b: b["stages"][0]["exit_criteria"][0].__setitem__("weight", 2),
    ],
)
def test_unknown_keys_anywhere(where: Any) -> None:
    assert "Extra inputs are not permitted" in _invalid(where)


def test_qualified_after_unknown_stage() -> None:
    assert "qualified_after 'closing' is not a stage" in _invalid(
        lambda b: b.__setitem__("qualified_after", "closing")
    )


@pytest.mark.parametrize(
    "criterion",
    [
        {"id": "x", "kind": "field", "field": "amount", "op": "set", "value": 1},
        {"id": "x", "kind": "field", "field": "amount", "op": "gt"},
        {"id": "x", "kind": "field", "field": "amount", "op": "gt", "value": True},
        {"id": "x", "kind": "field", "field": "amount", "op": "between", "value": 1},
        {"id": "x", "kind": "activity", "activity": "call", "min_count": 0},
        {"id": "Bad Id", "kind": "fact"},
    ],
)
def test_bad_criteria(criterion: dict[str, Any]) -> None:
    _invalid(lambda b: b["stages"][0]["exit_criteria"].append(criterion))


def test_duplicate_criterion_ids_in_a_stage() -> None:
    assert "duplicate exit criterion id" in _invalid(
        lambda b: b["stages"][1]["exit_criteria"].append({"id": "need", "kind": "fact"})
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.__setitem__("stages", []),
        lambda b: b["stages"][0].__setitem__("id", "Prospecting!"),
        lambda b: b["stages"][0].__setitem__("max_days_in_stage", 0),
        lambda b: b.__setitem__("currency", "usd"),
        lambda b: b.__setitem__("name", ""),
    ],
)
def test_other_invalid_shapes(mutate: Any) -> None:
    _invalid(mutate)


def test_built_in_pipelines() -> None:
    default = built_in("default")
    assert default.stage_ids == [
        "prospecting",
        "qualification",
        "meeting",
        "proposal",
        "negotiation",
        "contract",
    ]
    assert [c.id for c in default.stage("qualification").exit_criteria] == [
        "need",
        "budget",
        "authority",
        "timeline",
    ]
    assert default.after_won == "post-purchase"
    assert set(BUILT_IN_PIPELINES) == {"default", "post-purchase"}
    assert DEFAULT_PIPELINE["qualified_after"] == "qualification"
