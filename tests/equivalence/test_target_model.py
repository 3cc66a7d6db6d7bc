"""The target model against the official fixture (``target_model.pt``, ``inputs.pt``).

Follows the "Recommended tests" of the fixture README for the target model: the exact parts (sample
and pixel weights, memory rule and contents, projected samples, scores with stored weights), the
least-squares problem at every stored parameter point, the full optimisation in float64 against the
official float64 run, and the float32 run within the README's band.

The fixture folder is ``$OFFICIAL_FIXTURE_DIR`` (default ``tests/fixtures/official``). Every compared
tensor's difference is collected and printed as a table at the end of the module (``pytest -s``).
"""

from __future__ import annotations

import pytest
import torch

from models.gauss_newton import GaussNewtonCG, sum_of_squares
from models.target_model import (
    OnlineTargetModel,
    SampleMemory,
    TargetModel,
    TargetModelConfig,
    TargetModelProblem,
    hinge_pixel_weights,
)
from tests.numerics import check as check_bound

STAGES = ("stage1", "stage2", "update")
# b: float32 reductions over ~10^6 terms (see test_problem_definition). Measured worst case over 7 kernel settings
# (tests/numerics.py; native AVX2, oneDNN off, ATEN default + oneDNN SSE41, 1 and 2 threads): 1.73e-5 (stage2[0],
# SSE41; the former bound 3e-5 came from one machine's 1 vs 2 threads, 1e-5); bound 4x that.
REDUCTION_TOLERANCE = 7e-5
# rho, pq: quadratic in b, so about twice b's relative error plus their own. Measured worst case 5.5e-5 (stage2[0]
# pq, SSE41; former bound 1e-4); bound 4x that. A wrong weight or residual moves all three by > 1e-2.
QUADRATIC_TOLERANCE = 2.2e-4
DIFFS = []  # (name, measure, observed, tolerance) as printable strings


