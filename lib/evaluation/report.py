"""The accuracy/speed trade-off report: ``report.md`` and ``tradeoff.png`` from evaluation results.

``evaluate.py --model`` writes both beside ``summary.json`` for the thresholds of that command. To put
several evaluation folders (e.g. one per policy) into one table and one plot::

    python -m lib.evaluation.report results/gate results/copy results/every-2 --out results/compare

Runs of several base networks (the ``base`` of each run's setup: G-FRTM, TTVOS, G-TTVOS) get a network column
and one curve per network and policy (``make compare-bases``).

With a single folder ``--out`` defaults to that folder; with several it is required (so a folder's own
report is never overwritten by a merged one).

``report.md`` holds

* the trade-off table (like the paper's Table 2), one row per run: policy, tau, J&F, J, F, reuse rate,
  FPS, FPS tracking, GFLOPs/frame and the speed-up: FPS (whole run, initialisation included) over the
  FPS of the run of the same folder, dataset and policy with tau = 1 (no reuse); "n/a" without such a
  run. The ``always`` policy never reuses and is its own reference; ``every-k`` has no tau (n/a);
* the worst-case table: per run, J of every scored object-frame binned by the number of frames since
  the object's last computed frame (see :mod:`lib.evaluation.run`): count, mean, minimum, 5th percentile.

``tradeoff.png`` has two panels, J&F against FPS and J&F against reuse rate, one curve per policy with
the points labelled by tau (``k=K`` for every-k). Without ground truth (yt2018val) the accuracy columns
show "-" and the plot is FPS against reuse rate.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from base.errors import ConfigError
from base.io import atomic_write_bytes, atomic_write_text
from lib.engine.policies import Policy, policy_of_label
from lib.tools.cli import run_cli

REPORT_FILE = "report.md"
PLOT_FILE = "tradeoff.png"
SUMMARY_FILE = "summary.json"
NETWORK_NAMES = {"gfrtm": "G-FRTM", "ttvos": "TTVOS", "gttvos": "G-TTVOS"}


@dataclass
class ReportRun:
    """One run of a summary.json, with where it came from."""

    source: str  # the evaluation folder's name
    dataset: str
    run: Dict[str, object]

    @property
    def policy(self) -> str:
        return str(self.run.get("policy") or "-")

    @property
    def tau(self) -> Optional[float]:
        tau = self.run.get("tau")
        return None if tau is None else float(tau)

    @property
    def network(self) -> str:
        """The base network that made this run, as the paper names it (``-`` when its setup does not say)."""
        setup = self.run.get("setup")
        base = setup.get("base") if isinstance(setup, dict) else None
        return NETWORK_NAMES.get(str(base), str(base)) if base else "-"

    @property
    def policy_class(self) -> Optional[type]:
        """The registered policy family that made this run (None for an unknown label)."""
        return policy_of_label(self.policy)

    @property
    def uses_tau(self) -> bool:
        cls = self.policy_class
        return cls is None or cls.uses_tau

    @property
    def always_computes(self) -> bool:
        """Every path of its policy computes: the run is its own no-reuse reference."""
        cls = self.policy_class
        return cls is not None and all(p.computes for p in cls.paths)

    @property
    def scored(self) -> bool:
        return self.run.get("J&F-Mean") is not None

    @property
    def timed(self) -> bool:
        return _finite(self.run.get("fps")) and self.run.get("reuse_rate") is not None

    @property
    def family(self) -> str:
        """The plot curve this run belongs to: its policy's curve (all every-k runs together; one curve per
        warp correction or sparse tile rule)."""
        cls = self.policy_class
        return self.policy if cls is None else cls.curve(self.policy)

    @property
    def point_label(self) -> str:
        if not self.uses_tau:
            cls: type[Policy] = self.policy_class
            return cls.point_label(self.policy)
        return "-" if self.tau is None else f"{self.tau:g}"


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_runs(folder: Path) -> List[ReportRun]:
    """The runs of ``folder/summary.json``."""
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        raise ConfigError(f"no {SUMMARY_FILE} in {folder}: run evaluate.py --model ... --out {folder} first")
    try:
        summary = json.loads(path.read_text())
        runs = summary["runs"]
        dataset = str(summary["dataset"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a readable summary.json ({err.__class__.__name__}: {err})") from None
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ConfigError(f"{path}: 'runs' must be a list of objects")
    return [ReportRun(Path(folder).resolve().name, dataset, r) for r in runs]


def speedup_reference(row: ReportRun, rows: Sequence[ReportRun]) -> Optional[ReportRun]:
    """The no-reuse run that ``row``'s speed-up is measured against (same folder, dataset and policy)."""
    if row.always_computes:
        return row
    if not row.uses_tau:
        return None
    for other in rows:
        if (other.source, other.dataset, other.policy) == (row.source, row.dataset, row.policy) \
                and other.tau == 1.0 and other.timed:
            return other
    return None


