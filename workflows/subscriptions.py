"""Webhook subscriptions and their delivery log, in two tables of the store.

A subscription row holds what to send where (url, event types, pipelines), the signing
secrets (the current one, and the previous ones until their overlap ends), its status and
its cursor: the log position up to which every matching event was delivered. ``run`` counts
the delivery workflows: it moves on when a subscription is resumed or replayed, so a workflow
of an earlier run sees it is superseded and stops. ``replays`` is part of every delivery id,
so the deliveries of a replay are told apart from the first ones (retries keep their id).
"""

from __future__ import annotations

import base64
import json
import secrets as random_secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from engine.domain.events import iso, utcnow
from engine.persistence.db import Database

TABLE = "dealflow_webhook_subscriptions"
DELIVERIES = "dealflow_webhook_deliveries"
ACTIVE, PAUSED, FAILING = "active", "paused", "failing"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_FAILING_AFTER_SECONDS = 3600.0
DEFAULT_RETRY_MAX_SECONDS = 300.0
DEFAULT_OVERLAP_SECONDS = 86400.0


def _ddl(db: Database) -> tuple[str, ...]:
    serial = "BIGSERIAL PRIMARY KEY" if db.is_postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
    return (
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        " id TEXT PRIMARY KEY,"
        " url TEXT NOT NULL,"
        " types TEXT NOT NULL,"
        " pipelines TEXT NOT NULL,"
        " secrets TEXT NOT NULL,"
        " status TEXT NOT NULL,"
        " status_reason TEXT,"
        " cursor BIGINT NOT NULL,"
        " run BIGINT NOT NULL,"
        " replays BIGINT NOT NULL DEFAULT 0,"
        " timeout_seconds REAL NOT NULL,"
        " failing_after_seconds REAL NOT NULL,"
        " retry_max_seconds REAL NOT NULL,"
        " failing_since TEXT,"
        " created_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {DELIVERIES} ("
        f" seq {serial},"
        " subscription_id TEXT NOT NULL,"
        " delivery_id TEXT NOT NULL,"
        " position BIGINT NOT NULL,"
        " deal_id TEXT,"
        " type TEXT NOT NULL,"
        " attempt INTEGER NOT NULL,"
        " status_code INTEGER,"
        " error TEXT,"
        " latency_ms REAL NOT NULL,"
        " at TEXT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {DELIVERIES}_sub ON {DELIVERIES} (subscription_id, seq)",
    )


def new_secret() -> str:
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


