"""What every read-side query shares: where the deal rows come from (now or as of a time),
which pipeline definition applies, staleness in SQL and in Python, money and time formats."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from engine.domain.definitions import PIPELINE
from engine.domain.pipeline import PipelineDefinition
from projections.readmodel.records import iso_us, to_us
from projections.readmodel.schema import CURRENT_TABLE, HISTORY_TABLE, VERSIONS_TABLE
from projections.readmodel.timeline import DAY_US
from projections.readmodel.views import POSTGRES_TRACKING_TABLE, SQLITE_TRACKING_TABLE

MICRO = Decimal("0.000001")
CENT = Decimal("0.01")
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class Moment:
    """The time a query answers for, and whether it must come from history (``as_of``)."""

    at: int  # microseconds since the epoch
    historical: bool

    @property
    def iso(self) -> str:
        return iso_us(self.at) or ""


def deal_source(moment: Moment, pipeline_id: str | None = None) -> tuple[str, list[Any]]:
    """The deal rows as they stood at ``moment``, as a subquery aliased ``d``.

    Now: the current rows. As of a time: the history row of each deal whose validity covers it
    (a deal opened later has none; several events at the same instant leave only the last)."""
    where: list[str] = []
    params: list[Any] = []
    if pipeline_id is not None:
        where.append("pipeline_id = %s")
        params.append(pipeline_id)
    if moment.historical:
        where.append("valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)")
        params += [moment.at, moment.at]
        table = HISTORY_TABLE
    else:
        table = CURRENT_TABLE
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"(SELECT * FROM {table}{clause}) d", params


def limit_us(max_days: float | None) -> int | None:
    """A stage's stale threshold in microseconds, rounded exactly as ``timedelta`` rounds it
    (the deal state's ``stale`` uses ``timedelta(days=max_days)``)."""
    if max_days is None:
        return None
    return timedelta(days=max_days) // timedelta(microseconds=1)


def stale_sql(definitions: dict[str, PipelineDefinition], at: int) -> tuple[str, list[Any]]:
    """SQL (over alias ``d``) that is true for a stale deal: open, and flagged by escalation or
    longer in its stage than the stage allows."""
    parts, params = ["d.flagged_stale = 1"], []
    for pipeline_id, definition in definitions.items():
        for stage in definition.stages:
            limit = limit_us(stage.max_days_in_stage)
            if limit is not None:
                parts.append("(d.pipeline_id = %s AND d.stage = %s AND d.stage_entered_at < %s)")
                params += [pipeline_id, stage.id, at - limit]
    return f"(d.status = 'open' AND ({' OR '.join(parts)}))", params


def is_stale(row: Any, definition: PipelineDefinition | None, at: int) -> bool:
    if row["status"] != "open":
        return False
    if row["flagged_stale"]:
        return True
    if definition is None or not definition.has_stage(row["stage"]):
        return False
    limit = limit_us(definition.stage(row["stage"]).max_days_in_stage)
    return limit is not None and at - row["stage_entered_at"] > limit


# -- definitions ------------------------------------------------------------------------------


def definition_at(
    app: Any, pipeline_id: str, moment: Moment, *, fast: bool = True
) -> tuple[int, PipelineDefinition]:
    """The pipeline definition a query at ``moment`` uses.

    Now: the current one. As of a time: the newest version that was either applied (recorded)
    by then or used by a deal event that had occurred by then, so a backfilled history is judged
    by the definitions its events were recorded under, and a live one by what was in force.

    Call it before opening a :func:`snapshot`: it reads the event store, which takes a pooled
    connection of its own. Called inside one, every request held a connection while waiting for
    a second; under pool pressure or a database restart that ended in a 500. Definitions only
    ever gain versions, so reading them outside the snapshot changes no answer."""
    current = app.pipeline_ref(pipeline_id)
    if not moment.historical:
        return current.version, current.definition
    if fast:  # the earliest use of each version, kept by the fold: a few rows, not the history
        row = app.db.fetchone(
            f"SELECT MAX(version) AS v FROM {VERSIONS_TABLE} WHERE pipeline_id = %s AND first_at <= %s",
            (pipeline_id, moment.at),
        )
    else:
        row = app.db.fetchone(
            f"SELECT MAX(pipeline_version) AS v FROM {HISTORY_TABLE} WHERE pipeline_id = %s AND valid_from <= %s",
            (pipeline_id, moment.at),
        )
    version = int(row["v"]) if row and row["v"] is not None else 0
    for item in app.definition_history(PIPELINE, pipeline_id):
        applied = to_us(datetime.fromisoformat(item["applied_at"].replace("Z", "+00:00")))
        if applied <= moment.at:
            version = max(version, int(item["version"]))
    if version == 0:
        version = 1
    if version == current.version:
        return current.version, current.definition
    ref = app.pipeline_ref(pipeline_id, version)
    return ref.version, ref.definition


# -- reading ------------------------------------------------------------------------------------


@contextmanager
def snapshot(app: Any, *, bounded: bool = False) -> Iterator[Any]:
    """One consistent snapshot for a whole answer (several statements see the same position).

    ``bounded``: every statement reads a bounded index range (the fast paths), so PostgreSQL
    is told not to plan parallel workers or JIT-compile for it. Neither pays off on a few
    thousand rows, and both cost a lot on a busy machine: starting two workers took 20-25 ms of
    a 30 ms "as of" sub-query on the shared 2 cores. The scans (``fast=False``) keep both."""
    with app.db.reading() as cur:
        if app.db.is_postgres:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            if bounded:  # SET LOCAL, both in one round trip
                cur.execute(
                    "SELECT set_config('max_parallel_workers_per_gather', '0', true),"
                    " set_config('jit', 'off', true)"
                )
        yield cur


def tracked_position(app: Any, cur: Any) -> int:
    table = POSTGRES_TRACKING_TABLE if app.db.is_postgres else SQLITE_TRACKING_TABLE
    row = cur.execute(
        f"SELECT notification_id FROM {table} WHERE application_name = %s", ("deals",)
    ).fetchone()
    return int(row["notification_id"]) if row and row["notification_id"] is not None else 0


# -- formats ------------------------------------------------------------------------------------


def answer_head(
    pipeline_id: str, version: int, definition: PipelineDefinition, moment: Moment, position: int
) -> dict[str, Any]:
    """The fields a pipeline's board, metrics and forecast answers open with."""
    return {
        "pipeline_id": pipeline_id,
        "pipeline_version": version,
        "currency": definition.currency,
        "as_of": moment.iso,
        "position": position,
    }


def units_to_decimal(units: Any) -> Decimal:
    return (Decimal(int(units or 0)) * MICRO).quantize(MICRO)


def money(value: Decimal) -> str:
    """Money as a JSON string: two decimals, or more when the amounts carry more (exact)."""
    value = value.quantize(MICRO, rounding=ROUND_HALF_EVEN)
    cents = value.quantize(CENT)
    return str(cents) if cents == value else str(value.normalize())


def weighted(units: Any, probability: float) -> Decimal:
    return (units_to_decimal(units) * Decimal(str(probability))).quantize(
        MICRO, rounding=ROUND_HALF_EVEN
    )


def ratio(numerator: float, denominator: float) -> float | None:
    return None if not denominator else round(numerator / denominator, 6)


def days(ms_total: Any, count: int) -> float | None:
    return None if not count else round(int(ms_total or 0) / count / MS_PER_DAY, 6)


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    padded = cursor + "=" * (-len(cursor) % 4)
    values = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(values, list):
        raise ValueError("bad cursor")
    return values


# The columns :func:`deal_item` reads (over the deal source ``d``).
ITEM_COLUMNS = (
    "deal_id, pipeline_id, name, stage, status, amount, currency, owner, account, industry, lead_source,"
    " decision_maker_role, opened_at, stage_entered_at, closed_at, lost_reason, flagged_stale, version"
)


def deal_item(row: Any, definition: PipelineDefinition | None, at: int) -> dict[str, Any]:
    """One deal in a list or on the board (a summary of the contract's deal state)."""
    is_open = row["status"] == "open"
    return {
        "deal_id": row["deal_id"],
        "pipeline_id": row["pipeline_id"],
        "name": row["name"],
        "stage": row["stage"],
        "status": row["status"],
        "amount": row["amount"],
        "currency": row["currency"],
        "owner": row["owner"],
        "account": row["account"],
        "industry": row["industry"],
        "lead_source": row["lead_source"],
        "decision_maker_role": row["decision_maker_role"],
        "opened_at": iso_us(row["opened_at"]),
        "stage_entered_at": iso_us(row["stage_entered_at"]),
        "closed_at": iso_us(row["closed_at"]),
        "lost_reason": row["lost_reason"],
        "days_in_stage": round((at - row["stage_entered_at"]) / DAY_US, 6) if is_open else None,
        "stale": is_stale(row, definition, at),
        "version": row["version"],
    }
