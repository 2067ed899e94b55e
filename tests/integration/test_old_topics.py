"""A store written before the deal model was split holds deal events under the topics
``engine.domain.deal:<Class>``; new ones carry ``engine.domain.deal_events:<Class>``. Every
reader -- the feed (with type filters), the read models, the event bridge's watch list --
must treat both spellings alike."""

from __future__ import annotations

import sqlite3

import psycopg

from dealflow.bench.audit_sample import populate
from dealflow.runtime import build_services
from engine.application import DealflowApp
from engine.domain.events import utcnow
from engine.feed import FeedFilter, FeedReader
from engine.persistence.settings import StoreSettings
from projections.queries.common import Moment
from projections.queries.metrics import metrics
from projections.readmodel.records import to_us


def _rewrite_topics_to_old(settings: StoreSettings, every_other: bool) -> int:
    """Give (every other) deal event the old module's topic, as an older store holds them."""
    table = "dealflow_events" if settings.is_postgres else "stored_events"
    sql = (
        f"UPDATE {table} SET topic = replace(topic, 'engine.domain.deal_events:', "
        "'engine.domain.deal:') WHERE topic LIKE 'engine.domain.deal_events:%'"
        + (" AND originator_version % 2 = 0" if every_other else "")
    )
    if settings.is_postgres:
        assert settings.database_url
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            return conn.execute(sql).rowcount
    conn = sqlite3.connect(settings.sqlite_path)
    try:
        changed = conn.execute(sql).rowcount
        conn.commit()
        return changed
    finally:
        conn.close()


def test_mixed_topics_read_the_same(app: DealflowApp, store_settings: StoreSettings) -> None:
    populate(app, 300)
    reader = FeedReader(app)
    before = reader.page(0, 5000).events
    won_before = reader.page(0, 5000, FeedFilter.build(types=["won", "opened"])).events
    services = build_services(store_settings, run_projections=False)
    try:
        services.projections.catch_up()
        moment = Moment(to_us(utcnow()), historical=False)
        metrics_before = metrics(services.app, "default", moment)
        assert _rewrite_topics_to_old(store_settings, every_other=True) > 50
        after = FeedReader(services.app).page(0, 5000).events
        assert [(e["position"], e["type"], e["data"]) for e in after] == [
            (e["position"], e["type"], e["data"]) for e in before
        ]
        won_after = (
            FeedReader(services.app).page(0, 5000, FeedFilter.build(types=["won", "opened"])).events
        )
        assert [e["position"] for e in won_after] == [e["position"] for e in won_before]
        assert won_before, "the sample has opened and won deals"
        services.projections.rebuild()
        assert metrics(services.app, "default", moment) == metrics_before
    finally:
        services.close()
