"""DealflowApp.ingest on both backends: idempotency, optimistic concurrency, money, automation types,
and "a rejected write records nothing"."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from engine.application import Command, DealflowApp, automation_command
from engine.domain.pipeline import PipelineDefinition
from tests.helpers import command, send

OPEN: dict[str, Any] = {
    "type": "opened",
    "pipeline_id": "default",
    "name": "Acme",
    "occurred_at": "2024-01-01",
}


def _fixed(deal_id: str, body: dict[str, Any]) -> Command:
    """A command whose event_id is part of the body (so it can be sent twice)."""
    return command(deal_id, body)


def _events(app: DealflowApp, deal_id: str) -> list[tuple[int, str, str]]:
    return [(e.originator_version, e.TYPE, e.event_id) for e in app.deal_events(deal_id)]


def test_same_event_id_same_body_is_a_duplicate_with_the_same_version(app: DealflowApp) -> None:
    first = app.ingest([_fixed("d1", {**OPEN, "event_id": "open-1"})])[0]
    fact = {
        "type": "fact_recorded",
        "event_id": "f-1",
        "fact": "contact_made",
        "value": True,
        "occurred_at": "2024-01-02",
    }
    recorded = app.ingest([_fixed("d1", fact)])[0]
    app.ingest(
        [
            _fixed(
                "d1",
                {
                    "type": "activity_logged",
                    "event_id": "a-1",
                    "activity": "call",
                    "occurred_at": "2024-01-03",
                },
            )
        ]
    )
    again = app.ingest([_fixed("d1", fact)])[0]
    assert (first.status, recorded.status, recorded.version) == ("recorded", "recorded", 2)
    assert (again.status, again.version, again.error) == ("duplicate", 2, None)
    assert app.deal("d1").version == 3
    assert [v for v, _, _ in _events(app, "d1")] == [1, 2, 3]


def test_same_event_id_different_body_is_idempotency_key_reused(app: DealflowApp) -> None:
    app.ingest([_fixed("d1", {**OPEN, "event_id": "open-1"})])
    body = {"type": "fact_recorded", "event_id": "f-1", "fact": "need", "value": True}
    assert app.ingest([_fixed("d1", body)])[0].status == "recorded"
    for changed in (
        {**body, "value": False},
        {**body, "note": "x"},
        {**body, "occurred_at": "2020-01-01"},
    ):
        outcome = app.ingest([_fixed("d1", changed)])[0]
        assert outcome.status == "rejected"
        assert outcome.error is not None and outcome.error.code == "idempotency_key_reused"
    # The same event_id on another deal is a different body too.
    app.ingest([_fixed("d2", {**OPEN, "event_id": "open-2"})])
    other = app.ingest([_fixed("d2", body)])[0]
    assert other.error is not None and other.error.code == "idempotency_key_reused"
    assert app.deal("d1").version == 2 and app.deal("d2").version == 1


def test_duplicates_within_one_batch(app: DealflowApp) -> None:
    open_ = _fixed("d1", {**OPEN, "event_id": "open-1"})
    fact = {
        "type": "fact_recorded",
        "event_id": "f-1",
        "fact": "need",
        "value": True,
        "occurred_at": "2024-01-02",
    }
    outcomes = app.ingest(
        [
            open_,
            _fixed("d1", fact),
            _fixed("d1", fact),
            _fixed("d1", {**fact, "value": False}),
            open_,
        ]
    )
    assert [(o.status, o.version) for o in outcomes] == [
        ("recorded", 1),
        ("recorded", 2),
        ("duplicate", 2),
        ("rejected", None),
        ("duplicate", 1),
    ]
    assert outcomes[3].error is not None and outcomes[3].error.code == "idempotency_key_reused"
    assert _events(app, "d1") == [(1, "opened", "open-1"), (2, "fact_recorded", "f-1")]


def test_a_rejected_event_id_can_be_used_again(app: DealflowApp) -> None:
    send(app, "d1", OPEN)
    move = {
        "type": "stage_changed",
        "event_id": "s-1",
        "to_stage": "qualification",
        "occurred_at": "2024-01-03",
    }
    refused = app.ingest([_fixed("d1", move)])[0]
    assert refused.status == "rejected" and refused.error is not None
    assert refused.error.code == "exit_criteria_unmet"
    send(
        app,
        "d1",
        {
            "type": "fact_recorded",
            "fact": "contact_made",
            "value": True,
            "occurred_at": "2024-01-02",
        },
    )
    assert app.ingest([_fixed("d1", move)])[0].status == "recorded"


def test_expected_version_conflict_reports_current_version(app: DealflowApp) -> None:
    send(app, "d1", OPEN)
    send(app, "d1", {"type": "activity_logged", "activity": "call"})
    stale = send(app, "d1", {"type": "activity_logged", "activity": "email", "expected_version": 1})
    assert stale.status == "rejected" and stale.error is not None
    assert stale.error.code == "version_conflict"
    assert stale.error.to_dict()["current_version"] == 2
    assert stale.version == 2
    ok = send(app, "d1", {"type": "activity_logged", "activity": "email", "expected_version": 2})
    assert (ok.status, ok.version) == ("recorded", 3)


def test_opened_twice_is_deal_exists(app: DealflowApp) -> None:
    send(app, "d1", OPEN)
    again = send(app, "d1", {**OPEN, "name": "Other"})
    assert again.error is not None and again.error.code == "deal_exists"
    assert app.deal("d1").name == "Acme"


def test_event_on_unknown_deal_is_not_found(app: DealflowApp) -> None:
    outcome = send(app, "ghost", {"type": "activity_logged", "activity": "call"})
    assert outcome.error is not None and outcome.error.code == "not_found"


def test_opened_in_unknown_pipeline_is_refused(app: DealflowApp) -> None:
    outcome = send(app, "d1", {**OPEN, "pipeline_id": "nope"})
    assert outcome.status == "rejected"
    assert outcome.error is not None and outcome.error.code in ("not_found", "validation_error")


def test_automation_types_are_refused_from_clients(app: DealflowApp) -> None:
    send(app, "d1", OPEN)
    for type_, data in [
        ("nurture_enrolled", {"sequence_id": "s", "sequence_version": 1}),
        ("nurture_touch_sent", {"sequence_id": "s", "step": 0, "channel": "email"}),
        ("nurture_stopped", {"sequence_id": "s", "reason": "reply"}),
        ("escalated", {"stage": "prospecting", "level": "owner"}),
        ("flagged_stale", {"stage": "prospecting"}),
    ]:
        cmd = automation_command("d1", type_, data, event_id=f"auto-{type_}", actor="client")
        outcome = app.ingest([cmd])[0]
        assert outcome.status == "rejected", type_
        assert outcome.error is not None and outcome.error.code == "validation_error"
    assert app.deal("d1").version == 1
    # dealflow's own automation may write them.
    done = app.record_automation("d1", "flagged_stale", {"stage": "prospecting"}, event_id="auto-1")
    assert done.status == "recorded" and app.deal("d1").flagged_stale


def test_money_is_exact_decimal_end_to_end(app: DealflowApp) -> None:
    send(app, "d1", {**OPEN, "amount": "12345678901234.123456"})
    send(app, "d1", {"type": "updated", "amount": Decimal("0.1")})
    deal = app.deal("d1")
    assert deal.amount == Decimal("0.1") and isinstance(deal.amount, Decimal)
    history = app.history("d1")["events"]
    assert history[0]["data"]["amount"] == "12345678901234.123456"
    # A fresh application reading the same store sees the same exact value.
    again = DealflowApp(app.settings)
    try:
        assert again.deal_events("d1")[0].amount == Decimal("12345678901234.123456")  # type: ignore[attr-defined]
        assert again.deal_state(again.deal("d1"))["amount"] == "0.1"
    finally:
        again.close()


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "-1", "1e400", "1.0000001"])
def test_bad_amounts_are_refused_at_the_edge(amount: str) -> None:
    with pytest.raises(ValidationError):
        command("d1", {**OPEN, "amount": amount})
    with pytest.raises(ValidationError):
        command("d1", {"type": "won", "amount": amount})


def test_business_time_never_backwards_through_ingest(app: DealflowApp) -> None:
    send(app, "d1", OPEN)
    send(
        app,
        "d1",
        {"type": "activity_logged", "activity": "call", "occurred_at": "2024-02-01T12:00:00+02:00"},
    )
    early = send(
        app,
        "d1",
        {"type": "activity_logged", "activity": "call", "occurred_at": "2024-02-01T09:59:59Z"},
    )
    assert early.error is not None and early.error.code == "validation_error"
    same = send(
        app,
        "d1",
        {"type": "activity_logged", "activity": "call", "occurred_at": "2024-02-01T10:00:00Z"},
    )
    assert same.status == "recorded"


def test_a_rejected_item_in_a_batch_records_nothing_for_it(app: DealflowApp) -> None:
    send(app, "d1", OPEN)
    outcomes = app.ingest(
        [
            command(
                "d1", {"type": "stage_changed", "to_stage": "meeting", "occurred_at": "2024-01-02"}
            ),
            command(
                "d1",
                {
                    "type": "fact_recorded",
                    "fact": "contact_made",
                    "value": True,
                    "occurred_at": "2024-01-03",
                },
            ),
            command(
                "d1",
                {"type": "stage_changed", "to_stage": "qualification", "occurred_at": "2024-01-04"},
            ),
        ]
    )
    assert [o.status for o in outcomes] == ["rejected", "recorded", "recorded"]
    assert [o.version for o in outcomes] == [1, 2, 3]
    assert [t for _, t, _ in _events(app, "d1")] == ["opened", "fact_recorded", "stage_changed"]


def test_won_deal_continues_in_post_purchase(app: DealflowApp) -> None:
    send(app, "d1", {**OPEN, "stage": "contract", "owner": "Ann"})
    send(app, "d1", {"type": "fact_recorded", "fact": "contract_signed", "value": True})
    won = send(app, "d1", {"type": "won", "amount": "900"})
    assert won.status == "recorded"
    follow = app.deal("d1:post-purchase")
    assert (follow.pipeline_id, follow.stage, follow.owner) == (
        "post-purchase",
        "onboarding",
        "Ann",
    )
    assert follow.attributes == {"won_deal_id": "d1"}


def test_a_won_refused_in_a_batch_is_not_recorded(app: DealflowApp) -> None:
    """A `won` that is refused (its after_won pipeline does not exist) must record nothing, even
    when another item of the same batch is accepted."""
    app.put_pipeline(
        "p",
        PipelineDefinition.model_validate(
            {
                "name": "P",
                "after_won": "missing",
                "stages": [{"id": "a", "name": "A", "probability": 0.5}],
            }
        ),
        "tester",
    )
    send(app, "x", {"type": "opened", "pipeline_id": "p", "name": "X"})
    send(app, "y", {"type": "opened", "pipeline_id": "p", "name": "Y"})
    outcomes = app.ingest(
        [
            command("x", {"type": "won"}),
            command("y", {"type": "activity_logged", "activity": "call"}),
        ]
    )
    assert outcomes[0].status == "rejected"
    assert outcomes[1].status == "recorded"
    assert [t for _, t, _ in _events(app, "x")] == ["opened"]
    assert app.deal("x").status == "open"


def _opened_and_won(deal_id: str) -> list[Command]:
    return [
        command(deal_id, {**OPEN, "stage": "contract"}),
        command(deal_id, {"type": "fact_recorded", "fact": "contract_signed", "value": True}),
        command(deal_id, {"type": "won", "amount": "100"}),
    ]


def test_deals_opened_and_won_in_one_batch_find_their_follow_ups_in_one_load(
    app: DealflowApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An importer's replay opens and wins deals in one batch: whether each follow-up already
    exists is read with the batch's other deals, not with one query per won deal."""
    checked: list[Any] = []
    monkeypatch.setattr(app, "_exists", lambda aggregate_id: checked.append(aggregate_id))
    deals = [f"batch-{i}" for i in range(6)]
    outcomes = app.ingest([c for deal_id in deals for c in _opened_and_won(deal_id)])
    assert {o.status for o in outcomes} == {"recorded"}
    assert checked == []
    for deal_id in deals:
        follow = app.deal(f"{deal_id}:post-purchase")
        assert (follow.pipeline_id, follow.attributes) == (
            "post-purchase",
            {"won_deal_id": deal_id},
        )


def test_a_follow_up_the_sender_opened_itself_is_not_opened_again_in_a_batch(
    app: DealflowApp,
) -> None:
    send(
        app,
        "d9:post-purchase",
        {"type": "opened", "pipeline_id": "post-purchase", "name": "Own follow-up"},
    )
    outcomes = app.ingest(_opened_and_won("d9"))
    assert [o.status for o in outcomes] == ["recorded", "recorded", "recorded"]
    follow = app.deal("d9:post-purchase")
    assert (follow.name, follow.version) == ("Own follow-up", 1)
