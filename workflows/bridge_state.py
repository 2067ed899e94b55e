"""The bridge's own state: its tables (tracked position, active nurture runs), what one batch
decides, its counters, and a workflow's status."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from engine.application import Command, DealflowApp
from workflows.models import EscalationInput

TRACKING = "dealflow_bridge_tracking"
RUNS = "dealflow_nurture_runs"
_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TRACKING} (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {RUNS} ("
    " workflow_id TEXT PRIMARY KEY, deal_id TEXT NOT NULL, sequence_id TEXT NOT NULL,"
    " active INTEGER NOT NULL DEFAULT 1)",
    f"CREATE INDEX IF NOT EXISTS {RUNS}_deal ON {RUNS} (deal_id, active)",
)


def create_tables(app: DealflowApp) -> None:
    app.db.execute_script(_DDL)


@dataclass
class BridgeStats:
    batches: int = 0
    events: int = 0
    started: int = 0
    already_started: int = 0
    signals: int = 0
    cancels: int = 0
    enrollments: int = 0
    start_times: list[float] = field(default_factory=list)  # monotonic time of each new start
    stays: int = 0  # stays handed to escalation windows
    # monotonic time of each start and of each batch of stays handed over
    handoff_times: list[float] = field(default_factory=list)


@dataclass
class BridgeBatch:
    """What one batch decided: automation commands, per-deal Temporal effects, bookkeeping."""

    commands: list[Command] = field(default_factory=list)
    effects: dict[str, list[Callable[[], Awaitable[None]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    new_runs: list[tuple[str, str, str]] = field(default_factory=list)
    ended_runs: list[str] = field(default_factory=list)
    # Stays to hand to each escalation window (workflow id → stays).
    stays: dict[str, list[EscalationInput]] = field(default_factory=lambda: defaultdict(list))


class RunIndex:
    """Active nurture runs per deal: the table, overlaid with what this batch decided."""

    def __init__(self, app: DealflowApp) -> None:
        self.app = app
        self.cache: dict[str, list[tuple[str, str]]] = {}

    def preload(self, deal_ids: Iterable[str]) -> None:
        """The active runs of many deals in a few queries (not one per deal of a batch)."""
        wanted = [d for d in dict.fromkeys(deal_ids) if d not in self.cache]
        for first in range(0, len(wanted), 500):
            chunk = wanted[first : first + 500]
            marks = ",".join(["%s"] * len(chunk))
            rows = self.app.db.fetchall(
                f"SELECT deal_id, workflow_id, sequence_id FROM {RUNS}"
                f" WHERE active = 1 AND deal_id IN ({marks})",
                tuple(chunk),
            )
            for deal_id in chunk:
                self.cache[deal_id] = []
            for row in rows:
                self.cache[row["deal_id"]].append((row["workflow_id"], row["sequence_id"]))

    def active(self, deal_id: str) -> list[tuple[str, str]]:
        if deal_id not in self.cache:
            rows = self.app.db.fetchall(
                f"SELECT workflow_id, sequence_id FROM {RUNS} WHERE deal_id = %s AND active = 1",
                (deal_id,),
            )
            self.cache[deal_id] = [(r["workflow_id"], r["sequence_id"]) for r in rows]
        return self.cache[deal_id]

    def add(self, deal_id: str, sequence_id: str, workflow_id: str) -> None:
        runs = self.active(deal_id)
        if (workflow_id, sequence_id) not in runs:
            runs.append((workflow_id, sequence_id))

    def end(self, deal_id: str, sequence_id: str) -> None:
        self.cache[deal_id] = [r for r in self.active(deal_id) if r[1] != sequence_id]


async def workflow_status(client: Client, workflow_id: str) -> WorkflowExecutionStatus | None:
    try:
        return (await client.get_workflow_handle(workflow_id).describe()).status
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
