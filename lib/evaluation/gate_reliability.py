"""Does the reuse gate rank frames like the ground truth? P_gate against the true IoU, from an evaluation run.

The gate is trained to predict the IoU between the object's mask now and on the last computed frame (the
paper's gate loss; its Fig. 8 shows P_gate following that IoU). This reads an ``evaluate.py`` run folder (one
tau of a gate policy, whose ``progress.json`` records every object-frame's path and P_gate) and the dataset's
ground truth, and reports for every object-frame that evaluated the gate:

* the Spearman rank correlation of P_gate with the true IoU;
* the AUROC of P_gate for "IoU > 0.8" (the oracle policy's rule: a gate that ranks frames as the oracle does
  scores 1, one that ranks at random 0.5);
* a calibration table: per P_gate bin, the frames and their mean true IoU;
* per tau, the reuse rate the gate would give on these frames and the mean IoU of the frames it would reuse,
  beside the oracle's at the same rate;

plus a reliability plot (P_gate against the true IoU, binned means, the diagonal)::

    python -m lib.evaluation.gate_reliability results/RUN/tau_1.0 --dset dv2016train --davis-root DIR \\
        --out docs/figures/gate_reliability_holdout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from base.errors import ConfigError
from base.io import atomic_write_json
from lib.tools.cli import add_dataset_root_flags, run_cli

TAUS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
BINS = np.linspace(0.0, 1.0, 11)
ORACLE_IOU = 0.8


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def last_computed(paths: str, start: int, computing: str) -> List[int]:
    """For each tracked frame ``start + 1 + k`` (paths[k]), the index of the last computed frame before it (the
    start frame counts as computed)."""
    out, last = [], start
    for k, code in enumerate(paths):
        out.append(last)
        if code in computing:
            last = start + 1 + k
    return out


class _GroundTruth:
    """A sequence's annotations, each read once: ``gt(index, obj_id)`` -> (H, W) bool."""

    def __init__(self, seq):
        self.seq, self.maps = seq, {}

    def __call__(self, index: int, obj_id: int) -> np.ndarray:
        if index not in self.maps:
            self.maps[index] = self.seq.annotation(self.seq.frames[index])
        return self.maps[index] == obj_id


def collect(records: Dict[str, dict], dataset) -> Dict[str, np.ndarray]:
    """(P_gate, true IoU with the last computed frame, frames since it) of every gated object-frame."""
    from lib.engine.paths import PATHS

    computing = "".join(p.code for p in PATHS.values() if p.computes)
    p_all, iou_all, gap_all = [], [], []
    sequences = {seq.name: seq for seq in dataset}
    for name, record in sorted(records.items()):
        if name not in sequences:
            raise ConfigError(f"sequence {name} of the run is not in the dataset given")
        seq = sequences[name]
        gt = _GroundTruth(seq)
        for obj_key, obj in record["objects"].items():
            paths, p_reuse = obj["paths"], obj.get("p_reuse", [])
            if len(p_reuse) != len(paths):
                raise ConfigError(f"{name}, object {obj_key}: {len(p_reuse)} gate probabilities for {len(paths)} "
                                  "tracked frames: the run's policy did not evaluate the gate on every frame")
            start = int(obj["start"])
            for k, (p, last) in enumerate(zip(p_reuse, last_computed(paths, start, computing))):
                frame = start + 1 + k
                p_all.append(float(p))
                iou_all.append(mask_iou(gt(frame, int(obj_key)), gt(last, int(obj_key))))
                gap_all.append(frame - last)
    if not p_all:
        raise ConfigError("the run holds no gated object-frame")
    return {"p": np.array(p_all), "iou": np.array(iou_all), "gap": np.array(gap_all)}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (ties counted half); NaN without both classes."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def analyse(data: Dict[str, np.ndarray], taus: Sequence[float] = TAUS) -> Dict[str, object]:
    from scipy.stats import spearmanr

    p, iou = data["p"], data["iou"]
    spearman = float(spearmanr(p, iou).statistic) if np.ptp(p) > 0 and np.ptp(iou) > 0 else float("nan")
    bins = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        inside = (p >= lo) & ((p < hi) | (hi == 1.0))
        bins.append({"p_low": float(lo), "p_high": float(hi), "frames": int(inside.sum()),
                     "mean_p": float(p[inside].mean()) if inside.any() else None,
                     "mean_iou": float(iou[inside].mean()) if inside.any() else None})
    order = np.argsort(-iou, kind="stable")  # the oracle reuses the most similar frames first
    rows = []
    for tau in taus:
        reused = p > tau
        n = int(reused.sum())
        oracle = order[:n]
        rows.append({"tau": float(tau), "reuse_rate": n / len(p),
                     "mean_iou_reused": float(iou[reused].mean()) if n else None,
                     "oracle_mean_iou_at_rate": float(iou[oracle].mean()) if n else None})
    return {"object_frames": int(len(p)), "spearman": spearman,
            "auroc_iou_gt_0.8": auroc(p, iou > ORACLE_IOU), "p_mean": float(p.mean()), "p_std": float(p.std()),
            "iou_mean": float(iou.mean()), "fraction_iou_gt_0.8": float((iou > ORACLE_IOU).mean()),
            "bins": bins, "taus": rows}


