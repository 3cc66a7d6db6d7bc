"""Trade-off report: report.md numbers against summary.json, the plot, merging folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import pytest
from PIL import Image

from base.errors import ConfigError
from lib.evaluation.report import ReportRun, load_runs, speedup, write_report
from lib.evaluation.report import main as report_main
from lib.evaluation.run import distance_bins
from tests.cli import call

ROOT = Path(__file__).resolve().parents[3]


# --- report.md and tradeoff.png ----------------------------------------------------------------

def _run(policy: str, tau: float, jf: float, fps: float, reuse: float, worst: bool = True) -> dict:
    run = {"tau": tau, "policy": policy, "J&F-Mean": jf, "J-Mean": jf - 0.01, "F-Mean": jf + 0.01,
           "fps": fps, "fps_tracking": fps * 1.25, "reuse_rate": reuse, "reuse_rate_official": reuse,
           "gflops_per_frame": 54.0 - 13 * reuse, "frames": 40, "sequences": {}}
    if worst:
        run["worst_case_by_distance"] = distance_bins([0, 0, 1, 3, 20], [0.9, 0.8, 0.7, 0.6, 0.123456])
    return run


def _write_summary(folder: Path, dataset: str, runs: List[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"dataset": dataset, "runs": runs}))
    return folder


def parse_tables(text: str) -> List[List[Dict[str, str]]]:
    """Every markdown table of ``text`` as a list of {column: cell} rows."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(dict(zip(header, (c.strip() for c in lines[i].strip("|").split("|")))))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def _assert_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100


def test_single_folder_report_matches_summary(tmp_path):
    runs = [_run("gate", 0.7, 0.70, 6.0, 0.45), _run("gate", 1.0, 0.72, 4.0, 0.0), _run("gate", 0.5, 0.65, 8.0, 0.7)]
    folder = _write_summary(tmp_path / "gate", "dv2017val", runs)
    report, plot = write_report([folder])
    assert report == folder / "report.md" and plot == folder / "tradeoff.png"
    _assert_png(plot)
    table, worst = parse_tables(report.read_text())
    assert [r["tau"] for r in table] == ["1", "0.7", "0.5"]  # tau descending
    by_tau = {float(r["tau"]): r for r in table}
    for run in runs:
        row = by_tau[run["tau"]]
        assert row["policy"] == "gate" and "folder" not in row and "dataset" not in row
        for column, key, digits in (("J&F", "J&F-Mean", 4), ("J", "J-Mean", 4), ("F", "F-Mean", 4),
                                    ("reuse rate", "reuse_rate", 3), ("FPS", "fps", 2),
                                    ("FPS tracking", "fps_tracking", 2), ("GFLOPs/frame", "gflops_per_frame", 2)):
            assert float(row[column]) == pytest.approx(run[key], abs=0.5 * 10 ** -digits)
    assert [r["speed-up"] for r in table] == ["1.00x", "1.50x", "2.00x"]
    # worst case: the 4 non-empty bins of each run, numbers as in summary.json
    assert len(worst) == 3 * 4 and {r["frames since compute"] for r in worst} == {"0", "1", "3-4", ">16"}
    far = next(r for r in worst if r["tau"] == "0.7" and r["frames since compute"] == ">16")
    assert far["object-frames"] == "1" and far["min J"] == "0.1235" and far["mean J"] == "0.1235"
    zero = next(r for r in worst if r["tau"] == "1" and r["frames since compute"] == "0")
    assert zero["object-frames"] == "2" and float(zero["5th pct J"]) == pytest.approx(0.805, abs=5e-5)


