"""What must hold after processes were killed (or the database restarted) under load.

Read straight from the store, against what the load generator was told:

- every acknowledged event is in the log exactly once, and nothing refused is;
- a batch whose answer never arrived is in the log entirely or not at all;
- every deal's versions are 1..n with no gap;
- each escalation level fired at most once per stay in a stage, each nurture step at most
  once per enrolment, in the log, in the outbox and at the SMTP and webhook receivers;
- ``dealflow audit verify`` is clean and the read models equal a rebuild from zero.
"""

from __future__ import annotations

import collections
import subprocess
from dataclasses import dataclass, field
from typing import Any

from dealflow.bench.chaos_fleet import CountingSmtp, CountingWebhook, dealflow_command
from dealflow.bench.chaos_load import Sent
from engine.application import DealflowApp
from engine.domain.errors import NotFound
from projections.readmodel.compare import comparable_rows

AUTOMATION_TYPES = ("escalated", "flagged_stale", "nurture_enrolled", "nurture_touch_sent")


@dataclass
class Findings:
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def fail(self, what: str, examples: Any) -> None:
        self.violations.append(f"{what}: {examples}")


def deal_histories(app: DealflowApp, deal_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    histories: dict[str, list[dict[str, Any]]] = {}
    for deal_id in sorted(deal_ids):
        try:
            histories[deal_id] = app.history(deal_id)["events"]
        except NotFound:
            histories[deal_id] = []
    return histories


def check_log(sent: list[Sent], histories: dict[str, list[dict[str, Any]]], out: Findings) -> None:
    stored: collections.Counter[str] = collections.Counter(
        e["event_id"] for events in histories.values() for e in events
    )
    acked = {i for s in sent for i in s.acked}
    refused = {i for s in sent for i in s.rejected} - acked
    lost = sorted(i for i in acked if stored[i] == 0)
    doubled = sorted(i for i, n in stored.items() if n > 1)
    phantom = sorted(i for i in refused if stored[i])
    half = [
        s.event_ids[:3]
        for s in sent
        if s.kind == "batch"
        and not s.answered
        and 0 < sum(1 for i in s.event_ids if stored[i]) < len(s.event_ids)
    ]
    gaps = [
        d
        for d, events in histories.items()
        if [e["version"] for e in events] != list(range(1, len(events) + 1))
    ]
    out.figures.update(
        events_acknowledged=len(acked),
        events_found=sum(1 for i in acked if stored[i]),
        events_lost=len(lost),
        events_duplicated=len(doubled),
        events_in_log=sum(stored.values()),
        unknown_outcomes=sum(1 for s in sent if not s.answered),
    )
    for what, found in (
        ("acknowledged events missing from the log", lost),
        ("events stored more than once", doubled),
        ("refused events found in the log", phantom),
        ("half-written batches", half),
        ("deals with non-contiguous versions", gaps),
    ):
        if found:
            out.fail(what, found[:5])


def check_automation(histories: dict[str, list[dict[str, Any]]], out: Findings) -> None:
    """Escalation levels once per stay in a stage; nurture steps once per enrolment."""
    repeated: list[Any] = []
    escalations = touches = 0
    for deal_id, events in histories.items():
        stay = enrolment = 0
        seen: collections.Counter[tuple[Any, ...]] = collections.Counter()
        for event in events:
            kind, data = event["type"], event.get("data") or {}
            if kind in ("opened", "stage_changed", "reopened"):
                stay += 1
            elif kind == "nurture_enrolled":
                enrolment += 1
            elif kind == "escalated":
                seen[("escalated", stay, data.get("level"))] += 1
                escalations += 1
            elif kind == "flagged_stale":
                seen[("flagged", stay)] += 1
                escalations += 1
            elif kind == "nurture_touch_sent":
                seen[("touch", enrolment, data.get("sequence_id"), data.get("step"))] += 1
                touches += 1
        repeated += [(deal_id, key) for key, n in seen.items() if n > 1]
    out.figures.update(escalations_fired=escalations, nurture_touches=touches)
    if repeated:
        out.fail("automation effects recorded twice", repeated[:5])


def check_deliveries(
    app: DealflowApp, smtp: CountingSmtp | None, webhook: CountingWebhook | None, out: Findings
) -> None:
    rows = app.db.fetchall("SELECT id, deal_id, kind FROM dealflow_outbox")
    ids = collections.Counter(r["id"] for r in rows)
    out.figures["outbox_messages"] = len(rows)
    if any(n > 1 for n in ids.values()):
        out.fail("outbox rows repeated", [i for i, n in ids.items() if n > 1][:5])
    for name, receiver in (("smtp", smtp), ("webhook", webhook)):
        if receiver is None:
            continue
        received = dict(receiver.received)
        out.figures[f"{name}_received"] = sum(received.values())
        out.figures[f"{name}_distinct"] = len(received)
        twice = [k for k, n in received.items() if n > 1]
        out.figures[f"{name}_duplicates"] = len(twice)
        if twice:
            out.fail(f"messages delivered twice through {name}", twice[:5])
        unknown = [k for k in received if k not in ids]
        if unknown:
            out.fail(f"{name} deliveries with no outbox row", unknown[:5])


def check_audit(env: dict[str, str], out: Findings) -> None:
    run = subprocess.run(
        [dealflow_command(), "audit", "verify", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out.figures["audit_verify_exit"] = run.returncode
    if run.returncode != 0:
        out.fail("dealflow audit verify", (run.stdout + run.stderr)[-500:])


def check_read_models(app: DealflowApp, env: dict[str, str], out: Findings) -> None:
    """The read models as the runner left them, against a rebuild from zero.

    The runner was stopped (SIGTERM) wherever it was; it is first caught up here exactly as a
    restarted runner would resume, so that both sides are compared at the same position."""
    from projections.runtime import ProjectionsService

    ProjectionsService(app, run=False).catch_up()
    before = comparable_rows(app)
    run = subprocess.run(
        [dealflow_command(), "projections", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if run.returncode != 0:
        out.fail("dealflow projections rebuild", (run.stdout + run.stderr)[-500:])
        return
    after = comparable_rows(app)
    differ = {
        table: (len(before[table]), len(after[table]))
        for table in before
        if before[table] != after[table]
    }
    out.figures["read_model_rows"] = sum(len(rows) for rows in after.values())
    if differ:
        example = next(iter(differ))
        only = sorted(set(before[example]) ^ set(after[example]))[:2]
        out.fail("read models differ from a rebuild (rows before, after)", (differ, only))