def speedup(row: ReportRun, rows: Sequence[ReportRun]) -> Optional[float]:
    """FPS of ``row`` / FPS of its no-reuse reference run; None when there is none."""
    ref = speedup_reference(row, rows)
    if ref is None or not row.timed or not ref.run["fps"]:
        return None
    return float(row.run["fps"]) / float(ref.run["fps"])


def _sorted_rows(rows: Sequence[ReportRun]) -> List[ReportRun]:
    """Folders in the order given, then policies in order of appearance, then tau descending."""
    sources = list(dict.fromkeys(r.source for r in rows))
    policies = list(dict.fromkeys(r.policy for r in rows))
    return sorted(rows, key=lambda r: (sources.index(r.source), r.dataset, policies.index(r.policy),
                                       -(r.tau if r.tau is not None else -math.inf)))


def _num(value: object, digits: int) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else "-"


def _markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return out


def _id_columns(rows: Sequence[ReportRun]) -> Tuple[List[str], Dict[int, List[str]]]:
    """Header and per-row cells that identify a run: folder / network / dataset (only when they differ), policy,
    tau."""
    folder = len({r.source for r in rows}) > 1
    network = len({r.network for r in rows}) > 1
    dataset = len({r.dataset for r in rows}) > 1
    header = ((["folder"] if folder else []) + (["network"] if network else []) + (["dataset"] if dataset else [])
              + ["policy", "tau"])
    cells = {}
    for row in rows:
        tau = f"{row.tau:g}" if row.uses_tau and row.tau is not None else "-"
        cells[id(row)] = (([row.source] if folder else []) + ([row.network] if network else [])
                          + ([row.dataset] if dataset else []) + [row.policy, tau])
    return header, cells


def tradeoff_table(rows: Sequence[ReportRun]) -> List[str]:
    """Markdown lines of the trade-off table (``folder`` / ``dataset`` columns when runs differ in them)."""
    id_header, id_cells = _id_columns(rows)
    header = id_header + ["J&F", "J", "F", "reuse rate", "FPS", "FPS tracking", "GFLOPs/frame", "speed-up"]
    lines = []
    for row in rows:
        run = row.run
        ratio = speedup(row, rows)
        lines.append(id_cells[id(row)] + [
            _num(run.get("J&F-Mean"), 4), _num(run.get("J-Mean"), 4),
            _num(run.get("F-Mean"), 4), _num(run.get("reuse_rate"), 3), _num(run.get("fps"), 2),
            _num(run.get("fps_tracking"), 2), _num(run.get("gflops_per_frame"), 2),
            "n/a" if ratio is None else f"{ratio:.2f}x"])
    return _markdown_table(header, lines)


def worst_case_table(rows: Sequence[ReportRun]) -> List[str]:
    """Markdown lines of the worst-case table (non-empty distance bins only); [] when nothing is scored."""
    id_header, id_cells = _id_columns(rows)
    header = id_header + ["frames since compute", "object-frames", "mean J", "min J", "5th pct J"]
    lines = []
    for row in rows:
        for b in row.run.get("worst_case_by_distance") or []:
            if not b.get("count"):
                continue
            lines.append(id_cells[id(row)] + [
                str(b["distance"]), str(b["count"]), _num(b["J-Mean"], 4),
                _num(b["J-Min"], 4), _num(b["J-P5"], 4)])
    return _markdown_table(header, lines) if lines else []


