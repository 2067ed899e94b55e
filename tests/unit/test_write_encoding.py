"""The write path's shortcuts give exactly what the long way gives.

- An event's data is encoded once (canonical JSON) and its chain hash taken over those bytes:
  the hash equals ``content_hash`` (what audit re-derives), and the stored state decodes to the
  event that was decided.
- ``json_size_over`` (orjson first) refuses and sizes exactly as the Python walk does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.commands import _to_aware_datetime, _to_aware_datetime_long
from engine.domain.deal import Deal, EventMeta, Opened
from engine.domain.events import (
    GENESIS_HASH,
    canonical_json,
    chain_hash,
    chain_hash_json,
    hash_content,
    hash_content_json,
)
from engine.persistence.mapper import decode_event
from engine.storable import MAX_INT, NotStorable, check_storable, json_size, json_size_over
from tests.unit.domain_builders import pipeline

# Text with what JSON escapes (quotes, backslashes, controls), non-ASCII, and look-alikes of
# the keys the hash content is spliced around.
TRICKY = ['"', "\\", '"data":null', ',"actor":', "\n", "\x01", "é", "😀", "\u202e", "\\u0000"]
texts = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(TRICKY)), max_size=4).map("".join)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        texts,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    type_=texts,
    version=st.integers(min_value=1, max_value=2**40),
    occurred_at=texts,
    recorded_at=texts,
    actor=texts,
    event_id=texts,
    pipeline_version=st.none() | st.integers(min_value=0, max_value=2**40),
    data=st.dictionaries(texts, json_values, max_size=5),
)
def test_hash_content_json_is_canonical_json_of_hash_content(
    type_: str,
    version: int,
    occurred_at: str,
    recorded_at: str,
    actor: str,
    event_id: str,
    pipeline_version: int | None,
    data: dict[str, Any],
) -> None:
    fields = {
        "type_": type_,
        "version": version,
        "occurred_at": occurred_at,
        "recorded_at": recorded_at,
        "actor": actor,
        "event_id": event_id,
        "pipeline_version": pipeline_version,
    }
    expected = canonical_json(hash_content(**fields, data=data))
    spliced = hash_content_json(**fields, data_json=canonical_json(data))
    assert spliced == expected
    assert chain_hash_json("f" * 64, spliced) == chain_hash(
        "f" * 64, hash_content(**fields, data=data)
    )


attributes = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda k: "\x00" not in k), json_values, max_size=4
)


def _stored_the_long_way(event: Any) -> dict[str, Any]:
    """What the stored state held before: the whole event dumped, late fields at None left out."""
    state = event.drop_late(
        event.model_dump(mode="json", exclude={"originator_id", "originator_version"})
    )
    return dict(state)


@settings(max_examples=100, deadline=None)
@given(
    attrs=attributes,
    amount=st.none() | st.decimals(min_value=0, max_value=10**6, places=2),
    note=st.none() | texts,
    owner=st.none() | texts.filter(bool),
    micro=st.integers(min_value=0, max_value=999_999),
)
def test_sealed_state_decodes_to_the_event_and_its_hash_is_the_audit_hash(
    attrs: dict[str, Any], amount: Decimal | None, note: str | None, owner: str | None, micro: int
) -> None:
    at = datetime(2024, 5, 1, 9, 0, 0, micro, tzinfo=UTC)
    meta = EventMeta(occurred_at=at, event_id="e-1", actor="tester", recorded_at=at)
    deal = Deal.open(
        "d-1", pipeline(), meta, name="Deal", amount=amount, owner=owner, attributes=attrs
    )
    meta2 = EventMeta(at + timedelta(hours=1), "e-2", "tester", at + timedelta(hours=1))
    deal.record_fact(meta2, 1, fact="need", value=True, note=note)
    previous = GENESIS_HASH
    for event, state in deal.collect_sealed():
        assert orjson.loads(state) == _stored_the_long_way(event)
        decoded = decode_event(
            f"{type(event).__module__}:{type(event).__qualname__}",
            state,
            event.originator_id,
            event.originator_version,
        )
        assert decoded == event
        assert event.content_hash(previous) == event.hash
        previous = event.hash


def test_a_time_outside_utc_is_stored_with_its_offset_and_hashed_in_utc() -> None:
    """The rare path (automation may pass an aware time in another zone): unchanged."""
    at = datetime(2024, 5, 1, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    meta = EventMeta(occurred_at=at, event_id="e-1", actor="tester", recorded_at=datetime.now(UTC))
    deal = Deal.open("d-2", pipeline(), meta, name="Deal")
    [(event, state)] = deal.collect_sealed()
    assert isinstance(event, Opened)
    assert orjson.loads(state)["occurred_at"] == "2024-05-01T11:00:00+02:00"
    assert orjson.loads(state) == _stored_the_long_way(event)
    assert event.content_hash(GENESIS_HASH) == event.hash


# -- storability --------------------------------------------------------------------------------

unstorable_texts = st.lists(
    st.one_of(st.text(max_size=6), st.sampled_from(["\x00", "\ud800", "\udfff", "\\u0000", "é"])),
    max_size=4,
).map("".join)
edge_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        st.decimals(allow_nan=False, allow_infinity=False, places=3),
        unstorable_texts,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(unstorable_texts, inner, max_size=4),
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(value=edge_values, most=st.integers(min_value=0, max_value=300))
def test_json_size_over_decides_exactly_as_the_walk(value: Any, most: int) -> None:
    try:
        size = json_size(value, "body")
    except NotStorable as refused:
        with pytest.raises(NotStorable) as fast:
            json_size_over(value, most, "body")
        assert (fast.value.where, fast.value.why) == (refused.where, refused.why)
        with pytest.raises(NotStorable):
            check_storable(value, "body")
        return
    # Around both sizes (the walk's and the JSON's), where a wrong shortcut would show.
    try:
        encoded = len(orjson.dumps(value, default=str))
    except TypeError:
        encoded = size
    for limit in {most, size, size - 1, encoded, encoded - 1, 2 * encoded, 2 * encoded - 1}:
        if limit >= 0:
            assert json_size_over(value, limit, "body") == (size if size > limit else None)
    check_storable(value, "body")
    assert json_size_over(value, MAX_INT) is None


def test_json_size_over_refuses_nul_surrogates_and_wide_integers() -> None:
    for bad, where in (
        ({"a": ["x", "y\x00"]}, "a.1"),
        ({"k\ud800": 1}, "k\ud800"),
        ({"n": 2**63}, "n"),
        ({"n": -(2**63) - 1}, "n"),
    ):
        with pytest.raises(NotStorable) as refused:
            json_size_over(bad, 10_000)
        assert refused.value.where == where
    # Storable look-alikes: the text backslash-u0000, the 64-bit extremes.
    assert json_size_over({"t": "\\u0000", "n": [2**63 - 1, -(2**63)]}, 10_000) is None


# Times spelled in UTC with a Z, and texts that only look like them (a Z at the end of
# anything): the fast path must give what the long way gives, or the same error.
utc_texts = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.datetimes(timezones=st.just(UTC)).map(
        lambda d: d.isoformat(sep=" ", timespec="minutes").replace("+00:00", "Z")
    ),
    st.text(alphabet="0123456789-:T .+WZ\t", max_size=30).map(lambda t: t + "Z"),
    st.datetimes().map(lambda d: d.isoformat() + "+05:00Z"),
)


def _time_or_error(parse: Any, value: str) -> Any:
    try:
        return parse(value)
    except ValueError as error:
        return ("error", str(error))


@given(value=utc_texts)
def test_times_in_utc_take_the_fast_path_to_the_same_answer(value: str) -> None:
    fast = _time_or_error(_to_aware_datetime, value)
    long = _time_or_error(_to_aware_datetime_long, value)
    assert fast == long
    if isinstance(fast, datetime):
        assert fast.tzinfo is UTC
