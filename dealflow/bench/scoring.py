"""``dealflow bench scoring``: how well the lead-scoring model ranks deals it has not seen.

The bundled CRM sample is imported into a scratch store; the model is trained on the deals
closed before ``--cut`` and scores those closed on or after it, each as it stood just before it
closed (see engine.scoring.history). Printed: ROC AUC, Brier score (and the Brier score of the
constant training win rate, the baseline), and the win rate of the top-scored decile against
the overall win rate. ``--generated`` also runs a generated set with a known signal (industry
and amount drive the outcome through known log-odds), where the model must recover it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.application import Command, DealflowApp
from engine.scoring.history import Sample, closed_samples
from engine.scoring.model import predict
from engine.scoring.service import train_model

DEFAULT_CUT = "2017-09-01T00:00:00+00:00"
# The generated set: log-odds of winning by industry, and per unit of log(amount).
KNOWN_INDUSTRY = {"software": 1.2, "medical": 0.4, "retail": -0.6, "energy": -1.0}
KNOWN_AMOUNT = -0.5


def evaluate(train: list[Sample], test: list[Sample]) -> dict[str, Any]:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    body = train_model(train)
    probabilities = [predict(body["params"], s.features)[0] for s in test]
    outcomes = [int(s.won) for s in test]
    ranked = sorted(
        zip(probabilities, outcomes, (s.deal_id for s in test), strict=True),
        key=lambda t: (-t[0], t[2]),
    )
    decile = ranked[: max(1, math.ceil(len(ranked) / 10))]
    base_rate = sum(s.won for s in train) / len(train)
    return {
        "train_deals": len(train),
        "test_deals": len(test),
        "roc_auc": round(float(roc_auc_score(outcomes, probabilities)), 4),
        "brier": round(float(brier_score_loss(outcomes, probabilities)), 4),
        "brier_constant_rate": round(float(brier_score_loss(outcomes, [base_rate] * len(test))), 4),
        "top_decile_win_rate": round(sum(o for _, o, _ in decile) / len(decile), 4),
        "overall_win_rate": round(sum(outcomes) / len(outcomes), 4),
        "model": body,
    }


def crm_figures(data: Path, cut: datetime, pipeline_id: str) -> dict[str, Any]:
    from dealflow.bench.audit import scratch_store
    from engine.importers.crm.run import import_crm

    with scratch_store(None) as settings:
        app = DealflowApp(settings)
        try:
            if pipeline_id != "default":
                from dealflow.demo.crm_pipeline import install

                install(app, pipeline_id)
            import_crm(app, data, pipeline_id=pipeline_id, progress=False)
            samples, _ = closed_samples(app, pipeline_id)
        finally:
            app.close()
    train = [s for s in samples if s.closed_at < cut]
    test = [s for s in samples if s.closed_at >= cut]
    return {"set": "crm_sample", "cut": cut.isoformat(), **evaluate(train, test)}


def generated_figures(deals: int, seed: int) -> dict[str, Any]:
    """Deals whose outcome is drawn from known log-odds, through the real write path."""
    from dealflow.bench.audit import scratch_store

    rng = random.Random(seed)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    commands: list[Command] = []
    for i in range(deals):
        industry = rng.choice(sorted(KNOWN_INDUSTRY))
        amount = round(math.exp(rng.uniform(math.log(1_000), math.log(100_000))), 2)
        logit = KNOWN_INDUSTRY[industry] + KNOWN_AMOUNT * (math.log1p(amount) - math.log(10_000))
        won = rng.random() < 1 / (1 + math.exp(-logit))
        opened = start + timedelta(hours=i)
        deal_id = f"gen-{i}"
        body = {
            "type": "opened",
            "event_id": f"{deal_id}-o",
            "pipeline_id": "default",
            "name": deal_id,
            "industry": industry,
            "amount": str(amount),
            "occurred_at": opened.isoformat(),
        }
        commands.append(Command.from_body(deal_id, body, "bench"))
        close: dict[str, Any] = {"type": "won"} if won else {"type": "lost", "reason": "lost"}
        close.update(event_id=f"{deal_id}-c", occurred_at=(opened + timedelta(days=30)).isoformat())
        commands.append(Command.from_body(deal_id, close, "bench"))
    with scratch_store(None) as settings:
        app = DealflowApp(settings)
        try:
            from engine.domain.pipeline import PipelineDefinition

            free = {
                "name": "Generated",
                "stages": [{"id": "open", "name": "Open", "probability": 0.5}],
            }
            app.put_pipeline("default", PipelineDefinition.model_validate(free), "bench")
            for index in range(0, len(commands), 5000):
                app.ingest(commands[index : index + 5000])
            samples, _ = closed_samples(app, "default")
        finally:
            app.close()
    samples.sort(key=lambda s: s.closed_at)
    cut = samples[int(len(samples) * 0.7)].closed_at
    train = [s for s in samples if s.closed_at < cut]
    test = [s for s in samples if s.closed_at >= cut]
    figures = evaluate(train, test)
    from sklearn.metrics import roc_auc_score

    truth = [
        KNOWN_INDUSTRY[s.features["industry"]]
        + KNOWN_AMOUNT * (s.features["log_amount"] - math.log(10_000))
        for s in test
    ]
    # The best any model can do on this set: ranking by the true log-odds themselves.
    figures["oracle_roc_auc"] = round(float(roc_auc_score([s.won for s in test], truth)), 4)
    learned = figures["model"]["params"]["categorical"]["industry"]
    order = sorted(KNOWN_INDUSTRY, key=KNOWN_INDUSTRY.get)  # type: ignore[arg-type]
    return {
        "set": "generated",
        "known_industry_log_odds": KNOWN_INDUSTRY,
        "learned_industry_weights": {k: round(learned[k], 4) for k in order},
        "industry_order_recovered": sorted(learned, key=learned.get) == order,  # type: ignore[arg-type]
        "amount_weight_sign_recovered": figures["model"]["params"]["numeric"]["log_amount"]["coef"]
        < 0,
        **figures,
    }


def _print(figures: dict[str, Any]) -> None:
    print(
        f"[{figures['set']}] trained on {figures['train_deals']} closed deals, scored {figures['test_deals']}"
    )
    print(f"  roc_auc              {figures['roc_auc']:.4f}   (0.5 = no better than chance)")
    print(
        f"  brier                {figures['brier']:.4f}   (constant training win rate: {figures['brier_constant_rate']:.4f})"
    )
    print(f"  top_decile_win_rate  {figures['top_decile_win_rate']:.4f}")
    print(
        f"  overall_win_rate     {figures['overall_win_rate']:.4f}   (ratio {figures['top_decile_win_rate'] / figures['overall_win_rate']:.3f})"
    )
    if figures["set"] == "generated":
        print(
            f"  industry weights     {figures['learned_industry_weights']} (known log-odds {figures['known_industry_log_odds']})"
        )
        print(
            f"  oracle roc_auc       {figures['oracle_roc_auc']:.4f}   (ranking by the true log-odds)"
        )
        print(
            f"  order recovered      {figures['industry_order_recovered']}; amount sign recovered {figures['amount_weight_sign_recovered']}"
        )


def bench_scoring(args: argparse.Namespace) -> int:
    from dealflow.demo.run import find_data

    cut = datetime.fromisoformat(args.cut)
    results = [crm_figures(find_data(args.data), cut, args.pipeline)]
    if args.generated:
        results.append(generated_figures(args.generated, args.seed))
    for figures in results:
        figures.pop("model")
    if args.json:
        print(
            json.dumps(
                results[0]
                if len(results) == 1
                else {"crm_sample": results[0], "generated": results[1]}
            )
        )
    else:
        for figures in results:
            _print(figures)
    return 0


def register(benches: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    scoring = benches.add_parser(
        "scoring", help="lead scoring on the CRM sample: ROC AUC, Brier, top-decile win rate"
    )
    scoring.add_argument("--cut", default=DEFAULT_CUT, help="train before, score after (ISO time)")
    scoring.add_argument("--data", type=Path, default=None, help="a CRM export directory")
    scoring.add_argument("--pipeline", default="default", help="default, or crm (the demo's)")
    scoring.add_argument(
        "--generated",
        type=int,
        default=0,
        metavar="DEALS",
        help="also run a generated set with a known signal",
    )
    scoring.add_argument("--seed", type=int, default=12)
    scoring.add_argument("--json", action="store_true")
    scoring.set_defaults(func=bench_scoring)
