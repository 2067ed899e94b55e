"""`dealflow bench scoring --json`: the figures the issue names, computed on a slice of the CRM
sample and on a generated set whose known signal the model must recover."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_crm_import import slice_of_sample


def test_bench_scoring_prints_its_figures(tmp_path: Path) -> None:
    data = slice_of_sample(tmp_path / "crm", every=3)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dealflow",
            "bench",
            "scoring",
            "--data",
            str(data),
            "--generated",
            "1500",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    crm, generated = figures["crm_sample"], figures["generated"]
    for result in (crm, generated):
        assert {"roc_auc", "brier", "top_decile_win_rate", "overall_win_rate"} <= set(result)
        assert 0 <= result["brier"] <= 1 and 0 <= result["roc_auc"] <= 1
        assert result["train_deals"] > 0 and result["test_deals"] > 0
    # The generated set has a real signal: the model finds it, close to the best possible.
    assert generated["industry_order_recovered"] and generated["amount_weight_sign_recovered"]
    assert generated["roc_auc"] > 0.7 and generated["roc_auc"] > generated["oracle_roc_auc"] - 0.03
    assert generated["top_decile_win_rate"] > generated["overall_win_rate"]
    assert generated["brier"] < generated["brier_constant_rate"]
