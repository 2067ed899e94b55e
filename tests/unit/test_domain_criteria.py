"""Every exit-criterion kind, evaluated against a real Deal (fact, field with every op, activity)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from engine.domain.errors import ExitCriteriaUnmet
from engine.domain.pipeline import criterion_holds, evaluate_criteria
from tests.unit.domain_builders import Clock, one_stage, open_deal, pipeline


def _holds(criterion: dict[str, Any], **deal_fields: Any) -> bool:
    ref = pipeline(one_stage([{"id": "c", **criterion}]))
    deal = open_deal(ref, Clock(), **deal_fields)
    return criterion_holds(ref.definition.stages[0].exit_criteria[0], deal)


# -- fact ---------------------------------------------------------------------------------------


def test_fact_criterion_needs_the_fact_recorded_true() -> None:
    ref = pipeline(one_stage([{"id": "need", "kind": "fact"}]))
    clock = Clock()
    deal = open_deal(ref, clock)
    crit = ref.definition.stages[0].exit_criteria[0]
    assert not criterion_holds(crit, deal)
    deal.record_fact(clock.meta(), 1, fact="other", value=True)
    assert not criterion_holds(crit, deal)
    deal.record_fact(clock.meta(), 1, fact="need", value=False)
    assert not criterion_holds(crit, deal)
    deal.record_fact(clock.meta(), 1, fact="need", value=True)
    assert criterion_holds(crit, deal)
    # Recording it false again withdraws it.
    deal.record_fact(clock.meta(), 1, fact="need", value=False)
    assert not criterion_holds(crit, deal)


# -- field: amount with each op ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "amount", "expected"),
    [
        ("set", None, None, False),
        ("set", None, Decimal("0"), True),
        ("set", None, Decimal("10"), True),
        ("eq", 100, Decimal("100.00"), True),
        ("eq", "100", Decimal("100"), True),
        ("eq", 100, Decimal("100.01"), False),
        ("gt", 0, Decimal("0"), False),
        ("gt", 0, Decimal("0.000001"), True),
        ("gte", 1000, Decimal("1000"), True),
        ("gte", 1000, Decimal("999.999999"), False),
        ("lt", "50.5", Decimal("50.49"), True),
        ("lt", "50.5", Decimal("50.5"), False),
        ("lte", 50, Decimal("50"), True),
        ("lte", 50, Decimal("50.000001"), False),
        ("gt", 0, None, False),
        ("lte", 50, None, False),
    ],
)
def test_field_criterion_on_amount(
    op: str, value: Any, amount: Decimal | None, expected: bool
) -> None:
    criterion = {"kind": "field", "field": "amount", "op": op}
    if value is not None:
        criterion["value"] = value
    assert _holds(criterion, amount=amount) is expected


def test_field_criterion_amount_compares_exactly_not_as_float() -> None:
    # 0.1 + 0.2 != 0.3 in floats; amounts are Decimals, so an exact eq holds.
    assert _holds(
        {"kind": "field", "field": "amount", "op": "eq", "value": "0.3"}, amount=Decimal("0.3")
    )
    assert _holds(
        {"kind": "field", "field": "amount", "op": "lte", "value": "0.3"},
        amount=Decimal("0.1") + Decimal("0.2"),
    )


# -- field: strings, dates, attributes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("criterion", "fields", "expected"),
    [
        ({"field": "industry", "op": "eq", "value": "software"}, {"industry": "software"}, True),
        ({"field": "industry", "op": "eq", "value": "software"}, {"industry": "retail"}, False),
        ({"field": "industry", "op": "eq", "value": "software"}, {}, False),
        ({"field": "owner", "op": "set"}, {"owner": "Moses Frase"}, True),
        ({"field": "owner", "op": "set"}, {}, False),
        ({"field": "decision_maker_role", "op": "set"}, {"decision_maker_role": "CFO"}, True),
        ({"field": "account", "op": "lt", "value": "m"}, {"account": "acme"}, True),
        ({"field": "account", "op": "gte", "value": "m"}, {"account": "acme"}, False),
        ({"field": "currency", "op": "eq", "value": "EUR"}, {}, True),  # pipeline default
        (
            {"field": "expected_close", "op": "lte", "value": "2024-06-30"},
            {"expected_close": date(2024, 6, 30)},
            True,
        ),
        (
            {"field": "expected_close", "op": "lt", "value": "2024-06-30"},
            {"expected_close": date(2024, 6, 30)},
            False,
        ),
        (
            {"field": "expected_close", "op": "gt", "value": "2024-06-30"},
            {"expected_close": date(2024, 7, 1)},
            True,
        ),
        (
            {"field": "expected_close", "op": "eq", "value": "2024-07-01"},
            {"expected_close": date(2024, 7, 1)},
            True,
        ),
        ({"field": "expected_close", "op": "set"}, {}, False),
        (
            {"field": "attributes.region", "op": "eq", "value": "emea"},
            {"attributes": {"region": "emea"}},
            True,
        ),
        (
            {"field": "attributes.region", "op": "eq", "value": "emea"},
            {"attributes": {"region": "apac"}},
            False,
        ),
        ({"field": "attributes.region", "op": "set"}, {"attributes": {}}, False),
        ({"field": "attributes.region", "op": "set"}, {"attributes": {"region": ""}}, False),
        (
            {"field": "attributes.seats", "op": "gte", "value": 10},
            {"attributes": {"seats": 12}},
            True,
        ),
        (
            {"field": "attributes.seats", "op": "gte", "value": 10},
            {"attributes": {"seats": 9}},
            False,
        ),
        (
            {"field": "attributes.seats", "op": "gt", "value": 10},
            {"attributes": {"seats": "11"}},
            True,
        ),
        (
            {"field": "attributes.seats", "op": "gt", "value": 10},
            {"attributes": {"seats": "many"}},
            False,
        ),
    ],
)
def test_field_criterion_on_strings_dates_and_attributes(
    criterion: dict[str, Any], fields: dict[str, Any], expected: bool
) -> None:
    assert _holds({"kind": "field", **criterion}, **fields) is expected


def test_field_criterion_eq_boolean_attribute() -> None:
    """`eq` with a boolean value is allowed by the definition; it must hold when the attribute is that boolean."""
    criterion = {"kind": "field", "field": "attributes.nda_signed", "op": "eq", "value": True}
    assert _holds(criterion, attributes={"nda_signed": True}) is True
    assert _holds(criterion, attributes={"nda_signed": False}) is False


# -- activity ------------------------------------------------------------------------------------


def test_activity_criterion_counts_min_count_since_stage_entry() -> None:
    body = one_stage(
        [{"id": "two_calls", "kind": "activity", "activity": "call", "min_count": 2}], more=2
    )
    ref = pipeline(body)
    clock = Clock()
    deal = open_deal(ref, clock)
    crit = ref.definition.stages[0].exit_criteria[0]
    deal.log_activity(clock.meta(), 1, activity="call")
    deal.log_activity(clock.meta(), 1, activity="email")
    assert not criterion_holds(crit, deal)
    deal.log_activity(clock.meta(), 1, activity="call")
    assert criterion_holds(crit, deal)
    deal.change_stage(clock.meta(), ref, to_stage="s1")
    # Back to s0: the calls logged during the earlier stay no longer count.
    deal.change_stage(clock.meta(), ref, to_stage="s0")
    assert deal.activities_in_stage == {}
    assert not criterion_holds(crit, deal)
    with pytest.raises(ExitCriteriaUnmet) as refused:
        deal.change_stage(clock.meta(), ref, to_stage="s1")
    assert refused.value.unmet == [{"stage": "s0", "criterion": "two_calls"}]
    deal.log_activity(clock.meta(), 1, activity="call")
    deal.log_activity(clock.meta(), 1, activity="call")
    deal.change_stage(clock.meta(), ref, to_stage="s1")
    assert deal.stage == "s1"


def test_evaluate_criteria_lists_every_criterion_in_pipeline_order() -> None:
    ref = pipeline()
    deal = open_deal(ref, Clock())
    deal.facts["need"] = True
    results = evaluate_criteria(ref.definition, ["prospecting", "qualification"], deal)
    assert [(r["stage"], r["criterion"], r["held"]) for r in results] == [
        ("prospecting", "contact_made", False),
        ("qualification", "need", True),
        ("qualification", "budget", False),
        ("qualification", "authority", False),
        ("qualification", "timeline", False),
    ]
