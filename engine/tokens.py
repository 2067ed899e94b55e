"""API tokens and the identities they carry.

A token is stored as its sha256 hash, shown once at creation, and carries a name (the actor
recorded on every event written with it), a set of scopes, and optionally an expiry and a rate
limit. Names are unique and can never imitate dealflow's own actors.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.domain.errors import ValidationFailed
from engine.domain.events import iso, utcnow
from engine.persistence.db import Database

TOKENS_TABLE = "dealflow_tokens"
BOOTSTRAP_NAME = "bootstrap"
SCOPES = ("ingest", "read", "audit", "admin")
# Letters, digits and -_. only: no spaces, no ':' (dealflow's own actors are `dealflow:...`,
# `import:crm`), so a token's name can never pass for one of them in a deal's history.
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
RESERVED_NAMES = frozenset({BOOTSTRAP_NAME, "dealflow", "system", "automation"})
# last_used_at is written at most this often per token and process: a write per request would
# cost more than the request.
LAST_USED_RESOLUTION_S = 1.0
DURATION_PATTERN = r"^\s*([0-9]+)\s*([smhdw]?)\s*$"
_DURATION = re.compile(DURATION_PATTERN)
# The longest lifetime a token may be given: past it, the expiry is no time a datetime can hold
# ("99999999999999999999w" was a 500: OverflowError; found by schemathesis, issue 9).
MAX_LIFETIME = timedelta(days=100 * 366)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name, what it may do, and how often (requests per minute)."""

    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    rate_limit: int | None = None

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class RateLimited(Exception):
    """The token spent its allowance; ``retry_after`` seconds until the next request is let in."""

    def __init__(self, name: str, limit: int, retry_after: float) -> None:
        super().__init__(f"token {name!r} is limited to {limit} requests per minute")
        self.limit = limit
        self.retry_after = retry_after


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValidationFailed(
            f"{text!r} is not a duration: use e.g. 30d, 12h, 90m or 3600", field="expires_in"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_LIFETIME.total_seconds():
        raise ValidationFailed(f"{text!r} is longer than 100 years", field="expires_in")
    return timedelta(seconds=seconds)


def _stamp(moment: datetime) -> str:
    """Fixed-width UTC time, so stored times compare as text in SQL on both stores."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class _Buckets:
    """A token bucket per token name (per process): ``limit`` requests a minute, bursts up to
    ``limit``. In-memory on purpose: a shared counter would cost a database write per request."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, name: str, limit: int) -> None:
        rate = limit / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._state.get(name, (float(limit), now))
            tokens = min(float(limit), tokens + (now - at) * rate)
            if tokens < 1.0:
                self._state[name] = (tokens, now)
                raise RateLimited(name, limit, (1.0 - tokens) / rate)
            self._state[name] = (tokens - 1.0, now)


class TokenStore:
    def __init__(self, db: Database, bootstrap_token: str | None = None) -> None:
        self.db = db
        self._bootstrap_digest = _digest(bootstrap_token) if bootstrap_token else None
        self._buckets = _Buckets()
        self._last_written: dict[str, float] = {}
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
        self._add_columns()

    def _add_columns(self) -> None:
        """Columns added after the first release, added to older stores on start."""
        wanted = {"expires_at": "TEXT", "rate_limit": "INTEGER", "last_used_at": "TEXT"}
        if self.db.is_postgres:
            self.db.execute_script(
                [
                    f"ALTER TABLE {TOKENS_TABLE} ADD COLUMN IF NOT EXISTS {name} {kind}"
                    for name, kind in wanted.items()
                ]
            )
            return
        present = {row["name"] for row in self.db.fetchall(f"PRAGMA table_info({TOKENS_TABLE})")}
        missing = [
            f"ALTER TABLE {TOKENS_TABLE} ADD COLUMN {name} {kind}"
            for name, kind in wanted.items()
            if name not in present
        ]
        if missing:
            self.db.execute_script(missing)

    # -- administration ------------------------------------------------------------------------
    def create(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        expires_in: timedelta | None = None,
        rate_limit: int | None = None,
    ) -> str:
        """Make a token and return it; only its hash is kept, so this is the one time it is seen."""
        wanted = sorted(set(scopes))
        unknown = [s for s in wanted if s not in SCOPES]
        if unknown or not wanted:
            raise ValidationFailed(f"scopes must be some of {', '.join(SCOPES)}", scopes=wanted)
        check_name(name)
        if expires_in is not None and expires_in <= timedelta(0):
            raise ValidationFailed("expires_in must be positive", field="expires_in")
        if rate_limit is not None and not 1 <= rate_limit <= 1_000_000:
            raise ValidationFailed(
                "rate_limit is requests per minute, 1 to 1,000,000", field="rate_limit"
            )
        token = "df_" + secrets.token_urlsafe(32)
        now = utcnow()
        expires_at = _stamp(now + expires_in) if expires_in is not None else None
        with self.db.transaction() as cur:
            # Names are the actors in deal histories: one name, one token, ever.
            cur.execute(f"SELECT 1 FROM {TOKENS_TABLE} WHERE name = %s", (name,))
            if cur.fetchone() is not None:
                raise ValidationFailed(
                    f"a token named {name!r} exists already (names are never reused: they "
                    "identify who wrote each event)",
                    field="name",
                )
            cur.execute(
                f"INSERT INTO {TOKENS_TABLE} (token_hash, name, scopes, created_at, expires_at,"
                " rate_limit) VALUES (%s, %s, %s, %s, %s, %s)",
                (_digest(token), name, ",".join(wanted), iso(now), expires_at, rate_limit),
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
        now = _stamp(utcnow())
        rows = self.db.fetchall(f"{_LISTING} ORDER BY created_at, name")
        return [_listed(r, now) for r in rows]

    def describe(self, name: str) -> dict[str, object] | None:
        """One token's listing (as :meth:`list` gives it), or None."""
        row = self.db.fetchone(f"{_LISTING} WHERE name = %s", (name,))
        return _listed(row, _stamp(utcnow())) if row else None

    def active_count(self) -> int:
        row = self.db.fetchone(
            f"SELECT COUNT(*) AS n FROM {TOKENS_TABLE} WHERE revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > %s)",
            (_stamp(utcnow()),),
        )
        return int(row["n"]) if row else 0

    # -- every request --------------------------------------------------------------------------
    def authenticate(self, token: str) -> Principal | None:
        digest = _digest(token)
        if self._bootstrap_digest and hmac.compare_digest(digest, self._bootstrap_digest):
            return Principal(BOOTSTRAP_NAME, frozenset(SCOPES))
        # One indexed lookup per request, no cache: a revocation takes effect on every replica at once.
        now = utcnow()
        row = self.db.fetchone(
            f"SELECT name, scopes, expires_at, rate_limit FROM {TOKENS_TABLE}"
            " WHERE token_hash = %s AND revoked_at IS NULL",
            (digest,),
        )
        if row is None or (row["expires_at"] is not None and row["expires_at"] <= _stamp(now)):
            return None
        self._touch(digest, now)
        return Principal(row["name"], frozenset(row["scopes"].split(",")), row["rate_limit"])

    def admit(self, principal: Principal) -> None:
        """Raise :class:`RateLimited` when the token is over its rate limit."""
        if principal.rate_limit is not None:
            self._buckets.take(principal.name, principal.rate_limit)

    def _touch(self, digest: str, now: datetime) -> None:
        clock = time.monotonic()
        if clock - self._last_written.get(digest, float("-inf")) < LAST_USED_RESOLUTION_S:
            return
        self._last_written[digest] = clock
        with self.db.transaction() as cur:
            cur.execute(
                f"UPDATE {TOKENS_TABLE} SET last_used_at = %s WHERE token_hash = %s",
                (_stamp(now), digest),
            )


_LISTING = (
    "SELECT name, scopes, created_at, revoked_at, expires_at, rate_limit, last_used_at"
    f" FROM {TOKENS_TABLE}"
)


def _listed(row: Any, now: str) -> dict[str, object]:
    return {
        "name": row["name"],
        "scopes": row["scopes"].split(","),
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
        "rate_limit_per_minute": row["rate_limit"],
        "last_used_at": row["last_used_at"],
        "active": row["revoked_at"] is None
        and (row["expires_at"] is None or row["expires_at"] > now),
    }


def check_name(name: object) -> None:
    if isinstance(name, str):
        lowered = name.lower()
        if lowered in RESERVED_NAMES or lowered.startswith("dealflow") or ":" in name:
            raise ValidationFailed(
                f"{name!r} is reserved for dealflow's own actors; choose another name",
                field="name",
            )
    if not isinstance(name, str) or not TOKEN_NAME.fullmatch(name):
        raise ValidationFailed(
            "a token's name is 1-100 letters, digits, '-', '_' or '.', starting with a letter "
            "or digit",
            field="name",
        )
