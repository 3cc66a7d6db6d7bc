"""Gauss-Newton / preconditioned CG solver on toy least-squares problems with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from models.gauss_newton import GaussNewtonCG

RESTART = 0.9**750  # the evaluation forget factor: every CG solve is a restart in practice


def linear_problem(m: int = 40, n1: int = 5, n2: int = 7, reg: float = 0.0, seed: int = 0):
    """A two-block linear least-squares problem ``||A1 x1 + A2 x2 - y||^2 + reg^2 ||x||^2``.

    Returns the residual function, zero-initialised parameters and the exact minimiser (n1 + n2,).
    """
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, n1 + n2, generator=gen, dtype=torch.float64)
    y = torch.randn(m, generator=gen, dtype=torch.float64)

    def residuals(params):
        x1, x2 = params
        data = a[:, :n1] @ x1 + a[:, n1:] @ x2.reshape(-1) - y
        return [data, reg * x1, reg * x2]

    params = [torch.zeros(n1, dtype=torch.float64), torch.zeros(n2, 1, dtype=torch.float64)]
    if reg == 0.0:
        solution = torch.linalg.lstsq(a, y[:, None]).solution[:, 0]
    else:
        solution = torch.linalg.solve(a.T @ a + reg**2 * torch.eye(n1 + n2, dtype=torch.float64), a.T @ y)
    return residuals, params, solution


def flat(params):
    return torch.cat([p.reshape(-1) for p in params])


@pytest.mark.parametrize("precond", [(1.0, 1.0), (1e-2, 10.0)])
@pytest.mark.parametrize("reg", [0.0, 0.5])
def test_linear_problem_matches_closed_form(precond, reg):
    residuals, params, solution = linear_problem(reg=reg)
    solver = GaussNewtonCG(params, residuals, precond, RESTART)
    solver.run((12, 12, 12))
    assert torch.allclose(flat(params), solution, rtol=0, atol=1e-9)


def test_params_are_updated_in_place_and_record_has_the_documented_shapes():
    residuals, params, _ = linear_problem(reg=0.1)
    originals = list(params)
    record = GaussNewtonCG(params, residuals, (1.0, 1.0), RESTART).run((3, 2), record=True)
    assert all(p is q for p, q in zip(params, originals))
    assert flat(params).abs().max() > 0
    assert record.losses.shape == (3, 3) and record.losses.dtype == torch.float64
    assert len(record.params) == 3 and len(record.b) == 2
    assert torch.equal(flat(record.params[-1]), flat(params))
    assert record.cg.shape == (5, 4)
    assert record.cg[:, 0].tolist() == [0, 0, 0, 1, 1]
    assert math.isnan(record.cg[0, 2])  # no previous direction on the very first CG iteration
    assert not math.isnan(record.cg[3, 2])  # the (damped) direction is carried into GN iteration 1


def test_b_is_minus_half_the_loss_gradient():
    residuals, params, _ = linear_problem(reg=0.3)
    x = [torch.randn_like(p, generator=torch.Generator().manual_seed(1)) for p in params]
    for p, v in zip(params, x):
        p.copy_(v)
    record = GaussNewtonCG(params, residuals, (1.0, 1.0), RESTART).run((1,), record=True)
    leaves = [v.clone().requires_grad_(True) for v in x]
    loss = sum(r.square().sum() for r in residuals(leaves))
    grads = torch.autograd.grad(loss, leaves)
    for b, g in zip(record.b[0], grads):
        assert torch.allclose(b, -0.5 * g, rtol=1e-12, atol=1e-12)
    assert torch.allclose(record.losses[0].sum(), loss.detach(), rtol=1e-12, atol=0)


def test_without_forgetting_the_direction_persists_across_gauss_newton_iterations():
    """With forget factor 1, n GN iterations of one CG step each continue a single CG solve."""
    residuals, params_cg, _ = linear_problem(n1=20, n2=20, m=60)
    GaussNewtonCG(params_cg, residuals, (1.0, 2.0), 1.0).run((6,))

    _, params_gn, _ = linear_problem(n1=20, n2=20, m=60)
    solver = GaussNewtonCG(params_gn, residuals, (1.0, 2.0), 1.0)
    solver.run((1, 1, 1))
    solver.run((1, 1, 1))  # the state also persists across run() calls
    assert torch.allclose(flat(params_gn), flat(params_cg), rtol=0, atol=1e-10)

    _, params_restart, _ = linear_problem(n1=20, n2=20, m=60)
    GaussNewtonCG(params_restart, residuals, (1.0, 2.0), RESTART).run((1,) * 6)
    assert (flat(params_restart) - flat(params_cg)).abs().max() > 1e-3


def test_reset_forgets_the_direction():
    residuals, params_a, _ = linear_problem(n1=20, n2=20, m=60)
    solver = GaussNewtonCG(params_a, residuals, (1.0, 1.0), 1.0)
    solver.run((1,))
    solver.reset()
    solver.run((1,))
    _, params_b, _ = linear_problem(n1=20, n2=20, m=60)
    GaussNewtonCG(params_b, residuals, (1.0, 1.0), RESTART).run((1, 1))
    assert torch.allclose(flat(params_a), flat(params_b), rtol=0, atol=1e-12)


def separable_points(n: int = 60, seed: int = 0):
    """Two well separated 2-D Gaussian blobs, labels (n,) in {0, 1}."""
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 2).double()
    centres = torch.tensor([[-2.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    points = centres[labels.long()] + 0.7 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return points, labels


def test_logistic_toy_decreases_its_loss_and_separates_the_classes():
    points, labels = separable_points()

    def residuals(params):
        w, bias = params
        return [torch.sigmoid(points @ w + bias) - labels, 1e-3 * w]

    params = [torch.zeros(2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]
    record = GaussNewtonCG(params, residuals, (1.0, 1.0), RESTART).run((3,) * 8, record=True)
    total = record.losses.sum(1)
    assert torch.all(total[1:] < total[:-1])
    assert total[-1] < 0.1 * total[0]
    predicted = (points @ params[0] + params[1] > 0).double()
    assert torch.equal(predicted, labels)
