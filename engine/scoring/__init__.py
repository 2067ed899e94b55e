"""Explainable lead scoring (issue 12): P(won) learned from a pipeline's closed deals.

- :mod:`engine.scoring.features`: what the model reads from a deal at a moment;
- :mod:`engine.scoring.history`: the closed deals of the log as training samples (each deal as
  it stood just before it closed, so nothing recorded at the close leaks into the features);
- :mod:`engine.scoring.model`: training (scikit-learn: logistic regression with sigmoid
  calibration) and the recorded parameters that score and explain a deal;
- :mod:`engine.scoring.service`: recording models as versioned definitions, the fallback to a
  pipeline's point rules, and the score of one deal.
"""
