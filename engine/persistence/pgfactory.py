"""eventsourcing's PostgreSQL factory, with the timeouts an outage needs.

eventsourcing's pool has a connect timeout but no statement timeout, no TCP keepalives and no
connect timeout on the socket itself, and its recorders retry a failed connection ten times.
This factory sets those on every pooled connection and puts a :class:`StoreGate` in front of
the pool, so that requests during a database outage fail within seconds instead of minutes.
"""

from __future__ import annotations

from typing import Any

import psycopg
from eventsourcing.postgres import PostgresFactory

from engine.persistence.outage import StoreGate

# Keys dealflow adds to eventsourcing's environment (see StoreSettings.eventsourcing_env),
# filled from engine.settings.Settings. Lower case: they are not environment variables.
STATEMENT_TIMEOUT = "dealflow_db_statement_timeout"  # seconds, 0 = none
SOCKET_CONNECT_TIMEOUT = "dealflow_db_socket_connect_timeout"  # seconds
PROBE_EVERY = "dealflow_db_probe_every"  # seconds between probes while the store is down


class DealflowPostgresFactory(PostgresFactory):
    def __init__(self, env: Any) -> None:
        super().__init__(env)
        kwargs: dict[str, Any] = self.datastore.pool.kwargs  # type: ignore[assignment]
        statement_timeout_ms = int(float(self.env.get(STATEMENT_TIMEOUT) or 0) * 1000)
        kwargs.update(
            # libpq's own limit on opening the socket (an unreachable host, not only a refusal).
            connect_timeout=max(2, int(float(self.env.get(SOCKET_CONNECT_TIMEOUT) or 5))),
            # A peer that vanished without closing the socket is found within ~15 s.
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
        # No JIT: dealflow's statements are short, and PostgreSQL's cost estimate for reading a
        # batch's deals (a few hundred primary-key probes) crossed jit_above_cost, so every
        # 5,000-event batch compiled that plan again (3-4 ms, over 100 ms on a connection's
        # first use) to run an 8 ms query. The read side already turned it off per query.
        options = ["-c jit=off"]
        if statement_timeout_ms > 0:
            options.append(f"-c statement_timeout={statement_timeout_ms}")
        kwargs["options"] = " ".join(options)
        pool = self.datastore.pool
        # Give up reconnecting in the background after a few seconds: a later request starts a
        # fresh attempt at once, instead of waiting out a backoff that grew during the outage.
        pool.reconnect_timeout = 5.0

        def probe() -> None:
            psycopg.connect(str(pool.conninfo), **{**kwargs, "connect_timeout": 2}).close()

        gate = StoreGate(probe, probe_every=float(self.env.get(PROBE_EVERY) or 1.0))
        datastore: Any = self.datastore
        datastore.dealflow_gate = gate
        # transaction() and cursor() call self.get_connection(): the instance attribute wins.
        datastore.get_connection = gate.guard(datastore.get_connection)
