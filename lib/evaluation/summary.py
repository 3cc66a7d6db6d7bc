"""``summary.json``: the results file shared by scoring, evaluation and reports.

Schema::

    {"dataset": str,
     "runs": [{"tau": float | null, "J&F-Mean": float, "J-Mean": float, "J-Recall": float,
               "J-Decay": float, "F-Mean": float, "F-Recall": float, "F-Decay": float,
               "sequences": {"<seq>": {"J-Mean": float, "F-Mean": float, "J&F-Mean": float}},
               ...}]}

Metric values are fractions in [0, 1]. Evaluation runs add speed and reuse fields to each run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from base.io import atomic_write_json
from dataset.sequence import VideoSequence
from lib.evaluation.metrics import METRIC_KEYS, format_table, score_prediction_folder, summarize


def score_run(sequences: List[VideoSequence], pred_dir: Path, tau: Optional[float] = None, workers: int = 1
              ) -> Tuple[Dict[str, object], str]:
    """Score one prediction folder; returns the run entry of summary.json and a printable table."""
    summary = summarize(score_prediction_folder(sequences, pred_dir, workers=workers))
    run: Dict[str, object] = {"tau": tau}
    run.update({k: summary[k] for k in METRIC_KEYS})
    run["objects"] = summary["objects"]
    run["sequences"] = summary["sequences"]
    title = f"{pred_dir}" + ("" if tau is None else f"  (tau = {tau:g})")
    return run, format_table(summary, title)


def write_summary(path: Path, dataset: str, runs: List[Dict[str, object]]) -> Path:
    """Write summary.json atomically."""
    atomic_write_json(path, {"dataset": dataset, "runs": runs})
    return Path(path)
