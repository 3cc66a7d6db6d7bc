"""Gauss-Newton least-squares solver with preconditioned conjugate gradients.

The solver minimises ``sum_k ||r_k(x)||^2`` over a list of parameter tensors ``x``, where ``r`` is any
differentiable residual function returning a list of residual blocks. It knows nothing about the
model that produced the residuals.

Each Gauss-Newton (GN) iteration linearises the residuals at the current parameters and solves the
normal equations ``J^T J dx = -J^T r`` approximately with a few conjugate-gradient (CG) iterations:

* ``b = -J^T r`` comes from one ``autograd.grad`` call (with ``create_graph=True``);
* ``J^T J v`` uses the double-backward trick: ``J v`` is the gradient of ``<J^T g, v>`` with respect to
  the dummy cotangent ``g``, and ``J^T (J v)`` is a second ``autograd.grad`` call;
* the preconditioner divides each parameter block by its own scalar; inner products are summed over
  all blocks;
* CG is Polak-Ribiere with ``beta`` clamped at >= 0 and ``alpha = rho / <p, J^T J p>``;
* the update is ``x <- x + dx`` (step length 1).

The CG state (search direction ``p``, previous residual ``r_prev`` and ``rho``) persists across GN
iterations and across calls of :meth:`GaussNewtonCG.run`. At the start of every CG solve the previous
``rho`` is divided by ``direction_forget_factor``, which shrinks ``beta`` and so damps the carried
direction. A tiny factor (e.g. ``0.9 ** 750``) makes every solve a restart in practice; a factor of 1
continues CG across GN iterations unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

ResidualFn = Callable[[List[Tensor]], List[Tensor]]
"""Maps the parameter list to a list of residual tensors (any shapes)."""


def inner(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Inner product summed over all blocks: ``sum_i <a_i, b_i>`` as a 0-dim tensor."""
    return sum((x * y).sum() for x, y in zip(a, b))


def sum_of_squares(blocks: Sequence[Tensor]) -> Tensor:
    """Per-block sums of squares, (len(blocks),) float64."""
    return torch.stack([blk.detach().square().sum(dtype=torch.float64) for blk in blocks])


@dataclass
class RunRecord:
    """What one :meth:`GaussNewtonCG.run` did, G being the number of GN iterations.

    Attributes:
        losses: (G+1, R) float64 sum of squares of each of the R residual blocks, at the parameters
            before each GN iteration (rows 0..G-1) and after the run (row G).
        params: G+1 parameter snapshots (each a list of detached clones), same indexing as ``losses``.
        b: G right-hand sides ``-J^T r``, one list of tensors per GN iteration.
        cg: (N, 4) float64, one row per CG iteration: ``[GN index, rho, rho2, pq]`` with
            ``rho = <r, z>``, ``rho2 = <r_prev, z>`` (NaN when there was no previous direction),
            ``pq = <p, J^T J p>`` and ``z`` the preconditioned residual.
    """

    losses: Tensor
    params: List[List[Tensor]]
    b: List[List[Tensor]]
    cg: Tensor


