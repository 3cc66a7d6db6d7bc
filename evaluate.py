"""Evaluate G-FRTM on DAVIS / YouTube-VOS, or score existing predictions.

Run the model for one or more reuse thresholds tau (one run each, one command)::

    python evaluate.py --dset dv2017val --davis-root DAVIS --model weights/gfrtm_rn18.pth \\
        --TH 1.0 0.9 0.7 0.5 --out results/rn18 [--policy gate] [--dev cuda:0] [--sequences a,b]

writes palette PNGs ``OUT/tau_<v>/<seq>/<frame>.png``, ``OUT/summary.json`` (J&F where ground truth
exists, FPS, reuse rate, GFLOPs per frame, J against frames since the last computed frame), the
trade-off report ``OUT/report.md`` + ``OUT/tradeoff.png`` (lib/evaluation/report.py; merge several folders with
``python -m lib.evaluation.report A B --out DIR``) and prints a table per tau. Finished sequences are not
recomputed when the command is run again (``--overwrite`` recomputes).

Score any method's existing predictions (no model)::

    python evaluate.py --score PRED_DIR --dset dv2016val --davis-root ROOT [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from base.errors import ConfigError
from dataset.registry import EVAL_DATASETS, SCORED_DATASETS, SUBMISSION_DATASETS, open_eval_dataset
from lib.engine.policies import add_policy_flags, default_policy, policy_from_args, thresholds
from lib.evaluation.report import write_report
from lib.evaluation.summary import score_run, write_summary
from lib.tools.cli import (
    add_compile_flag,
    add_dataset_root_flags,
    add_int8_flags,
    add_layout_flag,
    add_model_flags,
    add_overlap_flag,
    add_reuse_state_flag,
    add_runtime_flags,
    apply_threads,
    load_model_from_args,
    parse_sequence_list,
    resolve_device,
    run_cli,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dset", default="dv2016val", choices=list(EVAL_DATASETS), help="dataset to evaluate on")
    add_dataset_root_flags(parser)
    parser.add_argument("--sequences", type=parse_sequence_list, default=None, metavar="A,B",
                        help="only these sequences of the dataset")
    parser.add_argument("--split-list", metavar="FILE", default=None,
                        help="video list of yt2018jjval (default: the shipped 300-video jjval list)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default results/<dset>-<model>-<policy>; with --score: "
                             "where summary.json goes, default the prediction folder)")
    parser.add_argument("--score", metavar="PRED_DIR", default=None,
                        help="score existing predictions PRED_DIR/<seq>/<frame>.png; no model is run")
    parser.add_argument("--workers", type=int, default=1, help="processes used for scoring")

    model = parser.add_argument_group("running the model")
    add_model_flags(model, model_help="G-FRTM checkpoint (project, official or FRTM format; e.g. the shipped "
                                      "weights/gfrtm_rn18_dv2016_cpu.pth)")
    model.add_argument("--TH", "--tau", dest="taus", type=float, nargs="+", default=[0.7], metavar="TAU",
                       help="reuse thresholds: reuse iff P_gate > tau; several values give several runs")
    add_policy_flags(model)
    model.add_argument("--tm-iters", choices=["fast", "full"], default="fast",
                       help="target-model GN/CG iterations: the official evaluation's fast mode "
                            "(init 5,10,10,10; update 5) or the full one (init 5,10,10,10,10; update 10)")
    model.add_argument("--no-flops", action="store_true", help="do not measure FLOPs")
    add_overlap_flag(model)
    add_runtime_flags(model)
    add_compile_flag(model)
    add_int8_flags(model)
    add_layout_flag(model)
    add_reuse_state_flag(model)
    model.add_argument("--overwrite", action="store_true", help="recompute sequences finished earlier")
    return parser


def score_mode(args) -> int:
    if args.dset not in SCORED_DATASETS:
        raise ConfigError(f"{args.dset} has no public ground truth; scoring works on {', '.join(SCORED_DATASETS)}")
    pred_dir = Path(args.score)
    if not pred_dir.is_dir():
        raise ConfigError(f"prediction folder not found: {pred_dir}")
    dataset = open_eval_dataset(args.dset, args.davis_root, args.ytvos_root, args.sequences, args.split_list)
    run, table = score_run(list(dataset), pred_dir, tau=None, workers=args.workers)
    print(table)
    out_dir = Path(args.out) if args.out else pred_dir
    path = write_summary(out_dir / "summary.json", args.dset, [run])
    print(f"wrote {path}")
    return 0


def model_mode(args) -> int:
    from lib.engine.core import EngineConfig, InferenceEngine
    from lib.evaluation.run import RunSpec, format_runs, run_dataset
    from models.target_model import TargetModelConfig

    apply_threads(args.threads)
    device = resolve_device(args.dev)
    if args.policy is not None:  # every setting checked before any work
        for tau in thresholds(args.policy, args.taus):
            policy_from_args(args, tau)
    dataset = open_eval_dataset(args.dset, args.davis_root, args.ytvos_root, args.sequences, args.split_list)
    sequences = list(dataset)
    loaded = load_model_from_args(args, device)
    from lib.engine.bases import base_class_for

    args.policy = default_policy(args, base_class_for(loaded.model).reuse)
    policies = [policy_from_args(args, tau) for tau in thresholds(args.policy, args.taus)]
    model, backbone, size = loaded.model, loaded.backbone, loaded.size
    target = TargetModelConfig.eval_fast() if args.tm_iters == "fast" else TargetModelConfig.eval_full()
    out_dir = Path(args.out or f"results/{args.dset}-{Path(args.model).stem}-{args.policy}")
    scored = args.dset in SCORED_DATASETS
    engine = InferenceEngine(model, backbone, EngineConfig(target=target, seed=args.seed, amp=args.amp, size=size,
                                                           compile=args.compile,
                                                           channels_last=args.channels_last,
                                                           reuse_state=args.reuse_state,
                                                           int8_backbone=args.int8_backbone,
                                                           int8_calibration=args.int8_calibration),
                             device, count_flops=not args.no_flops)
    setup = {"model": Path(args.model).name, "base": engine.base.name, "backbone": engine.base.backbone_name,
             "pretrained": loaded.pretrained, "device": str(device),
             "threads": torch.get_num_threads() if device.type == "cpu" else None,
             "tm_iters": args.tm_iters, "amp": args.amp, "size": list(size) if size else None,
             "compile": list(args.compile), "channels_last": engine.channels_last}
    if args.int8_backbone:
        setup["int8_backbone"] = True
    if len(engine.base.reuse_states) > 1:
        setup["reuse_state"] = engine.reuse_state
    runs = []
    for policy in policies:
        spec = RunSpec(args.dset, out_dir, scored,
                       submission_zip=args.dset in SUBMISSION_DATASETS, overwrite=args.overwrite,
                       overlap_io=args.overlap_io)
        runs.append(run_dataset(engine, policy, sequences, spec))
        runs[-1]["setup"] = setup
        if args.compile:  # first calls per shape of the compiled parts, inside the processing time above
            setup["compile_seconds"] = round(engine.compile_seconds, 3)
            print(f"torch.compile ({', '.join(args.compile)}): {engine.compile_seconds:.1f} s of first calls so far")
        print(format_runs(args.dset, runs[-1:]))
    path = write_summary(out_dir / "summary.json", args.dset, runs)
    print(format_runs(args.dset, runs))
    report, plot = write_report([out_dir])
    print(f"wrote {path}, {report}" + (f", {plot}" if plot else ""))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.score is not None:
        return score_mode(args)
    if args.model is None:
        raise ConfigError("pass --model PATH to run G-FRTM, or --score PRED_DIR to score existing predictions")
    return model_mode(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