def _setup_lines(rows: Sequence[ReportRun]) -> List[str]:
    lines = []
    for source in dict.fromkeys(r.source for r in rows):
        setups = {json.dumps(r.run["setup"], sort_keys=True) for r in rows
                  if r.source == source and isinstance(r.run.get("setup"), dict)}
        for text in sorted(setups):
            setup = json.loads(text)
            lines.append(f"- `{source}`: " + ", ".join(f"{k} {v}" for k, v in setup.items()))
    return lines


def format_report(rows: Sequence[ReportRun], plot_note: str) -> str:
    """The whole report.md text."""
    rows = _sorted_rows(rows)
    datasets = ", ".join(dict.fromkeys(r.dataset for r in rows))
    parts = [f"# Accuracy / speed trade-off ({datasets})", ""]
    setup = _setup_lines(rows)
    if setup:
        parts += ["Runs:", "", *setup, ""]
    parts += [
        "J&F, J, F: DAVIS protocol, fractions in [0, 1] (\"-\": no ground truth). Reuse rate: reused "
        "object-frames / tracked object-frames. FPS: frames / processing time, first-frame initialisation "
        "included; FPS tracking: without it. GFLOPs/frame: measured over the run, target-model optimisation "
        "included. Speed-up: FPS / FPS of the tau = 1 run of the same folder and policy (n/a without one).",
        "", *tradeoff_table(rows), ""]
    worst = worst_case_table(rows)
    parts += ["## Worst case against distance to the last computed frame", ""]
    if worst:
        parts += ["Per-frame J of every scored object-frame, binned by the number of frames since the "
                  "object's last computed frame (0 = computed; empty bins omitted). 5th pct: numpy "
                  "percentile, linear interpolation.", "", *worst, ""]
    else:
        parts += ["No per-frame scores: these runs have no ground truth (or were written before per-frame "
                  "paths were recorded).", ""]
    parts += ["## Plot", "", plot_note, ""]
    return "\n".join(parts)


def _series(rows: Sequence[ReportRun]) -> Dict[str, List[ReportRun]]:
    """Plot curves: one per policy curve (e.g. every-k's runs of several folders, one k each, make one curve),
    qualified by dataset, and by folder only where two folders hold the same point of a curve."""
    several_datasets = len({r.dataset for r in rows}) > 1
    several_networks = len({r.network for r in rows}) > 1
    points: Dict[Tuple[str, str, str, str], set] = {}
    for r in rows:
        points.setdefault((r.network, r.dataset, r.family, r.point_label), set()).add(r.source)
    clashing = {(n, d, f) for (n, d, f, _), sources in points.items() if len(sources) > 1}
    curves: Dict[str, List[ReportRun]] = {}
    for r in rows:
        name = r.family
        if several_networks:
            name = f"{r.network} {name}"
        if several_datasets:
            name = f"{r.dataset} {name}"
        if (r.network, r.dataset, r.family) in clashing:
            name = f"{name} ({r.source})"
        curves.setdefault(name, []).append(r)
    return curves


