"""A deal's score split into the part that only changes when the deal does and the part that
only changes with the clock, so that a pipeline's open deals can be ranked without loading them.

A score is a pure function of the deal's state, the moment and the *basis* (the pipeline's
latest model, or its point rules, or nothing). Under a model the time enters through two
features only, ``days_in_stage`` and ``days_open``, each a clipped straight line
(:func:`engine.scoring.model.predict`): so ``decision(t) = static + in_stage(t) + open(t)``,
where ``static`` is fixed per deal version and basis and the two time terms are computed from
the deal's two timestamps at any moment (in SQL, over a whole pipeline). Point rules don't
read the clock at all: their score is the static part.

The ranking that results is exact up to float rounding between SQL and Python; the caller
rescores the page it returns with :func:`engine.scoring.service.score_deal` and falls back to
scoring every deal when the two disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.domain.deal_state import DealState
from engine.domain.pipeline import PipelineDefinition, Scoring, criterion_holds
from engine.scoring.features import features, snapshot
from engine.scoring.model import decision_terms

TIME_FEATURES = ("days_in_stage", "days_open")
# The deal timestamp each time feature counts the days from.
TIME_ORIGINS = {"days_in_stage": "stage_entered_at", "days_open": "opened_at"}

MODEL, RULES, NONE = "model", "rules", "none"
_ANY_MOMENT = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Basis:
    """What a pipeline's open deals are scored by now: ``key`` names it exactly (a cached static
    part is valid for one key), ``kind`` is ``model``, ``rules`` or ``none``."""

    key: str
    kind: str
    scoring: Scoring
    model: tuple[int, dict[str, Any]] | None


@dataclass(frozen=True)
class TimeTerm:
    """``coef * (clip(days(origin), low, high) - mean) / scale``, as :func:`predict` adds it."""

    feature: str
    origin: str
    coef: float
    mean: float
    scale: float
    low: float
    high: float


def uses_model(scoring: Scoring, model: tuple[int, dict[str, Any]] | None) -> bool:
    """A recorded model scores the deals once it was trained on enough closed deals."""
    return model is not None and model[1]["trained_on"]["deals"] >= scoring.min_closed_deals


def basis_for(
    definition: PipelineDefinition, version: int, model: tuple[int, dict[str, Any]] | None
) -> Basis:
    scoring = definition.scoring or Scoring()
    if uses_model(scoring, model):
        assert model is not None
        return Basis(f"model:{model[0]}", MODEL, scoring, model)
    if scoring.rules:
        # The rules live in the pipeline definition: its version names them.
        return Basis(f"rules:{version}", RULES, scoring, None)
    return Basis(NONE, NONE, scoring, None)


def rules_score(scoring: Scoring, deal: DealState) -> int:
    total = scoring.base + sum(
        rule.points for rule in scoring.rules if criterion_holds(rule.when, deal)
    )
    return max(0, min(100, total))


def static_part(basis: Basis, deal: DealState) -> float:
    """The part of an open deal's score that does not move with the clock: under a model the
    decision value without the time terms, under rules the score itself."""
    if basis.kind == RULES:
        return float(rules_score(basis.scoring, deal))
    if basis.kind != MODEL or basis.model is None:
        return 0.0
    params = basis.model[1]["params"]
    row = features(snapshot(deal), _ANY_MOMENT)  # the time features are left out below
    decision = float(params["intercept"])
    for name, _, added, _ in decision_terms(params, row):
        if name not in TIME_FEATURES:
            decision += added
    return decision


def time_terms(basis: Basis) -> list[TimeTerm]:
    if basis.kind != MODEL or basis.model is None:
        return []
    numeric = basis.model[1]["params"]["numeric"]
    return [
        TimeTerm(
            feature=name,
            origin=TIME_ORIGINS[name],
            coef=float(numeric[name]["coef"]),
            mean=float(numeric[name]["mean"]),
            scale=float(numeric[name]["scale"]) or 1.0,
            low=float(numeric[name]["min"]),
            high=float(numeric[name]["max"]),
        )
        for name in TIME_FEATURES
        if name in numeric
    ]


def calibration(basis: Basis) -> tuple[float, float]:
    """``(a, b)`` of ``p = 1 / (1 + exp(a * decision + b))``."""
    assert basis.model is not None
    found = basis.model[1]["params"]["calibration"]
    return float(found["a"]), float(found["b"])