def plot(data: Dict[str, np.ndarray], result: Dict[str, object], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    ax.scatter(data["p"], data["iou"], s=4, alpha=0.25, color="tab:blue", label="object-frames")
    filled = [b for b in result["bins"] if b["frames"]]
    ax.plot([b["mean_p"] for b in filled], [b["mean_iou"] for b in filled], "o-", color="tab:red",
            label="mean true IoU per P_gate bin")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("P_gate (reuse probability)")
    ax.set_ylabel("true IoU with the last computed frame")
    ax.set_title(f"{title}\nSpearman {result['spearman']:.2f}, AUROC(IoU>0.8) {result['auroc_iou_gt_0.8']:.2f}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def table(result: Dict[str, object]) -> str:
    lines = [f"{result['object_frames']} object-frames: Spearman {result['spearman']:.3f}, AUROC(IoU>0.8) "
             f"{result['auroc_iou_gt_0.8']:.3f}; P_gate mean {result['p_mean']:.3f} (std {result['p_std']:.3f}), "
             f"true IoU mean {result['iou_mean']:.3f}, {result['fraction_iou_gt_0.8']:.2f} above 0.8",
             "tau   reuse  mean IoU reused  oracle at that rate"]
    def fmt(v):
        return f"{v:.3f}" if v is not None else "  -  "

    for row in result["taus"]:
        lines.append(f"{row['tau']:.1f}   {row['reuse_rate']:.3f}  {fmt(row['mean_iou_reused']):>15s}  "
                     f"{fmt(row['oracle_mean_iou_at_rate']):>19s}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_DIR", help="an evaluate.py run folder of one tau (holding progress.json)")
    p.add_argument("--dset", default="dv2016val", help="the dataset the run evaluated (evaluate.py's --dset)")
    add_dataset_root_flags(p)
    p.add_argument("--out", metavar="DIR", default=None, help="write reliability.json and reliability.png here "
                                                               "(default: the run folder)")
    p.add_argument("--title", default=None, help="plot title (default: the run folder)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from dataset.registry import open_eval_dataset

    args = build_parser().parse_args(argv)
    run = Path(args.run)
    progress = run / "progress.json"
    if not progress.is_file():
        raise ConfigError(f"{progress}: not found (give a run folder of one tau, e.g. results/RUN/tau_1.0)")
    try:
        records = json.loads(progress.read_text())["sequences"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{progress}: not a readable progress file ({err.__class__.__name__})") from None
    dataset = open_eval_dataset(args.dset, args.davis_root, args.ytvos_root, sorted(records))
    data = collect(records, dataset)
    result = analyse(data)
    print(table(result))
    out = Path(args.out) if args.out else run
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "reliability.json", {"run": str(run), "dset": args.dset, **result})
    plot(data, result, out / "reliability.png", args.title or str(run))
    print(f"wrote {out / 'reliability.json'} and {out / 'reliability.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
