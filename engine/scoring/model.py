"""Training with scikit-learn, and the recorded parameters that score and explain a deal.

The model is a logistic regression over one-hot categorical fields and standardised numbers,
calibrated with a sigmoid fitted on cross-validated predictions (``CalibratedClassifierCV``
with ``ensemble=False``: one regression fitted on every sample, one calibration). Its fitted
numbers are recorded as plain JSON (categories, coefficients, means, scales, calibration), not
as a pickle: an auditor reads them, and :func:`predict` redoes a score from them and the
deal's recorded inputs. Training is deterministic (lbfgs, seeded folds), so the same samples
give the same parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from engine.scoring.features import ACTIVITY_PREFIX, CATEGORICAL, NUMERIC

ALGORITHM = "logistic_regression+sigmoid_calibration"
DEFAULT_C = 1.0
FOLDS = 5


MAX_ACTIVITY_TYPES = 20


def numeric_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The fixed numbers, then the activity types the rows have (the most common first, at
    most MAX_ACTIVITY_TYPES; a deal without one has a count of 0)."""
    seen: dict[str, int] = {}
    for row in rows:
        for name in row:
            if name.startswith(ACTIVITY_PREFIX):
                seen[name] = seen.get(name, 0) + 1
    common = sorted(seen, key=lambda name: (-seen[name], name))[:MAX_ACTIVITY_TYPES]
    return [*NUMERIC, *sorted(common)]


def _matrix(rows: Sequence[dict[str, Any]], numbers: Sequence[str]) -> Any:
    import numpy as np

    return np.array(
        [
            [row[name] for name in CATEGORICAL] + [float(row.get(name, 0)) for name in numbers]
            for row in rows
        ],
        dtype=object,
    )


def fit(
    rows: Sequence[dict[str, Any]], won: Sequence[bool], *, c: float = DEFAULT_C, seed: int = 0
) -> Any:
    """The fitted scikit-learn estimator (``predict_proba`` on :func:`_matrix` rows)."""
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    n_cat = len(CATEGORICAL)
    numbers = numeric_names(rows)
    columns = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), list(range(n_cat))),
            ("num", StandardScaler(), list(range(n_cat, n_cat + len(numbers)))),
        ]
    )
    base = Pipeline([("features", columns), ("model", LogisticRegression(C=c, max_iter=5000))])
    labels = np.array([1 if w else 0 for w in won])
    folds = min(FOLDS, int(labels.sum()), int(len(labels) - labels.sum()))
    model = CalibratedClassifierCV(
        base,
        method="sigmoid",
        cv=StratifiedKFold(n_splits=max(folds, 2), shuffle=True, random_state=seed),
        ensemble=False,
    )
    model.fit(_matrix(rows, numbers), labels)
    return model


def parameters(model: Any, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fitted numbers as JSON, with each categorical field's average contribution over the
    training rows (the baseline its reasons are measured from)."""
    calibrated = model.calibrated_classifiers_[0]
    base = calibrated.estimator
    calibrator = calibrated.calibrators[0]
    columns = base.named_steps["features"]
    encoder = columns.named_transformers_["cat"]
    scaler = columns.named_transformers_["num"]
    regression = base.named_steps["model"]
    coef = [float(v) for v in regression.coef_[0]]
    categorical: dict[str, dict[str, float]] = {}
    offset = 0
    for name, categories in zip(CATEGORICAL, encoder.categories_, strict=True):
        categorical[name] = {
            str(category): coef[offset + i] for i, category in enumerate(categories)
        }
        offset += len(categories)
    numeric = {
        name: {
            "coef": coef[offset + i],
            "mean": float(scaler.mean_[i]),
            "scale": float(scaler.scale_[i]),
            # The range seen in training: a value beyond it is scored as its nearest end, so a
            # deal open far longer than any closed one is not extrapolated along a straight line.
            "min": min(float(row.get(name, 0)) for row in rows),
            "max": max(float(row.get(name, 0)) for row in rows),
        }
        for i, name in enumerate(numeric_names(rows))
    }
    baselines = {
        name: sum(categorical[name].get(row[name], 0.0) for row in rows) / len(rows)
        for name in CATEGORICAL
    }
    return {
        "algorithm": ALGORITHM,
        "intercept": float(regression.intercept_[0]),
        "categorical": categorical,
        "numeric": numeric,
        "baselines": baselines,
        # scikit-learn's sigmoid calibration: p = 1 / (1 + exp(a * f + b)), f the regression's
        # decision value.
        "calibration": {"a": float(calibrator.a_), "b": float(calibrator.b_)},
        "c": float(regression.C),
    }


def decision_terms(
    params: dict[str, Any], row: dict[str, Any]
) -> list[tuple[str, Any, float, float]]:
    """Each feature's ``(name, value, what it adds to the decision, its raw contribution)``
    under recorded ``params``: the decision is the intercept plus the third items, in this
    order (``engine.scoring.ranking`` sums them without the time features)."""
    terms: list[tuple[str, Any, float, float]] = []
    for name in CATEGORICAL:
        weight = float(params["categorical"][name].get(str(row[name]), 0.0))
        terms.append((name, row[name], weight, weight - float(params["baselines"][name])))
    for name, spec in params["numeric"].items():
        scale = float(spec["scale"]) or 1.0
        given = float(row.get(name, 0))
        value = min(max(given, float(spec["min"])), float(spec["max"]))
        term = float(spec["coef"]) * (value - float(spec["mean"])) / scale
        terms.append((name, row.get(name, 0), term, term))
    return terms


def predict(params: dict[str, Any], row: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """P(won) of one deal's inputs under recorded ``params``, and every feature's signed
    contribution in calibrated log-odds relative to an average training deal."""
    decision = float(params["intercept"])
    terms = decision_terms(params, row)
    for _, _, added, _ in terms:
        decision += added
    a, b = float(params["calibration"]["a"]), float(params["calibration"]["b"])
    probability = 1.0 / (1.0 + math.exp(a * decision + b))
    contributions = [
        {"feature": name, "value": value, "contribution": round(-a * raw, 6)}
        for name, value, _, raw in terms
    ]
    return probability, contributions