def rel_to_max(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max|a - ref| / max|ref|."""
    ref = ref.double()
    return ((a.double() - ref).abs().max() / ref.abs().max()).item()


def rel(a: float, ref: float) -> float:
    return abs(float(a) - float(ref)) / abs(float(ref))


def check(name: str, value: float, tolerance: float, measure: str = "rel-to-max") -> None:
    DIFFS.append((name, measure, f"{value:.3g}", f"{tolerance:.3g}"))
    check_bound(f"official target model: {name} ({measure})", value, tolerance)


@pytest.fixture(scope="module", autouse=True)
def print_diff_table():
    yield
    print("\n\ntarget model vs official fixture: observed differences")
    print(f"{'compared':44s} {'measure':12s} {'observed':>10s} {'tolerance':>18s}")
    for name, measure, value, tol in DIFFS:
        print(f"{name:44s} {measure:12s} {value:>10s} {tol:>18s}")


@pytest.fixture(scope="module")
def config(tm) -> TargetModelConfig:
    """The evaluation preset, cross-checked against the fixture's hyper-parameters."""
    hp = tm["__meta__"]["hyper_parameters"]
    cfg = TargetModelConfig.eval_fast()
    assert cfg.c_channels == hp["c_channels"] and cfg.memory_size == hp["memory_size"]
    assert cfg.init_iters == tuple(hp["init_iters"]) and cfg.update_iters == tuple(hp["update_iters"])
    assert cfg.filter_reg == tuple(hp["filter_reg"]) and cfg.precond == tuple(hp["precond"])
    assert (cfg.precond_lr, cfg.cg_forgetting_rate) == (hp["precond_lr"], hp["CG_forgetting_rate"])
    assert cfg.direction_forget_factor == pytest.approx(hp["direction_forget_factor"], rel=1e-9)
    assert cfg.pixel_weighting == hp["pixel_weighting"]["method"]
    assert cfg.hinge_threshold == hp["pixel_weighting"]["tf"]
    assert (cfg.train_skipping, cfg.memory_lr, cfg.num_aug) == (
        hp["train_skipping"],
        hp["learning_rate"],
        hp["num_aug"],
    )
    return cfg


def model_with(project: torch.Tensor, filt: torch.Tensor) -> TargetModel:
    model = TargetModel(project.shape[1], project.shape[0])
    model.load_state_dict({"project.weight": project, "filter.weight": filt})
    return model


# ----------------------------------------------------------------------------------------------
# exact parts


def test_sample_weights(tm, config):
    k = tm["__meta__"]["K"]
    memory = SampleMemory(k, config.memory_lr)
    memory.initialize(tm["init.x"], tm["aug.labels"].float(), torch.ones(k, 2))
    check("init.sample_weights", rel_to_max(memory.weights, tm["init.sample_weights"]), 1e-6)


def test_pixel_weight_values(tm, config):
    ours = hinge_pixel_weights(tm["aug.labels"].float(), config.hinge_threshold)
    check("init.pixel_weight_values", rel_to_max(ours, tm["init.pixel_weight_values"]), 1e-6)
    ours = hinge_pixel_weights(tm["update.soft_mask"], config.hinge_threshold)
    check("update.pixel_weight_values", rel_to_max(ours, tm["update.pixel_weight_values"]), 1e-6)


@pytest.mark.parametrize("case", ["eval80_K5", "cap8_K5", "empty4", "lr1_cap4_K2"])
def test_memory_rule_traces(tm, case):
    spec = tm["__meta__"]["memrule_cases"][case]
    memory = SampleMemory(spec["capacity"], spec["lr"])
    k = spec["K_init"]
    if k > 0:
        initial = -torch.arange(1, k + 1, dtype=torch.float32)[:, None]
        memory.initialize(initial, torch.zeros(k, 1), torch.ones(k, 2))
    weights, sizes, slots = [memory.weights.clone()], [memory.current_size], []
    for i in range(1, spec["inserts"] + 1):
        slots.append(memory.insert(torch.tensor([[float(i)]]), torch.zeros(1, 1), torch.ones(1, 2)))
        weights.append(memory.weights.clone())
        sizes.append(memory.current_size)
    samples = torch.tensor([0.0 if s is None else s.item() for s in memory.samples])

    check(f"memrule.{case}.weights", rel_to_max(torch.stack(weights), tm[f"memrule.{case}.weights"]), 1e-6)
    assert slots == tm[f"memrule.{case}.replace_index"].tolist()
    assert sizes == tm[f"memrule.{case}.current_size"].tolist()
    assert torch.equal(samples, tm[f"memrule.{case}.samples"])


def stage2_memory(tm, config) -> SampleMemory:
    """The long-term memory after init, built from the stored tensors."""
    memory = SampleMemory(tm["__meta__"]["hyper_parameters"]["memory_size"], config.memory_lr)
    memory.initialize(tm["stage2.samples"], tm["aug.labels"].float(), tm["init.pixel_weight_values"])
    return memory


def update_memory(tm, config) -> SampleMemory:
    """The memory after the update's insertion, built from the stored tensors."""
    memory = stage2_memory(tm, config)
    memory.insert(tm["update.sample"], tm["update.soft_mask"], tm["update.pixel_weight_values"])
    return memory


def test_memory_weights_replace_index_and_contents(tm, config):
    memory = stage2_memory(tm, config)
    check("stage2.memory_weights", rel_to_max(memory.weights, tm["stage2.memory_weights"]), 1e-6)
    check("update.memory_weights_before", rel_to_max(memory.weights, tm["update.memory_weights_before"]), 1e-6)
    slot = memory.insert(tm["update.sample"], tm["update.soft_mask"], tm["update.pixel_weight_values"])
    assert slot == tm["update.replace_index"].item()
    assert memory.current_size == tm["__meta__"]["update"]["memory_size_after"]
    check("update.memory_weights_after", rel_to_max(memory.weights, tm["update.memory_weights_after"]), 1e-6)
    samples, labels, values, weights = memory.active()
    k = tm["__meta__"]["K"]
    assert samples.shape[0] == k + 1 == tm["__meta__"]["hyper_parameters"]["update"]["n_samples_used"]
    assert torch.equal(samples[:k], tm["stage2.samples"]) and torch.equal(samples[k:], tm["update.sample"])
    assert torch.equal(labels[:k], tm["aug.labels"].float()) and torch.equal(labels[k:], tm["update.soft_mask"])


def test_projected_samples_and_scores_with_stored_weights(tm, inputs):
    model = model_with(tm["stage1.project"], tm["stage2.filter"])
    with torch.no_grad():
        check("stage2.samples", rel_to_max(model.project(tm["init.x"]), tm["stage2.samples"]), 1e-5)
        check("update.score", rel_to_max(model(inputs["feat1.layer4"]), tm["update.score"]), 1e-5)
        check("inputs.score0", rel_to_max(model(inputs["feat0.layer4"]), inputs["score0"]), 1e-5)
    score = OnlineTargetModel(model, TargetModelConfig.eval_fast()).apply(inputs["feat1.layer4"])
    check("apply: update.score", rel_to_max(score, tm["update.score"]), 1e-5)


# ----------------------------------------------------------------------------------------------
# the least-squares problem at every stored parameter point


def stage_problem(tm, config, stage: str):
    """(memory, filter_reg, precond, parameter names) of one official GN/CG run."""
    if stage == "stage1":
        k = tm["__meta__"]["K"]
        memory = SampleMemory(k, config.memory_lr)
        memory.initialize(tm["init.x"], tm["aug.labels"].float(), tm["init.pixel_weight_values"])
        return memory, config.filter_reg, config.precond, ("project", "filter")
    memory = stage2_memory(tm, config) if stage == "stage2" else update_memory(tm, config)
    return memory, config.filter_reg[1:], config.precond[1:], ("filter",)


@pytest.mark.parametrize("stage", STAGES)
def test_problem_definition(tm, config, stage):
    """At each stored parameter point: losses, b = -J^T r and the first CG iteration's rho and pq.

    b, rho and pq are float32 sums of ~10^6 terms with cancellation: the official values are themselves
    up to 2e-5 (relative) off their exact float64 values, and ours move by up to 1.7e-5 (b) and 5.5e-5
    (pq) between kernel families and thread counts. They get ``REDUCTION_TOLERANCE`` (b) and
    ``QUADRATIC_TOLERANCE`` (rho, pq, quadratic in b); the losses keep the README's 1e-5. A wrong weight
    or residual moves them by far more.
    """
    hp = tm["__meta__"]["hyper_parameters"][stage]
    memory, filter_reg, precond, names = stage_problem(tm, config, stage)
    assert list(filter_reg) == hp["filter_regs"] and list(precond) == hp["precond"]
    n_gn = len(hp["cg_iters_per_gn"])
    for g in range(n_gn + 1):
        params = [tm[f"{stage}.gn.{name}"][g].clone() for name in names]
        problem = TargetModelProblem(memory, filter_reg)
        solver = GaussNewtonCG(params, problem, precond, config.direction_forget_factor)
        where = f"{stage}[{g}]"
        if g == n_gn:  # after the run: only the losses are stored
            data, *reg = sum_of_squares(solver.residuals()).tolist()
        else:
            record = solver.run((1,), record=True)
            data, *reg = record.losses[0].tolist()
            for name, b in zip(names, record.b[0]):
                check(f"{where} b.{name}", rel_to_max(b, tm[f"{stage}.gn.b.{name}"][g]), REDUCTION_TOLERANCE)
            cg = tm[f"{stage}.cg"]
            first = cg[cg[:, 0] == g][0]
            check(f"{where} cg rho", rel(record.cg[0, 1], first[1]), QUADRATIC_TOLERANCE, "rel")
            check(f"{where} cg pq", rel(record.cg[0, 3], first[3]), QUADRATIC_TOLERANCE, "rel")
        check(f"{where} loss_data", rel(data, tm[f"{stage}.gn.loss_data"][g]), 1e-5, "rel")
        check(f"{where} loss_reg", rel(sum(reg), tm[f"{stage}.gn.loss_reg"][g]), 1e-5, "rel")


# ----------------------------------------------------------------------------------------------
# full optimisation: init, apply, update


def run_official_sequence(tm, inputs, config, dtype):
    """init from the stored inputs and initial weights, apply on frame 1, frame counter 8, update.

    Returns the learner, the score before and the score after the update.
    """
    model = model_with(tm["init.project0"], tm["init.filter0"])
    online = OnlineTargetModel(model, config, record_runs=True)
    online.init(tm["init.x"].to(dtype), tm["aug.labels"])
    meta = tm["__meta__"]["update"]
    score = online.apply(inputs["feat1.layer4"].to(dtype))
    assert online.frame_count == meta["frame_num_after_apply"] - meta["frame_num_after_init"]
    online.frame_count = meta["frame_num_at_update"]
    assert online.update(tm["update.soft_mask"].to(dtype))
    with torch.no_grad():
        score_after = online.model(inputs["feat1.layer4"].to(dtype))
    return online, score, score_after


@pytest.fixture(scope="module")
def run64(tm, inputs, config):
    return run_official_sequence(tm, inputs, config, torch.float64)


@pytest.fixture(scope="module")
def run32(tm, inputs, config):
    return run_official_sequence(tm, inputs, config, torch.float32)


def test_float64_optimisation_matches_the_official_float64_run(tm, run64):
    online, score, score_after = run64
    assert [name for name, _ in online.records] == list(STAGES)
    for stage, record in online.records:
        assert record.losses.shape[0] == tm[f"f64.{stage}.gn.loss_data"].shape[0]
        for g in range(record.losses.shape[0]):
            data, *reg = record.losses[g].tolist()
            check(f"f64 {stage}[{g}] loss_data", rel(data, tm[f"f64.{stage}.gn.loss_data"][g]), 5e-4, "rel")
            check(f"f64 {stage}[{g}] loss_reg", rel(sum(reg), tm[f"f64.{stage}.gn.loss_reg"][g]), 5e-4, "rel")
            filt = record.params[g][-1]
            check(f"f64 {stage}[{g}] filter", rel_to_max(filt, tm[f"f64.{stage}.gn.filter"][g]), 2e-3)
    stage1 = online.records[0][1].params[-1]
    check("f64.stage1.project", rel_to_max(stage1[0], tm["f64.stage1.project"]), 2e-3)
    check("f64.stage1.filter", rel_to_max(stage1[1], tm["f64.stage1.filter"]), 2e-3)
    check("f64.stage2.filter", rel_to_max(online.records[1][1].params[-1][0], tm["f64.stage2.filter"]), 2e-3)
    check("f64.update.filter", rel_to_max(online.model.filter.weight, tm["f64.update.filter"]), 2e-3)
    check("f64.update.score", rel_to_max(score, tm["f64.update.score"]), 2e-3)
    check("f64.update.score_after", rel_to_max(score_after, tm["f64.update.score_after"]), 2e-3)
    weights = online.memory.weights
    assert weights.dtype == torch.float64
    check("f64.update.memory_weights_after", rel_to_max(weights, tm["f64.update.memory_weights_after"]), 1e-6)


# The float32 GN/CG is chaotic (fixture README "Tolerances"): 12 runs of the official code itself (1 vs 2 threads,
# native convolution, 1e-7 perturbations of init.x) ended 9.7-21.6 % above the float64 run's final data loss
# (stage 1 2074-2256 vs 1855.0, stage 2 2002-2145 vs 1802.9, update 1964-2080 vs 1791.1), and the stored float32
# run is one draw of that spread. So the band is taken around the float64 run, which is stable (threads and
# oneDNN move it by <= 8e-5): from the README's 0.98 x float64 (float32 never converged further) up to the
# largest measured excess times a margin of 1.5, i.e. 1 + 1.5 x 0.216. (The former upper end, 1.05 x the stored
# float32 loss, failed on a fixture made the same way: 1837.4 against its stored 1735.9, i.e. 1.17 x float64.)
FLOAT32_EXCESS_MEASURED = 0.216
FLOAT32_BAND = (0.98, 1 + 1.5 * FLOAT32_EXCESS_MEASURED)


def test_float32_optimisation_lies_in_the_official_band(tm, run32):
    online, score, score_after = run32
    check("f32 update.score (own init)", rel_to_max(score, tm["update.score"]), 0.15)
    check("f32 update.score_after", rel_to_max(score_after, tm["update.score_after"]), 0.15)
    for stage, record in online.records:
        final = record.losses[-1, 0].item()
        f64 = tm[f"f64.{stage}.gn.loss_data"][-1].item()
        low, high = FLOAT32_BAND[0] * f64, FLOAT32_BAND[1] * f64
        DIFFS.append((f"f32 {stage} final loss_data", "in band", f"{final:.1f}", f"[{low:.1f}, {high:.1f}]"))
        check_bound(f"official target model: f32 {stage} final loss_data / float64", final / f64, FLOAT32_BAND[1])
        assert low <= final <= high, f"{stage}: final loss_data {final} outside [{low}, {high}]"


def test_float32_memory_after_the_update(tm, inputs, run32):
    online, _, _ = run32
    memory = online.memory
    assert memory.current_size == tm["__meta__"]["update"]["memory_size_after"]
    check("f32 update.memory_weights_after", rel_to_max(memory.weights, tm["update.memory_weights_after"]), 1e-6)
    slot = tm["update.replace_index"].item()
    assert torch.equal(memory.labels[slot], tm["update.soft_mask"])
    check("f32 stored pixel weights", rel_to_max(memory.pixel_values[slot], tm["update.pixel_weight_values"]), 1e-6)
    k = tm["__meta__"]["K"]
    labels = torch.cat(memory.labels[:k])
    assert torch.equal(labels, tm["aug.labels"].float())
    # the stored sample is the projection of frame 1 with our own (float32-scattered) projection
    with torch.no_grad():
        assert torch.equal(memory.samples[slot], online.model.project(inputs["feat1.layer4"]))
    check("f32 stored sample vs update.sample", rel_to_max(memory.samples[slot], tm["update.sample"]), 0.15)