def test_merge_two_folders_with_different_policies(tmp_path):
    gate = _write_summary(tmp_path / "gate", "dv2017val",
                          [_run("gate", 1.0, 0.72, 4.0, 0.0), _run("gate", 0.7, 0.70, 6.0, 0.45)])
    copy = _write_summary(tmp_path / "copy", "dv2017val",
                          [_run("copy", 0.7, 0.60, 9.0, 0.5), _run("every-3", 0.7, 0.58, 7.0, 0.66, worst=False),
                           _run("always", 0.7, 0.72, 3.9, 0.0, worst=False)])
    with pytest.raises(ConfigError, match="--out"):
        write_report([gate, copy])
    out = tmp_path / "merged"
    proc = call(report_main, gate, copy, "--out", out)
    assert proc.returncode == 0, proc.stderr
    _assert_png(out / "tradeoff.png")
    table = parse_tables((out / "report.md").read_text())[0]
    assert [(r["folder"], r["policy"], r["tau"]) for r in table] == [
        ("gate", "gate", "1"), ("gate", "gate", "0.7"), ("copy", "copy", "0.7"), ("copy", "every-3", "-"),
        ("copy", "always", "-")]
    assert [r["speed-up"] for r in table] == ["1.00x", "1.50x", "n/a", "n/a", "1.00x"]
    assert table[2]["J&F"] == "0.6000" and table[3]["FPS"] == "7.00"
    assert not (gate / "report.md").exists()  # the inputs are left alone


def test_unscored_runs_show_dashes_and_plot_fps_against_reuse(tmp_path):
    runs = [_run("gate", 1.0, 0, 4.0, 0.0, worst=False), _run("gate", 0.7, 0, 5.0, 0.4, worst=False)]
    for run in runs:
        for key in ("J&F-Mean", "J-Mean", "F-Mean"):
            del run[key]
    folder = _write_summary(tmp_path / "yt", "yt2018val", runs)
    report, plot = write_report([folder])
    _assert_png(plot)
    text = report.read_text()
    table = parse_tables(text)[0]
    assert [(r["J&F"], r["J"], r["F"]) for r in table] == [("-", "-", "-")] * 2
    assert [r["FPS"] for r in table] == ["4.00", "5.00"] and table[1]["speed-up"] == "1.25x"
    assert "no ground truth, so FPS against reuse rate" in text and "No per-frame scores" in text


def test_score_only_summary_has_no_plot_and_removes_a_stale_one(tmp_path):
    folder = _write_summary(tmp_path / "osvos", "dv2016val",
                            [{"tau": None, "J&F-Mean": 0.9, "J-Mean": 0.89, "F-Mean": 0.91, "sequences": {}}])
    (folder / "tradeoff.png").write_bytes(b"old")
    report, plot = write_report([folder])
    assert plot is None and not (folder / "tradeoff.png").exists()
    row = parse_tables(report.read_text())[0][0]
    assert row["J&F"] == "0.9000" and row["FPS"] == "-" and row["speed-up"] == "n/a"


