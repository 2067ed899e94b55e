"""The recorded parameters score exactly as the fitted scikit-learn model does, per-type activity
counts are features, and values beyond the training range are not extrapolated."""

from __future__ import annotations

import math
import random
from typing import Any

from engine.scoring.features import CATEGORICAL, NUMERIC
from engine.scoring.model import _matrix, fit, numeric_names, parameters, predict


def _rows(n: int, seed: int = 3) -> tuple[list[dict[str, Any]], list[bool]]:
    rng = random.Random(seed)
    rows, won = [], []
    for _ in range(n):
        row: dict[str, Any] = {name: "(none)" for name in CATEGORICAL}
        row["industry"] = rng.choice(["a", "b", "c"])
        for name in NUMERIC:
            row[name] = 0.0
        row["days_in_stage"] = rng.uniform(0, 60)
        demos = rng.randrange(0, 4)
        if demos:
            row["activity:demo"] = demos
        if rng.random() < 0.3:
            row["activity:call"] = 1
        p = {"a": 0.3, "b": 0.5, "c": 0.6}[row["industry"]] + 0.1 * demos
        rows.append(row)
        won.append(rng.random() < min(p, 0.95))
    return rows, won


def test_recorded_parameters_reproduce_scikit_learn() -> None:
    rows, won = _rows(600)
    model = fit(rows, won)
    params = parameters(model, rows)
    assert list(params["numeric"]) == numeric_names(rows)
    assert "activity:demo" in params["numeric"] and "activity:call" in params["numeric"]
    expected = model.predict_proba(_matrix(rows, numeric_names(rows)))[:, 1]
    mine = [predict(params, row)[0] for row in rows]
    assert max(abs(a - b) for a, b in zip(expected, mine, strict=True)) < 1e-12
    # More demos, more likely to win: the signal planted above.
    assert params["numeric"]["activity:demo"]["coef"] > 0


def test_contributions_sum_to_the_decision_and_the_range_is_clipped() -> None:
    rows, won = _rows(400)
    params = parameters(fit(rows, won), rows)
    row = dict(rows[0])
    probability, contributions = predict(params, row)
    assert {c["feature"] for c in contributions} == set(CATEGORICAL) | set(params["numeric"])
    # The reasons explain the whole score: the average deal's log-odds plus every contribution.
    a, b = params["calibration"]["a"], params["calibration"]["b"]
    average = -a * (params["intercept"] + sum(params["baselines"].values())) - b
    logit = math.log(probability / (1 - probability))
    assert abs(average + sum(c["contribution"] for c in contributions) - logit) < 1e-4
    far = {**row, "days_in_stage": 10_000.0}
    edge = {**row, "days_in_stage": params["numeric"]["days_in_stage"]["max"]}
    assert predict(params, far)[0] == predict(params, edge)[0]
    assert 0 < probability < 1
