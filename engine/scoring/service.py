"""Scoring models as versioned, recorded definitions; a deal's score and its reasons.

A trained model is recorded as a definition of kind ``scoring_model`` keyed by pipeline (the
same versioned, append-only store as pipelines and sequences): its parameters, the samples it
was trained on (how many, how many won, a digest of their ids, outcomes and close times, and
the cut date if any) and the library that fitted it. A body equal to the current one keeps its
version, so a retrain on unchanged history records nothing new. A deal's answer names the
model version and shows the inputs it was scored on, so the score can be redone from the
record with :func:`engine.scoring.model.predict`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from engine.domain.deal_state import DealState
from engine.domain.errors import NotFound
from engine.domain.pipeline import PipelineDefinition, Scoring, criterion_holds
from engine.scoring.features import features, snapshot
from engine.scoring.history import Sample, closed_samples
from engine.scoring.model import ALGORITHM, DEFAULT_C, fit, parameters, predict
from engine.scoring.ranking import rules_score, uses_model

MODEL = "scoring_model"  # the definition kind models are recorded under
MODEL_ACTOR = "dealflow:scoring"
TOP_REASONS = 5


def settings(definition: PipelineDefinition) -> Scoring:
    return definition.scoring or Scoring()


def samples_digest(samples: list[Sample]) -> str:
    text = "\n".join(f"{s.deal_id}\t{s.closed_at.isoformat()}\t{int(s.won)}" for s in samples)
    return hashlib.sha256(text.encode()).hexdigest()


def train_model(
    samples: list[Sample], *, closed_before: datetime | None = None, seed: int = 0
) -> dict[str, Any]:
    """The body a model is recorded with (a pure function of the samples and the seed)."""
    import sklearn

    rows = [s.features for s in samples]
    won = [s.won for s in samples]
    params = parameters(fit(rows, won, c=DEFAULT_C, seed=seed), rows)
    return {
        "algorithm": ALGORITHM,
        "library": f"scikit-learn {sklearn.__version__}",
        "seed": seed,
        "trained_on": {
            "deals": len(samples),
            "won": sum(won),
            "closed_before": closed_before.isoformat() if closed_before else None,
            "samples_sha256": samples_digest(samples),
        },
        "params": params,
    }


def train(
    app: Any, pipeline_id: str, *, closed_before: datetime | None = None, seed: int = 0
) -> dict[str, Any]:
    """Train ``pipeline_id``'s model from the store and record it, unless too few deals are
    closed (or all closed one way): then nothing is recorded and the point rules go on."""
    definition = app.pipeline_ref(pipeline_id).definition
    samples, position = closed_samples(app, pipeline_id)
    if closed_before is not None:
        samples = [s for s in samples if s.closed_at < closed_before]
    won = sum(s.won for s in samples)
    result: dict[str, Any] = {
        "pipeline_id": pipeline_id,
        "deals": len(samples),
        "won": won,
        "position": position,
    }
    needed = settings(definition).min_closed_deals
    if len(samples) < needed or won == 0 or won == len(samples):
        why = f"{len(samples)} closed deals, {won} won: a model needs {needed}, of both outcomes"
        return {**result, "status": "too_few", "reason": why, "version": None}
    body = train_model(samples, closed_before=closed_before, seed=seed)
    version = app.put_definition(MODEL, pipeline_id, body, MODEL_ACTOR)
    return {**result, "status": "trained", "version": version}


def latest_model(app: Any, pipeline_id: str) -> tuple[int, dict[str, Any]] | None:
    """The newest recorded model (its own event only: a model retrained daily for a year has
    hundreds of versions, and every scored answer asks for the newest), or None."""
    try:
        return app.read_definition(MODEL, pipeline_id)  # type: ignore[no-any-return]
    except NotFound:
        return None


def score_deal(
    deal: DealState,
    definition: PipelineDefinition,
    at: datetime,
    model: tuple[int, dict[str, Any]] | None,
) -> dict[str, Any]:
    """``score`` (0-100 or null), ``score_kind`` (``model``, ``rules``, ``none``, or ``closed``
    for a closed deal), ``score_model`` and ``score_reasons`` (signed, strongest first)."""
    empty: dict[str, Any] = {
        "score": None,
        "score_model": None,
        "score_reasons": [],
        "score_inputs": None,
    }
    if deal.is_closed:
        return {**empty, "score_kind": "closed"}
    config = settings(definition)
    if model is not None and uses_model(config, model):
        version, body = model
        inputs = features(snapshot(deal), at)
        probability, contributions = predict(body["params"], inputs)
        reasons = sorted(
            (c for c in contributions if c["contribution"] != 0),
            key=lambda c: (-abs(c["contribution"]), c["feature"]),
        )[:TOP_REASONS]
        return {
            "score": round(100 * probability),
            "score_kind": "model",
            "score_probability": round(probability, 6),
            "score_model": {"pipeline_id": deal.pipeline_id, "version": version},
            "score_reasons": reasons,
            "score_inputs": inputs,
        }
    if config.rules:
        held = [rule for rule in config.rules if criterion_holds(rule.when, deal)]
        reasons = sorted(
            ({"rule": rule.id, "points": rule.points} for rule in held),
            key=lambda r: (-abs(r["points"]), r["rule"]),
        )
        return {
            **empty,
            "score": rules_score(config, deal),
            "score_kind": "rules",
            "score_reasons": reasons,
        }
    return {**empty, "score_kind": "none"}


def score_view(app: Any, deal: DealState, at: datetime) -> dict[str, Any]:
    """The score fields of one deal's answer (the pipeline's latest recorded model)."""
    definition = app.pipeline_ref(deal.pipeline_id).definition
    return score_deal(deal, definition, at, latest_model(app, deal.pipeline_id))
