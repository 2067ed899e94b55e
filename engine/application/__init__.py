"""The dealflow application: the service layer between senders and the Deal aggregates.

Split by concern (each module builds on the ones before it):

- ``messages``: what goes in and comes out (``Command``, ``Outcome``, ``request_hash``);
- ``automation``: the commands dealflow's own automation sends, and their one builder;
- ``definitions``: versioned pipelines, sequences and the team directory;
- ``loading``: deals and idempotency keys for a batch, the cache of recent deals, one deal's reads;
- ``views``: the contract's read shapes (deal state, history);
- ``handlers``: which Deal method handles which command;
- ``write``: the one write path, ``ingest`` (decide, save) and ``record_automation``;
- ``stream``: bulk writes that decide the next batch while the last one is stored;
- ``app``: ``DealflowApp``, assembled from the above.
"""

from engine.application.app import DealflowApp
from engine.application.automation import automation_command
from engine.application.loading import RecentDeals
from engine.application.messages import (
    MAX_SAVE_ATTEMPTS,
    SYSTEM_ACTOR,
    Command,
    Outcome,
    request_hash,
)
from engine.application.views import deal_view, history_item, is_stale, replay
from engine.commands import AUTOMATION_MODELS, AutomationCommand

__all__ = [
    "AUTOMATION_MODELS",
    "MAX_SAVE_ATTEMPTS",
    "SYSTEM_ACTOR",
    "AutomationCommand",
    "Command",
    "DealflowApp",
    "Outcome",
    "RecentDeals",
    "automation_command",
    "deal_view",
    "history_item",
    "is_stale",
    "replay",
    "request_hash",
]
