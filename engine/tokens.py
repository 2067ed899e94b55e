"""API tokens: stored as sha256 hashes, shown once at creation, each with a set of scopes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.domain.errors import ValidationFailed
from engine.domain.events import iso, utcnow
from engine.persistence.db import Database

TOKENS_TABLE = "dealflow_tokens"
BOOTSTRAP_NAME = "bootstrap"
SCOPES = ("ingest", "read", "audit", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and what it may do."""

    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    def __init__(self, db: Database, bootstrap_token: str | None = None) -> None:
        self.db = db
        self._bootstrap_digest = _digest(bootstrap_token) if bootstrap_token else None
        db.execute_script(
            [
                f"CREATE TABLE IF NOT EXISTS {TOKENS_TABLE} ("
                " token_hash TEXT PRIMARY KEY,"
                " name TEXT NOT NULL,"
                " scopes TEXT NOT NULL,"
                " created_at TEXT NOT NULL,"
                " revoked_at TEXT)"
            ]
        )

    def create(self, name: str, scopes: Iterable[str]) -> str:
        """Make a token and return it; only its hash is kept, so this is the one time it is seen."""
        wanted = sorted(set(scopes))
        unknown = [s for s in wanted if s not in SCOPES]
        if unknown or not wanted:
            raise ValidationFailed(f"scopes must be some of {', '.join(SCOPES)}", scopes=wanted)
        if not name or len(name) > 200:
            raise ValidationFailed("a token needs a name of 1-200 characters", field="name")
        token = "df_" + secrets.token_urlsafe(32)
        with self.db.transaction() as cur:
            cur.execute(
                f"INSERT INTO {TOKENS_TABLE} (token_hash, name, scopes, created_at) VALUES (%s, %s, %s, %s)",
                (_digest(token), name, ",".join(wanted), iso(utcnow())),
            )
        return token

    def revoke(self, name: str) -> int:
        with self.db.transaction() as cur:
            cur.execute(
                f"UPDATE {TOKENS_TABLE} SET revoked_at = %s WHERE name = %s AND revoked_at IS NULL",
                (iso(utcnow()), name),
            )
            return cur.rowcount

    def list(self) -> list[dict[str, object]]:
        rows = self.db.fetchall(
            f"SELECT name, scopes, created_at, revoked_at FROM {TOKENS_TABLE} ORDER BY created_at"
        )
        return [
            {
                "name": r["name"],
                "scopes": r["scopes"].split(","),
                "created_at": r["created_at"],
                "revoked_at": r["revoked_at"],
            }
            for r in rows
        ]

    def authenticate(self, token: str) -> Principal | None:
        digest = _digest(token)
        if self._bootstrap_digest and hmac.compare_digest(digest, self._bootstrap_digest):
            return Principal(BOOTSTRAP_NAME, frozenset(SCOPES))
        # One indexed lookup per request, no cache: a revocation takes effect on every replica at once.
        row = self.db.fetchone(
            f"SELECT name, scopes FROM {TOKENS_TABLE} WHERE token_hash = %s AND revoked_at IS NULL",
            (digest,),
        )
        return Principal(row["name"], frozenset(row["scopes"].split(","))) if row else None