def label_offsets(xs: Sequence[float], ys: Sequence[float], near: float = 0.04) -> List[Tuple[int, int]]:
    """Text offsets (points) for the labels of points (xs, ys): a label goes above its point unless an earlier
    point lies within ``near`` of the axis spans (both axes), then it is stacked below or further out, so
    nearby tau labels (e.g. 0.5 and 0.7 at almost the same point) never print on top of each other."""
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0
    offsets: List[Tuple[int, int]] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        crowd = sum(1 for j in range(i) if abs(xs[j] - x) <= near * span_x and abs(ys[j] - y) <= near * span_y)
        # 0 crowding points: above; 1: below; 2: higher above; 3: further below; ...
        offsets.append((4, 4 + 11 * (crowd // 2)) if crowd % 2 == 0 else (4, -12 - 11 * (crowd // 2)))
    return offsets


def _annotate(ax, labels: Sequence[str], xs: Sequence[float], ys: Sequence[float]) -> None:
    for label, x, y, offset in zip(labels, xs, ys, label_offsets(xs, ys)):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=offset, fontsize=8)


def series_colours(n: int) -> List[object]:
    """One distinct colour per curve: matplotlib's default cycle up to 10 curves, tab20 beyond."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    from matplotlib import colormaps

    return [colormaps["tab20"](i % 20) for i in range(n)]


def plot_tradeoff(rows: Sequence[ReportRun]) -> Tuple[Optional[bytes], str]:
    """PNG bytes of the trade-off plot (or None) and a sentence for the report saying what it shows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    timed = [r for r in _sorted_rows(rows) if r.timed]
    scored = [r for r in timed if r.scored]
    if not timed:
        return None, "No plot: no run has FPS and reuse-rate measurements."
    if scored:
        panels = [("fps", "FPS (whole run)"), ("reuse_rate", "reuse rate")]
        fig = Figure(figsize=(11, 4.5), dpi=100)
        axes = fig.subplots(1, 2)
        for ax, (key, xlabel) in zip(axes, panels):
            series = _series(scored)
            for (name, curve), colour in zip(series.items(), series_colours(len(series))):
                pts = sorted(curve, key=lambda r: float(r.run[key]))
                xs = [float(r.run[key]) for r in pts]
                ys = [100 * float(r.run["J&F-Mean"]) for r in pts]
                ax.plot(xs, ys, marker="o", label=name, color=colour)
                _annotate(ax, [r.point_label for r in pts], xs, ys)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("J&F (%)")
            ax.grid(True, alpha=0.3)
        axes[0].set_title("J&F vs FPS")
        axes[1].set_title("J&F vs reuse rate")
        axes[0].legend(fontsize=8)
        note = "`tradeoff.png`: J&F against FPS (left) and against reuse rate (right), points labelled by tau."
        if len(scored) < len(timed):
            note += f" {len(timed) - len(scored)} run(s) without ground truth are left out of the plot."
    else:
        fig = Figure(figsize=(6, 4.5), dpi=100)
        ax = fig.subplots()
        series = _series(timed)
        for (name, curve), colour in zip(series.items(), series_colours(len(series))):
            pts = sorted(curve, key=lambda r: float(r.run["reuse_rate"]))
            xs = [float(r.run["reuse_rate"]) for r in pts]
            ys = [float(r.run["fps"]) for r in pts]
            ax.plot(xs, ys, marker="o", label=name, color=colour)
            _annotate(ax, [r.point_label for r in pts], xs, ys)
        ax.set_xlabel("reuse rate")
        ax.set_ylabel("FPS (whole run)")
        ax.set_title("FPS vs reuse rate (no ground truth: no J&F)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        note = "`tradeoff.png`: no ground truth, so FPS against reuse rate, points labelled by tau."
    fig.tight_layout()
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue(), note


def write_report(folders: Sequence[Path], out_dir: Optional[Path] = None) -> Tuple[Path, Optional[Path]]:
    """Write report.md and tradeoff.png for the runs of ``folders`` into ``out_dir``.

    ``out_dir`` defaults to the only folder; it is required with several. Returns the two paths (the
    plot's is None when nothing can be plotted; a stale plot is then removed).
    """
    folders = [Path(f) for f in folders]
    if not folders:
        raise ConfigError("give at least one evaluation folder (holding summary.json)")
    if out_dir is None:
        if len(folders) > 1:
            raise ConfigError("several folders are merged: pass --out DIR for the merged report")
        out_dir = folders[0]
    rows: List[ReportRun] = []
    for folder in folders:
        rows += load_runs(folder)
    if not rows:
        raise ConfigError(f"no runs in {', '.join(str(f / SUMMARY_FILE) for f in folders)}")
    out_dir = Path(out_dir)
    png, note = plot_tradeoff(rows)
    plot_path: Optional[Path] = out_dir / PLOT_FILE
    if png is None:
        if plot_path.is_file():
            plot_path.unlink()
        plot_path = None
    else:
        atomic_write_bytes(plot_path, png)
    report_path = out_dir / REPORT_FILE
    atomic_write_text(report_path, format_report(rows, note))
    return report_path, plot_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.evaluation.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", metavar="FOLDER", help="evaluation folders holding summary.json")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="where report.md and tradeoff.png go (default: the folder, when only one is given; "
                             "required with several)")
    args = parser.parse_args(argv)
    report, plot = write_report(args.folders, Path(args.out) if args.out else None)
    print(report.read_text())
    print(f"wrote {report}" + (f" and {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
