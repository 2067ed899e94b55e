"""Tables of the deal read models, for PostgreSQL and SQLite.

Times are integer microseconds since the epoch and money integer micro-units on both databases,
so the read-side SQL is the same on both and its arithmetic is exact.
"""

from __future__ import annotations

CURRENT_TABLE = "rm_deals"
HISTORY_TABLE = "rm_deal_history"
STAYS_TABLE = "rm_stage_stays"
PIPELINES_TABLE = "rm_pipelines"
VIEW_TABLES = (CURRENT_TABLE, HISTORY_TABLE, STAYS_TABLE, PIPELINES_TABLE)

_DEAL_BODY = """
    deal_id {text} NOT NULL,
    pipeline_id {text} NOT NULL,
    pipeline_version {int},
    name {text} NOT NULL,
    stage {text} NOT NULL,
    status {text} NOT NULL,
    amount {text},
    amount_units {big},
    currency {text} NOT NULL,
    owner {text},
    account {text},
    industry {text},
    lead_source {text},
    decision_maker_role {text},
    opened_at {big} NOT NULL,
    stage_entered_at {big} NOT NULL,
    closed_at {big},
    lost_reason {text},
    flagged_stale {small} NOT NULL,
    version {int} NOT NULL,
    position {big} NOT NULL"""


def _ddl(uuid: str, text: str, int_: str, big: str, small: str) -> list[str]:
    body = _DEAL_BODY.format(text=text, int=int_, big=big, small=small)
    return [
        f"CREATE TABLE IF NOT EXISTS {CURRENT_TABLE} (deal_uuid {uuid} PRIMARY KEY,{body},"
        f" stay_seq {int_} NOT NULL, visited {text} NOT NULL, advanced {text} NOT NULL,"
        f" last_event_at {big} NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {CURRENT_TABLE}_board"
        f" ON {CURRENT_TABLE} (pipeline_id, status, stage, stage_entered_at)",
        f"CREATE INDEX IF NOT EXISTS {CURRENT_TABLE}_newest ON {CURRENT_TABLE} (opened_at, deal_id)",
        f"CREATE INDEX IF NOT EXISTS {CURRENT_TABLE}_pipeline_newest"
        f" ON {CURRENT_TABLE} (pipeline_id, opened_at, deal_id)",
        f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (deal_uuid {uuid} NOT NULL,{body},"
        f" valid_from {big} NOT NULL, valid_to {big}, PRIMARY KEY (deal_uuid, version))",
        f"CREATE INDEX IF NOT EXISTS {HISTORY_TABLE}_asof ON {HISTORY_TABLE} (pipeline_id, valid_from)",
        f"CREATE TABLE IF NOT EXISTS {STAYS_TABLE} (deal_uuid {uuid} NOT NULL, seq {int_} NOT NULL,"
        f" pipeline_id {text} NOT NULL, stage {text} NOT NULL, entered_at {big} NOT NULL,"
        f" left_at {big}, exit {text}, first_in_stage {small} NOT NULL,"
        f" first_advance {small} NOT NULL, PRIMARY KEY (deal_uuid, seq))",
        f"CREATE INDEX IF NOT EXISTS {STAYS_TABLE}_stage ON {STAYS_TABLE} (pipeline_id, stage, entered_at)",
        f"CREATE TABLE IF NOT EXISTS {PIPELINES_TABLE} (pipeline_id {text} PRIMARY KEY)",
    ]


POSTGRES_DDL = _ddl("uuid", "text", "integer", "bigint", "smallint")
SQLITE_DDL = _ddl("TEXT", "TEXT", "INTEGER", "INTEGER", "INTEGER")