class GaussNewtonCG:
    """Gauss-Newton / preconditioned CG least-squares solver over a list of tensors.

    Args:
        params: the tensors to optimise; they are updated **in place** by :meth:`run`.
        residual_fn: maps a list of tensors shaped like ``params`` to a list of residual tensors.
            It is called once per GN iteration and may read live external state (e.g. a memory). If it has
            a ``normal_operator(params)`` method, that gives CG's ``v -> J^T J v`` at ``params`` (once per GN
            iteration) instead of the double backward through the residuals.
        precond: one positive scalar per parameter tensor; CG divides that block's residual by it.
        direction_forget_factor: in (0, 1]; the previous ``rho`` is divided by it before every CG solve.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        residual_fn: ResidualFn,
        precond: Sequence[float],
        direction_forget_factor: float,
    ):
        assert len(params) == len(precond), "one preconditioner scalar per parameter tensor"
        assert 0.0 < direction_forget_factor <= 1.0, "the forget factor must be in (0, 1]"
        self.params = list(params)
        self.residual_fn = residual_fn
        self.precond = [float(c) for c in precond]
        self.direction_forget_factor = float(direction_forget_factor)
        self.reset()

    def reset(self) -> None:
        """Forget the CG state (the next solve starts with steepest descent)."""
        self._p: Optional[List[Tensor]] = None
        self._r_prev: Optional[List[Tensor]] = None
        self._rho: Optional[Tensor] = None

    def residuals(self) -> List[Tensor]:
        """The residual blocks at the current parameters, without gradient."""
        with torch.no_grad():
            return self.residual_fn(self.params)

    def run(self, cg_iters: Sequence[int], record: bool = False) -> Optional[RunRecord]:
        """One GN iteration per entry of ``cg_iters``, with that many CG iterations each.

        Returns a :class:`RunRecord` when ``record`` is true (costs one extra residual evaluation and
        parameter copies), otherwise None.
        """
        losses, snapshots, rhs, rows = [], [], [], []
        for gn_index, n_cg in enumerate(cg_iters):
            residual_losses, b, delta, cg_rows = self._gauss_newton_iteration(n_cg, record)
            if record:
                losses.append(residual_losses)
                snapshots.append([p.detach().clone() for p in self.params])
                rhs.append(b)
                rows += [[gn_index, *(float(v) for v in row)] for row in cg_rows]
            with torch.no_grad():
                for p, d in zip(self.params, delta):
                    p.add_(d)
        if not record:
            return None
        losses.append(sum_of_squares(self.residuals()))
        snapshots.append([p.detach().clone() for p in self.params])
        cg = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
        return RunRecord(torch.stack(losses), snapshots, rhs, cg)

    def _gauss_newton_iteration(self, n_cg: int, record: bool):
        """Linearise at the current parameters and solve for the step with ``n_cg`` CG iterations.

        Returns the per-block sums of squares of the residuals (R,) float64 (None unless ``record``),
        ``b = -J^T r``, the step (a list like ``params``) and the CG rows of
        :meth:`_conjugate_gradient`.
        """
        x = [p.detach().requires_grad_(True) for p in self.params]
        operator = getattr(self.residual_fn, "normal_operator", None)
        with torch.enable_grad():
            residuals = self.residual_fn(x)
            if operator is None:  # J^T J v by double backward through this graph
                g = [r.detach().requires_grad_(True) for r in residuals]
                jt_g = torch.autograd.grad(residuals, x, g, create_graph=True)
            else:
                jt_g = torch.autograd.grad(residuals, x, [r.detach() for r in residuals])
        b = [-v.detach() for v in jt_g]
        if operator is not None:  # the problem's own J^T J (e.g. one that avoids the residuals' resolution)
            with torch.no_grad():
                own = operator([p.detach() for p in self.params])

            def normal_op(v: List[Tensor]) -> List[Tensor]:
                with torch.no_grad():
                    return own(v)
        else:
            def normal_op(v: List[Tensor]) -> List[Tensor]:
                """``J^T J v`` by double backward."""
                jv = torch.autograd.grad(jt_g, g, v, retain_graph=True)
                return [t.detach() for t in torch.autograd.grad(residuals, x, jv, retain_graph=True)]

        delta, rows = self._conjugate_gradient(b, normal_op, n_cg)
        return (sum_of_squares(residuals) if record else None), b, delta, rows

    def _conjugate_gradient(
        self, b: List[Tensor], normal_op: Callable[[List[Tensor]], List[Tensor]], n_iter: int
    ):
        """Approximately solve ``J^T J dx = b``, continuing from the persistent CG state.

        Stops early if ``rho`` is exactly 0 (the residual vanished). Returns dx (a list like ``b``) and
        the per-iteration ``(rho, rho2, pq)`` as 0-dim tensors (``rho2`` is NaN without a previous
        direction).
        """
        rho_prev = self._rho / self.direction_forget_factor if self._p is not None else None
        r = b
        delta = [torch.zeros_like(t) for t in b]
        rows = []
        for _ in range(n_iter):
            z = [ri / c for ri, c in zip(r, self.precond)]
            rho = inner(r, z)
            if rho == 0:
                break
            if self._p is None:
                rho2 = torch.full_like(rho, math.nan)
                p = z
            else:
                rho2 = inner(self._r_prev, z)
                beta = ((rho - rho2) / rho_prev).clamp(min=0)
                p = [zi + beta * pi for zi, pi in zip(z, self._p)]
            q = normal_op(p)
            pq = inner(p, q)
            alpha = rho / pq
            delta = [d + alpha * pi for d, pi in zip(delta, p)]
            self._p, self._r_prev, self._rho = p, r, rho
            r = [ri - alpha * qi for ri, qi in zip(r, q)]
            rho_prev = rho
            rows.append((rho, rho2, pq))
        return delta, rows