def test_missing_or_broken_summary_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no summary.json"):
        load_runs(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable summary.json"):
        load_runs(tmp_path)


def test_speedup_needs_a_tau_one_run_of_the_same_policy(tmp_path):
    folder = _write_summary(tmp_path / "a", "dv2016val", [_run("gate", 0.7, 0.7, 6.0, 0.4),
                                                         _run("copy", 1.0, 0.7, 3.0, 0.0)])
    rows = load_runs(folder)
    assert speedup(rows[0], rows) is None and speedup(rows[1], rows) == pytest.approx(1.0)


def test_nearby_point_labels_are_stacked_apart():
    """Labels of points within 4 % of the axis spans of each other get different offsets (tau 0.5 and 0.7 used
    to print on top of each other); distant points keep the default offset above."""
    from lib.evaluation.report import label_offsets

    xs, ys = [1.0, 1.01, 1.02, 5.0], [50.0, 50.1, 49.9, 80.0]
    offsets = label_offsets(xs, ys)
    assert offsets[0] == (4, 4) and offsets[3] == (4, 4)
    assert len(set(offsets[:3])) == 3  # the three crowded labels all differ
    assert offsets[1][1] < 0  # the second one goes below its point


def test_policy_families_come_from_the_registry():
    """tau use, curve family, point label and own-reference come from the policy that made the label."""
    def row(policy):
        return ReportRun("a", "dv2016val", {"policy": policy, "tau": 0.7})

    assert row("gate").uses_tau and row("fusion").uses_tau and row("copy").family == "copy"
    assert not row("every-3").uses_tau and row("every-3").family == "every-k" and row("every-3").point_label == "k=3"
    assert row("always").always_computes and row("always").point_label == "always"
    assert not row("gate").always_computes and not row("every-3").always_computes
    unknown = row("someone-elses-policy")  # made by a plug-in that is not registered here: plotted by tau
    assert unknown.uses_tau and unknown.family == "someone-elses-policy" and unknown.point_label == "0.7"


def test_many_curves_get_distinct_colours():
    from lib.evaluation.report import series_colours

    assert series_colours(3) == ["C0", "C1", "C2"]
    many = series_colours(12)
    assert len({tuple(c) for c in many}) == 12  # the default cycle would repeat after 10


def test_curves_join_folders_and_split_variants():
    """Runs of one curve from several folders (one k each) make one curve; each warp correction and sparse tile
    rule is its own curve; two folders holding the same point of a curve are told apart by folder."""
    from lib.evaluation.report import _series

    def row(source, policy, tau=None):
        return ReportRun(source, "dv2016val", {"policy": policy, "tau": tau})

    rows = [row("a", "warp-every-2"), row("b", "warp-every-8"), row("c", "warp-every-2-learned"),
            row("d", "warp-every-8-learned"), row("e", "warp-error", 0.9), row("f", "warp-error-learned", 0.9),
            row("g", "sparse-gate-0.05", 0.7), row("h", "sparse-gate-learned", 0.7), row("i", "every-2"),
            row("j", "every-3")]
    curves = _series(rows)
    assert {k: len(v) for k, v in curves.items()} == {
        "warp-every-k": 2, "warp-every-k-learned": 2, "warp-error": 1, "warp-error-learned": 1,
        "sparse-gate-0.05": 1, "sparse-gate-learned": 1, "every-k": 2}
    clash = _series([row("x", "gate", 0.7), row("y", "gate", 0.7), row("y", "gate", 1.0)])
    assert set(clash) == {"gate (x)", "gate (y)"}


def test_runs_of_two_base_networks_get_a_network_column_and_curves_of_their_own(tmp_path):
    """G-FRTM and G-TTVOS folders merged: one curve per network and policy, a network column in the tables; a
    single network's report has neither."""
    from lib.evaluation.report import _series

    def runs(base, jf):
        out = [_run("gate", 1.0, jf, 4.0, 0.0), _run("gate", 0.5, jf - 0.01, 6.0, 0.5), _run("every-2", 1.0, jf - 0.02,
                                                                                          7.0, 0.5)]
        for run in out:
            run["setup"] = {"model": f"{base}.pth", "base": base}
        return out

    a = _write_summary(tmp_path / "gfrtm", "dv2016val", runs("gfrtm", 0.75))
    b = _write_summary(tmp_path / "gttvos", "dv2016val", runs("gttvos", 0.65))
    report, plot = write_report([a, b], tmp_path / "both")
    table = parse_tables(report.read_text())[0]
    assert [r["network"] for r in table] == ["G-FRTM"] * 3 + ["G-TTVOS"] * 3
    assert [r["J&F"] for r in table[3:]] == ["0.6500", "0.6400", "0.6300"]
    _assert_png(plot)
    rows = load_runs(a) + load_runs(b)
    assert set(_series(rows)) == {"G-FRTM gate", "G-FRTM every-k", "G-TTVOS gate", "G-TTVOS every-k"}
    single, _ = write_report([a], tmp_path / "one")
    assert "network" not in parse_tables(single.read_text())[0][0]
    assert set(_series(load_runs(a))) == {"gate", "every-k"}
