"""Issue 12, item 1: the new criterion operators (in, not_in, gte/lte/between on numbers and
dates, exists) and the pipeline's qualification rule, driven through the Deal's commands."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from engine.domain.errors import ExitCriteriaUnmet
from engine.domain.pipeline import PipelineDefinition, criterion_holds
from tests.unit.domain_builders import Clock, one_stage, open_deal, pipeline


def _holds(criterion: dict[str, Any], **deal_fields: Any) -> bool:
    ref = pipeline(one_stage([{"id": "c", "kind": "field", **criterion}]))
    deal = open_deal(ref, Clock(), **deal_fields)
    return criterion_holds(ref.definition.stages[0].exit_criteria[0], deal)


@pytest.mark.parametrize(
    ("criterion", "fields", "expected"),
    [
        ({"field": "country", "op": "in", "value": ["DE", "FR", "NL"]}, {"country": "FR"}, True),
        ({"field": "country", "op": "in", "value": ["DE", "FR", "NL"]}, {"country": "US"}, False),
        ({"field": "country", "op": "in", "value": ["DE"]}, {}, False),
        ({"field": "country", "op": "not_in", "value": ["DE", "FR"]}, {"country": "US"}, True),
        ({"field": "country", "op": "not_in", "value": ["DE", "FR"]}, {"country": "DE"}, False),
        # An unknown value is not shown to be outside the list.
        ({"field": "country", "op": "not_in", "value": ["DE"]}, {}, False),
        (
            {"field": "industry", "op": "in", "value": ["software", "medical"]},
            {"industry": "medical"},
            True,
        ),
        ({"field": "amount", "op": "in", "value": [100, 200]}, {"amount": Decimal("200.00")}, True),
        ({"field": "amount", "op": "gte", "value": 10000}, {"amount": Decimal("10000")}, True),
        ({"field": "amount", "op": "gte", "value": 10000}, {"amount": Decimal("9999.99")}, False),
        ({"field": "amount", "op": "between", "value": [10, 20]}, {"amount": Decimal("10")}, True),
        ({"field": "amount", "op": "between", "value": [10, 20]}, {"amount": Decimal("20")}, True),
        (
            {"field": "amount", "op": "between", "value": [10, 20]},
            {"amount": Decimal("20.000001")},
            False,
        ),
        ({"field": "amount", "op": "between", "value": [10, 20]}, {}, False),
        (
            {"field": "expected_close", "op": "lte", "value": "2017-06-30"},
            {"expected_close": date(2017, 6, 30)},
            True,
        ),
        (
            {"field": "expected_close_date", "op": "lte", "value": "2017-06-30"},
            {"expected_close": date(2017, 7, 1)},
            False,
        ),
        (
            {
                "field": "expected_close_date",
                "op": "between",
                "value": ["2017-01-01", "2017-03-31"],
            },
            {"expected_close": date(2017, 3, 31)},
            True,
        ),
        (
            {
                "field": "expected_close_date",
                "op": "between",
                "value": ["2017-01-01", "2017-03-31"],
            },
            {"expected_close": date(2016, 12, 31)},
            False,
        ),
        ({"field": "country", "op": "exists"}, {"country": "DE"}, True),
        ({"field": "country", "op": "exists"}, {}, False),
        (
            {"field": "attributes.tier", "op": "in", "value": ["gold"]},
            {"attributes": {"tier": "gold"}},
            True,
        ),
    ],
)
def test_operators(criterion: dict[str, Any], fields: dict[str, Any], expected: bool) -> None:
    assert _holds(criterion, **fields) is expected


@pytest.mark.parametrize(
    ("criterion", "message"),
    [
        ({"op": "in", "value": []}, "non-empty list"),
        ({"op": "in", "value": "DE"}, "non-empty list"),
        ({"op": "between", "value": [1]}, "two values"),
        ({"op": "between", "value": [20, 10]}, "low <= high"),
        ({"op": "between", "value": [1, "x"]}, "low <= high"),
        ({"op": "exists", "value": 1}, "takes no value"),
        ({"op": "gte", "value": [1, 2]}, "not a list"),
    ],
)
def test_bad_operator_values_are_refused(criterion: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        pipeline(one_stage([{"id": "c", "kind": "field", "field": "amount", **criterion}]))


QUALIFIED_PIPELINE = {
    "name": "EU software",
    "stages": [
        {"id": "lead", "name": "Lead", "probability": 0.1},
        {"id": "won-soon", "name": "Closing", "probability": 0.8},
    ],
    "qualification": [
        {"id": "eu", "kind": "field", "field": "country", "op": "in", "value": ["DE", "FR", "NL"]},
        {"id": "big", "kind": "field", "field": "amount", "op": "gte", "value": 10000},
    ],
}


def test_an_unqualified_deal_is_recorded_but_cannot_leave_until_an_update_makes_it_pass() -> None:
    ref = pipeline(QUALIFIED_PIPELINE)
    clock = Clock()
    deal = open_deal(ref, clock, country="US", amount=Decimal("500"))
    assert deal.version == 1
    assert deal.unqualified
    assert deal.qualification == {"qualified": False, "unmet": ["eu", "big"]}

    with pytest.raises(ExitCriteriaUnmet) as refused:
        deal.change_stage(clock.meta(), ref, to_stage="won-soon")
    assert refused.value.unmet == [
        {"rule": "qualification", "criterion": "eu"},
        {"rule": "qualification", "criterion": "big"},
    ]
    assert "qualification.eu" in refused.value.message
    with pytest.raises(ExitCriteriaUnmet):
        deal.win(clock.meta(), ref)
    assert deal.version == 1 and deal.stage == "lead"

    deal.update(clock.meta(), 1, {"country": "DE"}, ref.definition)
    assert deal.qualification == {"qualified": False, "unmet": ["big"]}
    deal.update(clock.meta(), 1, {"amount": Decimal("10000")}, ref.definition)
    assert not deal.unqualified
    deal.change_stage(clock.meta(), ref, to_stage="won-soon")
    assert deal.stage == "won-soon"


def test_a_qualified_deal_and_a_pipeline_without_a_rule() -> None:
    ref = pipeline(QUALIFIED_PIPELINE)
    deal = open_deal(ref, Clock(), country="NL", amount=Decimal("20000"))
    assert deal.qualification == {"qualified": True, "unmet": []}
    plain = open_deal(pipeline(one_stage([])), Clock())
    assert plain.qualification is None and not plain.unqualified
    # The Opened event of a deal without the new fields hashes as it did before them.
    assert not {"qualification", "country"} & set(plain.pending[0].data())
    with_country = open_deal(pipeline(one_stage([])), Clock(), country="US")
    assert with_country.pending[0].data()["country"] == "US"


def test_qualification_criteria_ids_are_unique() -> None:
    body = dict(QUALIFIED_PIPELINE)
    body["qualification"] = [QUALIFIED_PIPELINE["qualification"][0]] * 2  # type: ignore[index]
    with pytest.raises(ValidationError, match="duplicate qualification"):
        PipelineDefinition.model_validate(body)
