"""The message ledger: every message automation sends, keyed by a deterministic id.

Rows are claimed before delivery and marked after, so a retried activity sees that its message
already went out and does not send it again. With no channel configured the row itself is the
delivery ("landed in the outbox"); ``GET /v1/outbox`` reads this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.domain.events import iso, utcnow
from engine.persistence.db import Database

TABLE = "dealflow_outbox"

_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " id TEXT PRIMARY KEY,"
    " deal_id TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " channel TEXT NOT NULL,"
    " delivery TEXT NOT NULL,"
    " recipient TEXT,"
    " subject TEXT,"
    " body TEXT,"
    " status TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " created_at TEXT NOT NULL,"
    " sent_at TEXT)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_deal ON {TABLE} (deal_id, created_at)",
)

PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass(frozen=True)
class Message:
    id: str
    deal_id: str
    kind: str  # "nurture" or "escalation"
    channel: str  # the step's channel (email, task, call, webhook) or "email" for escalations
    to: str | None
    subject: str
    body: str
    html: str | None = None  # an HTML rendering of the body (the pipeline review has one)


@dataclass(frozen=True)
class Entry:
    message: Message
    delivery: str
    status: str
    attempts: int


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create_tables(self) -> None:
        self.db.execute_script(_DDL)
        self._add_html_column()

    def _add_html_column(self) -> None:
        """Tables created before messages could carry HTML gain the column (idempotent)."""
        if self.db.is_postgres:
            self.db.execute_script([f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS html TEXT"])
            return
        columns = {row["name"] for row in self.db.fetchall(f"PRAGMA table_info({TABLE})")}
        if "html" not in columns:
            self.db.execute_script([f"ALTER TABLE {TABLE} ADD COLUMN html TEXT"])

    def claim(self, message: Message, delivery: str, status: str = PENDING) -> Entry:
        """Insert the message once, then return the stored row, new or earlier.

        ``status`` is ``pending`` for a message a channel still has to deliver, ``sent`` for one
        whose delivery is this very row (the outbox channel).
        """
        return self.claim_many([(message, delivery, status)])[0]

    def claim_many(self, claims: list[tuple[Message, str, str]]) -> list[Entry]:
        """:meth:`claim` for many messages in one transaction."""
        now = iso(utcnow())
        rows = [
            (
                m.id,
                m.deal_id,
                m.kind,
                m.channel,
                delivery,
                m.to,
                m.subject,
                m.body,
                m.html,
                status,
                1 if status == SENT else 0,
                now,
                now if status == SENT else None,
            )
            for m, delivery, status in claims
        ]
        with self.db.transaction() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} (id, deal_id, kind, channel, delivery, recipient, subject, body,"
                " html, status, attempts, created_at, sent_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                rows,
            )
            found = {}
            wanted = list(dict.fromkeys(m.id for m, _, _ in claims))
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join(["%s"] * len(chunk))
                for row in cur.execute(
                    f"SELECT * FROM {TABLE} WHERE id IN ({marks})", chunk
                ).fetchall():
                    found[row["id"]] = row
        return [
            Entry(
                _message(found[m.id]),
                found[m.id]["delivery"],
                found[m.id]["status"],
                int(found[m.id]["attempts"]),
            )
            for m, _, _ in claims
        ]

    def mark_sent(self, message_id: str) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                f"UPDATE {TABLE} SET status = %s, attempts = attempts + 1, last_error = NULL, sent_at = %s"
                " WHERE id = %s",
                (SENT, iso(utcnow()), message_id),
            )

    def mark_failed(self, message_id: str, error: str) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                f"UPDATE {TABLE} SET status = %s, attempts = attempts + 1, last_error = %s WHERE id = %s",
                (FAILED, error[:2000], message_id),
            )

    def get(self, message_id: str) -> dict[str, Any] | None:
        row = self.db.fetchone(f"SELECT * FROM {TABLE} WHERE id = %s", (message_id,))
        return _view(row) if row else None

    def list(
        self,
        *,
        deal_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        where, params = [], []
        for column, value in (("deal_id", deal_id), ("kind", kind), ("status", status)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.fetchall(
            f"SELECT * FROM {TABLE}{clause} ORDER BY created_at, id LIMIT %s", (*params, limit)
        )
        return [_view(row) for row in rows]


def _message(row: Any) -> Message:
    return Message(
        row["id"],
        row["deal_id"],
        row["kind"],
        row["channel"],
        row["recipient"],
        row["subject"] or "",
        row["body"] or "",
        row["html"],
    )


def _view(row: Any) -> dict[str, Any]:
    """The contract's message shape, plus delivery details."""
    return {
        "id": row["id"],
        "deal_id": row["deal_id"],
        "kind": row["kind"],
        "channel": row["channel"],
        "to": row["recipient"],
        "subject": row["subject"],
        "body": row["body"],
        "html": row["html"],
        "created_at": row["created_at"],
        "delivery": row["delivery"],
        "status": row["status"],
        "attempts": int(row["attempts"]),
        "last_error": row["last_error"],
        "sent_at": row["sent_at"],
    }
