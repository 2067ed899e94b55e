"""What one incoming event may hold: sizes and how far its business time may lie ahead.

Read once from the environment (``limits()``); tests change the environment and call
``limits.cache_clear()``.

- ``DEALFLOW_MAX_EVENT_BYTES`` (default 131072): the JSON size of one event.
- ``DEALFLOW_MAX_ATTRIBUTES_BYTES`` (default 65536): the JSON size of its ``attributes``.
- ``DEALFLOW_MAX_CLOCK_SKEW`` (seconds, default 900): how far ``occurred_at`` may be ahead of
  the server's clock. Business time never runs backwards per deal, so a time far in the future
  would lock the deal for every ordinary event after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from engine.settings import Settings


@dataclass(frozen=True)
class Limits:
    max_event_bytes: int = 128 * 1024
    max_attributes_bytes: int = 64 * 1024
    max_clock_skew: timedelta = timedelta(minutes=15)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        settings = Settings.load(environ)
        return cls(
            max_event_bytes=settings.max_event_bytes,
            max_attributes_bytes=settings.max_attributes_bytes,
            max_clock_skew=timedelta(seconds=settings.max_clock_skew),
        )


@lru_cache(maxsize=1)
def limits() -> Limits:
    return Limits.from_env()