@dataclass
class Subscription:
    id: str
    url: str
    types: list[str]
    pipelines: list[str]
    secrets: list[dict[str, Any]]  # [{"secret": "whsec_...", "expires_at": iso | None}]
    status: str
    status_reason: str | None
    cursor: int
    run: int
    replays: int
    timeout_seconds: float
    failing_after_seconds: float
    retry_max_seconds: float
    failing_since: str | None
    created_at: str
    updated_at: str

    def signing_secrets(self, now: datetime) -> list[str]:
        """The current secret and every previous one whose overlap has not ended."""
        return [s["secret"] for s in self.secrets if _alive(s, now)]

    def view(self) -> dict[str, Any]:
        """What the API shows (never the secrets themselves)."""
        return {
            "subscription_id": self.id,
            "url": self.url,
            "types": self.types,
            "pipelines": self.pipelines,
            "status": self.status,
            "status_reason": self.status_reason,
            "cursor": self.cursor,
            "timeout_seconds": self.timeout_seconds,
            "failing_after_seconds": self.failing_after_seconds,
            "retry_max_seconds": self.retry_max_seconds,
            "secrets": [
                {"prefix": s["secret"][:10] + "...", "expires_at": s.get("expires_at")}
                for s in self.secrets
            ],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class AttemptRecord:
    subscription_id: str
    delivery_id: str
    position: int
    deal_id: str | None
    type: str
    attempt: int
    status_code: int | None
    error: str | None
    latency_ms: float
    at: str = field(default_factory=lambda: iso(utcnow()))


_COLUMNS = (
    "id, url, types, pipelines, secrets, status, status_reason, cursor, run, replays,"
    " timeout_seconds, failing_after_seconds, retry_max_seconds, failing_since,"
    " created_at, updated_at"
)
_ONE = f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = %s"


class SubscriptionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create_tables(self) -> None:
        self.db.execute_script(_ddl(self.db))

    # -- reading -------------------------------------------------------------------------------
    def get(self, subscription_id: str) -> Subscription | None:
        row = self.db.fetchone(_ONE, (subscription_id,))
        return _subscription(row) if row else None

    def all(self) -> list[Subscription]:
        return [
            _subscription(r)
            for r in self.db.fetchall(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY id")
        ]

    def runs(self) -> list[tuple[str, int, str]]:
        """(id, run, status) of every subscription: what the supervisor keeps running."""
        rows = self.db.fetchall(f"SELECT id, run, status FROM {TABLE} ORDER BY id")
        return [(r["id"], int(r["run"]), r["status"]) for r in rows]

    # -- writing -------------------------------------------------------------------------------
    def put(
        self,
        subscription_id: str,
        *,
        url: str,
        types: list[str],
        pipelines: list[str],
        secret: str | None,
        overlap_seconds: float,
        timeout_seconds: float,
        failing_after_seconds: float,
        retry_max_seconds: float,
        start_after: int,
    ) -> tuple[Subscription, bool, str | None]:
        """Create or replace; returns (subscription, created, new secret to show once)."""
        now = utcnow()
        with self.db.transaction() as cur:
            row = cur.execute(_ONE, (subscription_id,)).fetchone()
            current = _subscription(row) if row else None
            shown: str | None = None
            if current is None:
                shown = secret or new_secret()
                kept = [{"secret": shown, "expires_at": None}]
                cur.execute(
                    f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES"
                    " (%s, %s, %s, %s, %s, %s, NULL, %s, 1, 0, %s, %s, %s, NULL, %s, %s)",
                    (
                        subscription_id,
                        url,
                        json.dumps(types),
                        json.dumps(pipelines),
                        json.dumps(kept),
                        ACTIVE,
                        start_after,
                        timeout_seconds,
                        failing_after_seconds,
                        retry_max_seconds,
                        iso(now),
                        iso(now),
                    ),
                )
            else:
                kept = [s for s in current.secrets if _alive(s, now)]
                if secret is not None and secret != kept[0]["secret"]:
                    # Rotation: the new secret signs from now on; the old ones keep signing
                    # alongside until the overlap ends, so receivers can switch at leisure.
                    expires = iso(now + timedelta(seconds=overlap_seconds))
                    previous = [
                        {"secret": s["secret"], "expires_at": s.get("expires_at") or expires}
                        for s in kept
                    ]
                    kept = [{"secret": secret, "expires_at": None}, *previous]
                    shown = secret
                cur.execute(
                    f"UPDATE {TABLE} SET url = %s, types = %s, pipelines = %s, secrets = %s,"
                    " timeout_seconds = %s, failing_after_seconds = %s, retry_max_seconds = %s,"
                    " updated_at = %s WHERE id = %s",
                    (
                        url,
                        json.dumps(types),
                        json.dumps(pipelines),
                        json.dumps(kept),
                        timeout_seconds,
                        failing_after_seconds,
                        retry_max_seconds,
                        iso(now),
                        subscription_id,
                    ),
                )
            row = cur.execute(_ONE, (subscription_id,)).fetchone()
        return _subscription(row), current is None, shown

    def delete(self, subscription_id: str) -> bool:
        with self.db.transaction() as cur:
            count = cur.execute(f"DELETE FROM {TABLE} WHERE id = %s", (subscription_id,)).rowcount
            cur.execute(f"DELETE FROM {DELIVERIES} WHERE subscription_id = %s", (subscription_id,))
        return count > 0

    def pause(self, subscription_id: str, reason: str, *, run: int | None = None) -> bool:
        """Pause (by hand, or because the receiver answered 410); ``run`` limits it to the
        workflow run that saw the 410, so a late answer cannot pause a newer run."""
        sql = f"UPDATE {TABLE} SET status = %s, status_reason = %s, updated_at = %s WHERE id = %s"
        params: list[Any] = [PAUSED, reason, iso(utcnow()), subscription_id]
        if run is not None:
            sql += " AND run = %s"
            params.append(run)
        with self.db.transaction() as cur:
            return cur.execute(sql, params).rowcount > 0

    def resume(self, subscription_id: str) -> bool:
        """Active again, from its cursor, under a new workflow run."""
        with self.db.transaction() as cur:
            return (
                cur.execute(
                    f"UPDATE {TABLE} SET status = %s, status_reason = NULL, failing_since = NULL,"
                    " run = run + 1, updated_at = %s WHERE id = %s AND status = %s",
                    (ACTIVE, iso(utcnow()), subscription_id, PAUSED),
                ).rowcount
                > 0
            )

    def replay(self, subscription_id: str, from_position: int) -> bool:
        """Send again everything from a position on (under new delivery ids), and carry on."""
        with self.db.transaction() as cur:
            return (
                cur.execute(
                    f"UPDATE {TABLE} SET cursor = %s, replays = replays + 1, run = run + 1,"
                    " status = %s, status_reason = NULL, failing_since = NULL, updated_at = %s"
                    " WHERE id = %s",
                    (max(from_position - 1, 0), ACTIVE, iso(utcnow()), subscription_id),
                ).rowcount
                > 0
            )

    def advance(self, subscription_id: str, run: int, position: int) -> bool:
        """Move the cursor on after a batch was delivered; False once the run is superseded."""
        with self.db.transaction() as cur:
            return (
                cur.execute(
                    f"UPDATE {TABLE} SET cursor = %s WHERE id = %s AND run = %s AND cursor <= %s",
                    (position, subscription_id, run, position),
                ).rowcount
                > 0
                or cur.execute(
                    f"SELECT 1 FROM {TABLE} WHERE id = %s AND run = %s", (subscription_id, run)
                ).fetchone()
                is not None
            )

    def delivery_failed(self, subscription: Subscription, reason: str) -> None:
        """Note a failure; once failures have lasted ``failing_after_seconds`` it is failing."""
        now = utcnow()
        since = (
            datetime.fromisoformat(subscription.failing_since)
            if subscription.failing_since
            else now
        )
        failing = (now - since).total_seconds() >= subscription.failing_after_seconds
        with self.db.transaction() as cur:
            cur.execute(
                f"UPDATE {TABLE} SET failing_since = COALESCE(failing_since, %s),"
                " status = CASE WHEN status = %s AND %s THEN %s ELSE status END,"
                " status_reason = CASE WHEN status IN (%s, %s) AND %s THEN %s"
                " ELSE status_reason END WHERE id = %s AND run = %s",
                (
                    iso(since),
                    ACTIVE,
                    failing,
                    FAILING,
                    ACTIVE,
                    FAILING,
                    failing,
                    reason,
                    subscription.id,
                    subscription.run,
                ),
            )

    def delivered(self, subscription: Subscription) -> None:
        """A delivery went through: a failing subscription is healthy again."""
        if subscription.failing_since is None and subscription.status != FAILING:
            return
        with self.db.transaction() as cur:
            cur.execute(
                f"UPDATE {TABLE} SET failing_since = NULL,"
                " status = CASE WHEN status = %s THEN %s ELSE status END,"
                " status_reason = CASE WHEN status = %s THEN NULL ELSE status_reason END"
                " WHERE id = %s AND run = %s",
                (FAILING, ACTIVE, FAILING, subscription.id, subscription.run),
            )

    # -- the delivery log ----------------------------------------------------------------------
    def log_attempts(self, records: list[AttemptRecord]) -> None:
        if not records:
            return
        with self.db.transaction() as cur:
            cur.executemany(
                f"INSERT INTO {DELIVERIES} (subscription_id, delivery_id, position, deal_id, type,"
                " attempt, status_code, error, latency_ms, at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        r.subscription_id,
                        r.delivery_id,
                        r.position,
                        r.deal_id,
                        r.type,
                        r.attempt,
                        r.status_code,
                        r.error,
                        r.latency_ms,
                        r.at,
                    )
                    for r in records
                ],
            )

    def deliveries(
        self, subscription_id: str, *, limit: int = 100, before: int | None = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The delivery log, newest first; returns (rows, cursor for the next page)."""
        sql = (
            f"SELECT seq, delivery_id, position, deal_id, type, attempt, status_code, error,"
            f" latency_ms, at FROM {DELIVERIES} WHERE subscription_id = %s"
        )
        params: list[Any] = [subscription_id]
        if before is not None:
            sql += " AND seq < %s"
            params.append(before)
        rows = self.db.fetchall(sql + " ORDER BY seq DESC LIMIT %s", [*params, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        items = [
            {
                "delivery_id": r["delivery_id"],
                "position": int(r["position"]),
                "deal_id": r["deal_id"],
                "type": r["type"],
                "attempt": int(r["attempt"]),
                "status_code": None if r["status_code"] is None else int(r["status_code"]),
                "ok": r["status_code"] is not None and 200 <= int(r["status_code"]) < 300,
                "error": r["error"],
                "latency_ms": round(float(r["latency_ms"]), 2),
                "at": r["at"],
            }
            for r in rows
        ]
        return items, (int(rows[-1]["seq"]) if more else None)


def _alive(secret: dict[str, Any], now: datetime) -> bool:
    expires = secret.get("expires_at")
    return expires is None or datetime.fromisoformat(expires) > now


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=row["id"],
        url=row["url"],
        types=json.loads(row["types"]),
        pipelines=json.loads(row["pipelines"]),
        secrets=json.loads(row["secrets"]),
        status=row["status"],
        status_reason=row["status_reason"],
        cursor=int(row["cursor"]),
        run=int(row["run"]),
        replays=int(row["replays"]),
        timeout_seconds=float(row["timeout_seconds"]),
        failing_after_seconds=float(row["failing_after_seconds"]),
        retry_max_seconds=float(row["retry_max_seconds"]),
        failing_since=row["failing_since"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
