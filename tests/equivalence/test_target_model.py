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
import torch.nn.functional as F

from models.gauss_newton import GaussNewtonCG, sum_of_squares
from models.target_model import (
    OnlineTargetModel,
    SampleMemory,
    TargetModel,
    TargetModelConfig,
    TargetModelProblem,
    bilinear_matrix,
    compose_filter,
    hinge_pixel_weights,
    pixel_weight_map,
    upsample_bilinear,
)
from tests.numerics import check as check_bound
from tests.numerics import gamma

STAGES = ("stage1", "stage2", "update")
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


# ----------------------------------------------------------------------------------------------
# rounding bounds of the least-squares problem's reductions


class ProblemMagnitudes:
    """Derived float32 rounding bounds for ``b = -J^T r``, ``rho`` and ``pq`` of one GN/CG point (Higham 3.5: a
    product of matrices applied in floating point, in any order, is within ``gamma(n1 + n2 + ...)`` of the exact
    value times the same product of the absolute values). The absolute-value chain is evaluated in float64 from the
    stored inputs: ``|J|^T (|W| (|U| |conv|(|x|, |w|) + |Y|))`` for b and ``|J|^T |J| |v|`` for the Gauss-Newton
    matrix, with the accumulation lengths of both the official code (F.interpolate and its scatter backward) and
    this project (matrix upsampling, the 3x3 stencil Gram operator), whichever is longer."""

    def __init__(self, memory: SampleMemory, params, filter_reg):
        x, labels, pixel_values, sample_weights = memory.active()
        self.x = x.double().abs()
        self.labels = labels.double()
        root = sample_weights.double().sqrt().view(-1, 1, 1, 1)
        self.weights = pixel_weight_map(labels, pixel_values).double() * root
        self.params = [p.double().abs() for p in params]
        self.regs = [float(r) for r in filter_reg]
        n, c_in, h, w = x.shape
        big_h, big_w = labels.shape[-2:]
        joint = len(params) == 2
        c = params[0].shape[0] if joint else 0
        upsample = max(h + w, 4)  # matrix products over w then h; F.interpolate: 4 products, 3 sums
        # the adjoint: matrix products over H then W; F.interpolate's backward scatters <= (2H/h + 2)(2W/w + 2)
        adjoint = max(big_h + big_w, (2 * big_h // h + 2) * (2 * big_w // w + 2))
        weight_grad = n * h * w + c_in  # conv2d_weight over samples and pixels, then the einsum to project/filter
        self.n_b = c + 9 * c_in + upsample + 4 + adjoint + weight_grad + 4  # + rounding of sqrt(sw), pw, reg adds
        gram = max(big_h + big_w + 2 + 9, upsample + adjoint)  # stencil (its sums over H, W and 9 taps) or U^T U
        self.n_jtj = 2 * c + 9 * c_in + gram + weight_grad + 2
        self.n_params = sum(p.numel() for p in params)

    def _composed(self, v):
        if len(self.params) == 2:
            return compose_filter(v[0], self.params[1]) + compose_filter(self.params[0], v[1])
        return v[0]

    def _back(self, out_map, shape):
        grad = torch.nn.grad.conv2d_weight(self.x, shape, out_map, padding=1)
        if len(self.params) == 2:
            project, filt = self.params
            return [torch.einsum("ocij,odij->cd", filt, grad).view_as(project),
                    torch.einsum("odij,cd->ocij", grad, project.flatten(1))]
        return [grad]

    def _adjoint(self, v):
        rows = bilinear_matrix(self.x.shape[-2], v.shape[-2], v.dtype)
        cols = bilinear_matrix(self.x.shape[-1], v.shape[-1], v.dtype)
        return rows.T @ v @ cols

    def b(self):
        """Elementwise ``sum_i |J_ij| |r_i|`` magnitudes of b (with the residual's own magnitude)."""
        w = compose_filter(*self.params) if len(self.params) == 2 else self.params[0]
        scores = upsample_bilinear(F.conv2d(self.x, w, padding=1), self.labels.shape[-2:])
        residual = self.weights * (scores + self.labels.abs())
        out = self._back(self._adjoint(self.weights * residual), tuple(w.shape))
        return [o + r * r * p for o, r, p in zip(out, self.regs, self.params)]

    def jtj(self, v):
        """``|J|^T |J| |v|``."""
        v = [t.double().abs() for t in v]
        dw = self._composed(v)
        scores = upsample_bilinear(F.conv2d(self.x, dw, padding=1), self.labels.shape[-2:])
        out = self._back(self._adjoint(self.weights.square() * scores), tuple(dw.shape))
        return [o + r * r * t for o, r, t in zip(out, self.regs, v)]

    def b_bound(self):
        """Bound on |b_ours - b_official| per element: each is within gamma(n_b) * magnitude of the exact b."""
        return [2 * gamma(self.n_b) * m for m in self.b()]

    def rho_bound(self, b_ref, precond):
        """|rho_ours - rho_official|, rho = sum_j b_j^2 / c_j: the b errors, then the inner product's own roundings
        (P products and sums on each side)."""
        db = self.b_bound()
        moved = sum((((2 * r.double().abs() + d) * d) / c).sum() for r, d, c in zip(b_ref, db, precond))
        rho = sum((r.double().square() / c).sum() for r, c in zip(b_ref, precond))
        return (moved + 2 * gamma(self.n_params + 1) * rho).item()

    def pq_bound(self, b_ref, precond):
        """|pq_ours - pq_official| on the first CG iteration (p = z = b / c): pq = <p, H p> moves by
        <= 2 <|dp|, |H| |p|> + <|dp|, |H| |dp|> with dp the b errors / c, plus H p's and the inner product's
        roundings gamma(n_jtj + P) <|p|, |H| |p|> on each side (|H| <= |J|^T |J| elementwise)."""
        p = [r.double().abs() / c for r, c in zip(b_ref, precond)]
        dp = [d / c for d, c in zip(self.b_bound(), precond)]
        hp, hdp = self.jtj([pi + di for pi, di in zip(p, dp)]), self.jtj(dp)
        moved = sum((2 * d * h + d * hd).sum() for d, h, hd in zip(dp, hp, hdp))
        own = sum((pi * h).sum() for pi, h in zip(p, hp))
        return (moved + 2 * gamma(self.n_jtj + self.n_params) * own).item()


@pytest.mark.parametrize("stage", STAGES)
def test_problem_definition(tm, config, stage):
    """At each stored parameter point: losses, b = -J^T r and the first CG iteration's rho and pq.

    b, rho and pq are float32 sums of 10^4 to 10^6 terms with heavy cancellation (near the optimum |b| is 10^-3 to
    10^-5 of the sum of its terms' magnitudes), so their error has no stable relative-to-max size: each is bounded
    by :class:`ProblemMagnitudes` from the sum of its terms' absolute values, computed from the stored inputs, on
    every kernel family. The losses (sums of squares, no cancellation) keep the README's 1e-5.
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
            magnitudes = ProblemMagnitudes(memory, [tm[f"{stage}.gn.{name}"][g] for name in names], filter_reg)
            record = solver.run((1,), record=True)
            data, *reg = record.losses[0].tolist()
            refs = [tm[f"{stage}.gn.b.{name}"][g] for name in names]
            for name, b, ref, bound in zip(names, record.b[0], refs, magnitudes.b_bound()):
                check(f"{where} b.{name}", ((b.double() - ref.double()).abs() / bound).max().item(), 1.0,
                      "err/bound")
            cg = tm[f"{stage}.cg"]
            first = cg[cg[:, 0] == g][0]
            check(f"{where} cg rho", abs(record.cg[0, 1] - first[1]).item() / magnitudes.rho_bound(refs, precond),
                  1.0, "err/bound")
            check(f"{where} cg pq", abs(record.cg[0, 3] - first[3]).item() / magnitudes.pq_bound(refs, precond),
                  1.0, "err/bound")
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


# The float32 GN/CG is chaotic (fixture README "Tolerances"): CG loses orthogonality within 4-5 iterations, and
# 12 runs of the official code itself (1 vs 2 threads, native convolution, 1e-7 perturbations of init.x) ended
# stage 1 / stage 2 / update at final data losses of at most 2256 / 2145 / 2080 against the float64 run's
# 1855.0 / 1802.9 / 1791.1; no float32 run converged below 0.98 x float64 (README, recommended tests). A float32
# chain is one draw of that spread, so the float32 runs are compared stage by stage, each from the project's own
# float64 run's state at the stage's entry (the same inputs), where the spread does not compound.
OFFICIAL_FLOAT32_EXCESS = {"stage1": 2256 / 1855.0 - 1, "stage2": 2145 / 1802.9 - 1, "update": 2080 / 1791.1 - 1}
FLOAT32_FLOOR = 0.98
# scores of a float32 run vs the stored float32 run: the README's recommended tolerance (float32 runs scatter by
# about 5 % among themselves and by up to 9 % from float64)
FLOAT32_SCORE_TOLERANCE = 0.15


def stage_entry(tm, run64, stage: str, dtype: torch.dtype):
    """(memory, parameters, filter_reg, precond) of one stage of the project's float64 run, at its entry, in
    ``dtype``: the stage-1 memory of raw features, then the float64 run's own projected samples (and, for the
    update, its projection of frame 1 with the stored soft mask)."""
    online, _, _ = run64
    config = online.config
    record = dict(online.records)[stage]
    params = [p.to(dtype).clone() for p in record.params[0]]
    k = tm["__meta__"]["K"]
    pixel_values = tm["init.pixel_weight_values"].to(dtype)
    if stage == "stage1":
        memory = SampleMemory(k, config.memory_lr, dtype=dtype)
        memory.initialize(tm["init.x"].to(dtype), tm["aug.labels"].to(dtype), pixel_values)
        return memory, params, config.filter_reg, config.precond
    memory = SampleMemory(config.memory_size, config.memory_lr, dtype=dtype)
    samples = torch.cat(online.memory.samples[:k]).to(dtype)
    memory.initialize(samples, tm["aug.labels"].to(dtype), pixel_values)
    if stage == "update":
        slot = tm["update.replace_index"].item()
        memory.insert(online.memory.samples[slot].to(dtype), tm["update.soft_mask"].to(dtype),
                      tm["update.pixel_weight_values"].to(dtype))
    return memory, params, config.filter_reg[1:], config.precond[1:]


@pytest.mark.parametrize("stage", STAGES)
def test_float32_stage_against_the_float64_stage(tm, config, run64, stage):
    """One stage in float32 and in float64 from the same entry state: the same iteration counts; the first CG
    iteration's rho and pq within their derived rounding bounds (:class:`ProblemMagnitudes`, one side float64);
    the final data loss within the official float32 spread of that stage above float64, and not below 0.98 x."""
    cg_iters = {"stage1": config.init_iters, "stage2": config.update_iters, "update": config.update_iters}[stage]
    records = {}
    for dtype in (torch.float64, torch.float32):
        memory, params, filter_reg, precond = stage_entry(tm, run64, stage, dtype)
        solver = GaussNewtonCG(params, TargetModelProblem(memory, filter_reg), precond,
                               config.direction_forget_factor)
        records[dtype] = solver.run(cg_iters, record=True)
    r64, r32 = records[torch.float64], records[torch.float32]
    for record in (r64, r32):
        assert record.losses.shape[0] == len(cg_iters) + 1
        assert record.cg[:, 0].tolist() == [float(g) for g, n in enumerate(cg_iters) for _ in range(n)]
    memory, params, filter_reg, precond = stage_entry(tm, run64, stage, torch.float64)
    magnitudes = ProblemMagnitudes(memory, params, filter_reg)
    b64 = r64.b[0]
    check(f"f32 vs f64 {stage} first cg rho", abs(r32.cg[0, 1] - r64.cg[0, 1]).item()
          / magnitudes.rho_bound(b64, precond), 1.0, "err/bound")
    check(f"f32 vs f64 {stage} first cg pq", abs(r32.cg[0, 3] - r64.cg[0, 3]).item()
          / magnitudes.pq_bound(b64, precond), 1.0, "err/bound")
    final32, final64 = r32.losses[-1, 0].item(), r64.losses[-1, 0].item()
    low, high = FLOAT32_FLOOR * final64, (1 + OFFICIAL_FLOAT32_EXCESS[stage]) * final64
    DIFFS.append((f"f32 {stage} final loss_data (stage from f64 entry)", "in band", f"{final32:.1f}",
                  f"[{low:.1f}, {high:.1f}]"))
    assert low <= final32 <= high, f"{stage}: final loss_data {final32} outside [{low}, {high}]"
    assert (r32.losses[1:, 0] < r32.losses[:-1, 0]).all(), "every float32 GN iteration lowers the data loss"


def test_float32_chain_runs_every_iteration(tm, config, run32, run64):
    """The whole float32 init/apply/update: the configured iteration counts in every stage, the data loss lowered
    by every GN iteration, and scores within the README's float32 tolerance of the stored float32 run."""
    online, score, score_after = run32
    assert [name for name, _ in online.records] == [name for name, _ in run64[0].records] == list(STAGES)
    for stage, record in online.records:
        cg_iters = config.init_iters if stage == "stage1" else config.update_iters
        assert record.losses.shape[0] == len(cg_iters) + 1 and record.cg.shape[0] == sum(cg_iters), stage
        assert (record.losses[1:, 0] < record.losses[:-1, 0]).all(), stage
    check("f32 update.score (own init)", rel_to_max(score, tm["update.score"]), FLOAT32_SCORE_TOLERANCE)
    check("f32 update.score_after", rel_to_max(score_after, tm["update.score_after"]), FLOAT32_SCORE_TOLERANCE)


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
