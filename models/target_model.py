"""FRTM target model: a 1x1 projection and a 3x3 filter fitted online by least squares.

The target model maps backbone ``layer4`` features (B, C, h, w) (stride 16) to a raw score map
(B, 1, h, w). It is trained towards {0, 1} labels at full label resolution (H, W) with the
Gauss-Newton / CG solver of :mod:`models.gauss_newton`, so the scores are not logits.

Contents:

* :class:`TargetModelConfig`: hyper-parameters, with the training and evaluation presets;
* :class:`TargetModel`: the network (state-dict keys ``project.weight``, ``filter.weight``);
* :func:`hinge_pixel_weights`: per-sample pixel-weight values;
* :class:`SampleMemory`: the weighted sample memory and its replacement rule;
* :class:`TargetModelProblem`: the least-squares residuals over a memory;
* :class:`OnlineTargetModel`: per-object learner state (init, apply, update).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base.errors import ConfigError
from models.gauss_newton import GaussNewtonCG, RunRecord

MIN_OBJECT_PIXELS = 10
"""Masks with fewer pixels > 0.5 count as empty (no update; no hinge re-weighting)."""


@dataclass(frozen=True)
class TargetModelConfig:
    """Hyper-parameters of the target model and its online optimisation.

    Attributes:
        c_channels: projection width c.
        memory_size: capacity of the long-term sample memory.
        init_iters: CG iterations per GN iteration of the first init stage (projection + filter).
        update_iters: CG iterations per GN iteration of the filter-only runs (init stage 2, updates).
        filter_reg: regularisation weights (projection, filter); the residual is ``reg * param``.
        precond: CG preconditioner scalars (projection, filter).
        precond_lr: together with ``cg_forgetting_rate`` gives the direction forget factor.
        cg_forgetting_rate: exponent of the direction forget factor ``(1 - precond_lr) ** rate``.
        pixel_weighting: None (all pixel weights 1) or ``"hinge"``.
        hinge_threshold: foreground fraction ``tf`` below which the hinge weighting rebalances.
        num_aug: number of first-frame samples, the original included.
        train_skipping: the CG update runs only when the applied-frame counter is a multiple of this.
        memory_lr: learning rate of the sample-memory weights.
    """

    c_channels: int
    memory_size: int
    init_iters: Tuple[int, ...]
    update_iters: Tuple[int, ...]
    filter_reg: Tuple[float, float]
    precond: Tuple[float, float]
    precond_lr: float
    cg_forgetting_rate: float
    pixel_weighting: Optional[str]
    hinge_threshold: float
    num_aug: int
    train_skipping: int
    memory_lr: float

    def __post_init__(self):
        if self.pixel_weighting not in (None, "hinge"):
            raise ConfigError(f"unknown pixel weighting {self.pixel_weighting!r} (use None or 'hinge')")
        if not self.init_iters or not self.update_iters or min(self.init_iters + self.update_iters) < 1:
            raise ConfigError("init_iters and update_iters need at least one positive CG iteration count")
        if self.num_aug < 1 or self.memory_size < self.num_aug:
            raise ConfigError(f"need 1 <= num_aug ({self.num_aug}) <= memory_size ({self.memory_size})")
        if not 0.0 < self.memory_lr <= 1.0:
            raise ConfigError(f"memory_lr must be in (0, 1], got {self.memory_lr}")
        if not 0.0 <= self.precond_lr < 1.0 or self.cg_forgetting_rate < 0:
            raise ConfigError("need 0 <= precond_lr < 1 and cg_forgetting_rate >= 0")
        if self.direction_forget_factor == 0.0:
            raise ConfigError("(1 - precond_lr) ** cg_forgetting_rate underflows to 0; lower the rate")
        if self.train_skipping < 1:
            raise ConfigError(f"train_skipping must be >= 1, got {self.train_skipping}")

    @property
    def direction_forget_factor(self) -> float:
        """``(1 - precond_lr) ** cg_forgetting_rate``: 3.7e-4 in training, 4.8e-35 at evaluation."""
        return (1.0 - self.precond_lr) ** self.cg_forgetting_rate

    @classmethod
    def train(cls) -> TargetModelConfig:
        """Training preset: c=32, memory 20, weak regularisation, 15 augmentations, no updates used."""
        return cls(
            c_channels=32,
            memory_size=20,
            init_iters=(5, 10, 10, 10, 10),
            update_iters=(10,),
            filter_reg=(1e-5, 1e-4),
            precond=(1e-5, 1e-4),
            precond_lr=0.1,
            cg_forgetting_rate=75,
            pixel_weighting=None,
            hinge_threshold=0.1,
            num_aug=15,
            train_skipping=8,
            memory_lr=0.1,
        )

    @classmethod
    def eval_fast(cls) -> TargetModelConfig:
        """Evaluation preset in fast mode (the one G-FRTM's evaluation always uses)."""
        return cls(
            c_channels=96,
            memory_size=80,
            init_iters=(5, 10, 10, 10),
            update_iters=(5,),
            filter_reg=(1e-4, 1e-2),
            precond=(1e-4, 1e-2),
            precond_lr=0.1,
            cg_forgetting_rate=750,
            pixel_weighting="hinge",
            hinge_threshold=0.1,
            num_aug=5,
            train_skipping=8,
            memory_lr=0.1,
        )

    @classmethod
    def eval_full(cls) -> TargetModelConfig:
        """Evaluation preset in non-fast mode: more GN/CG iterations than :meth:`eval_fast`."""
        return replace(cls.eval_fast(), init_iters=(5, 10, 10, 10, 10), update_iters=(10,))


class TargetModel(nn.Module):
    """``filter(project(x))``: 1x1 conv C -> c, then 3x3 conv (padding 1) c -> 1, no biases.

    Weights start with PyTorch's default conv initialisation (random).
    """

    def __init__(self, in_channels: int, c_channels: int):
        super().__init__()
        self.project = nn.Conv2d(in_channels, c_channels, 1, bias=False)
        self.filter = nn.Conv2d(c_channels, 1, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) features -> (B, 1, h, w) scores."""
        return self.filter(self.project(x))


def hinge_pixel_weights(labels: Tensor, threshold: float) -> Tensor:
    """Square roots of the hinge pixel weights, two values per sample.

    With ``af`` the fraction of pixels > 0.5 (taken as ``threshold`` when fewer than
    ``MIN_OBJECT_PIXELS`` pixels are > 0.5): if ``af < threshold`` the foreground weight is
    ``threshold / af`` and the background weight ``(1 - threshold) / (1 - af)``, otherwise both are 1.

    Args:
        labels: (N, 1, H, W) float labels (binary or soft).
    Returns:
        (N, 2) ``sqrt`` of the (foreground, background) weights, in the dtype of ``labels``.
    """
    fg = (labels > 0.5).flatten(1)
    n_fg = fg.sum(1)
    af = n_fg.to(labels.dtype) / fg.shape[1]
    af = torch.where(n_fg < MIN_OBJECT_PIXELS, torch.full_like(af, threshold), af)
    low = af < threshold
    w_fg = torch.where(low, threshold / af, torch.ones_like(af))
    w_bg = torch.where(low, (1.0 - threshold) / (1.0 - af), torch.ones_like(af))
    return torch.stack([w_fg, w_bg], dim=1).sqrt()


def pixel_weight_map(labels: Tensor, values: Tensor) -> Tensor:
    """Expand (N, 2) pixel-weight values to a map: ``values[:, 0]`` where labels > 0.5, else ``[:, 1]``.

    Args:
        labels: (N, 1, H, W).
        values: (N, 2).
    Returns:
        (N, 1, H, W).
    """
    v = values.view(-1, 2, 1, 1)
    return torch.where(labels > 0.5, v[:, 0:1], v[:, 1:2])


class SampleMemory:
    """Fixed-capacity memory of weighted training samples.

    Each slot holds a sample (1, ...), its label (1, ...) and its pixel-weight values (1, 2). Slots are
    filled lazily, so unused capacity costs nothing. Weights always sum to 1 once anything is stored.

    Replacement rule of :meth:`insert` (learning rate ``lr``):

    * empty memory or ``lr == 1``: the weights become one-hot at slot 0, which is overwritten;
    * otherwise the slot is ``argmin(weights)`` (first on ties; the first empty slot while filling);
      on the first insertion after :meth:`initialize` all weights are divided by ``1 - lr`` and the
      new slot gets ``lr``; on later insertions the new slot gets the weight of the previously
      inserted slot divided by ``1 - lr``; then all weights are renormalised to sum 1.
    """

    def __init__(
        self,
        capacity: int,
        learning_rate: float,
        dtype: torch.dtype = torch.float32,
        device: Optional[torch.device] = None,
    ):
        self.capacity = capacity
        self.learning_rate = learning_rate
        self.weights = torch.zeros(capacity, dtype=dtype, device=device)
        self.samples: List[Optional[Tensor]] = [None] * capacity
        self.labels: List[Optional[Tensor]] = [None] * capacity
        self.pixel_values: List[Optional[Tensor]] = [None] * capacity
        self.current_size = 0
        self._previous_slot: Optional[int] = None

    def initialize(self, samples: Tensor, labels: Tensor, pixel_values: Tensor) -> None:
        """Store K initial samples in slots 0..K-1; weights 1/K each, 2/K for slot 0, renormalised.

        Args:
            samples: (K, ...); labels: (K, ...); pixel_values: (K, 2).
        """
        k = samples.shape[0]
        assert 1 <= k <= self.capacity, "the initial samples must fit in the memory"
        self.weights.zero_()
        self.weights[:k] = 1.0 / k
        self.weights[0] = 2.0 / k
        self.weights /= self.weights.sum()
        for slot in range(self.capacity):
            keep = slot < k
            self.samples[slot] = samples[slot : slot + 1] if keep else None
            self.labels[slot] = labels[slot : slot + 1] if keep else None
            self.pixel_values[slot] = pixel_values[slot : slot + 1] if keep else None
        self.current_size = k
        self._previous_slot = None

    def insert(self, sample: Tensor, label: Tensor, pixel_values: Tensor) -> int:
        """Update the weights by the replacement rule and write the sample into the chosen slot.

        Args:
            sample: (1, ...); label: (1, ...); pixel_values: (1, 2).
        Returns:
            The slot that was written.
        """
        slot = self._update_weights()
        self.samples[slot] = sample
        self.labels[slot] = label
        self.pixel_values[slot] = pixel_values
        self.current_size = min(self.current_size + 1, self.capacity)
        self._previous_slot = slot
        return slot

    def _update_weights(self) -> int:
        """Apply the weight rule for one insertion; returns the slot to write."""
        lr = self.learning_rate
        if self.current_size == 0 or lr == 1.0:
            self.weights.zero_()
            self.weights[0] = 1.0
            return 0
        slot = int(torch.argmin(self.weights))
        if self._previous_slot is None:
            self.weights /= 1.0 - lr
            self.weights[slot] = lr
        else:
            self.weights[slot] = self.weights[self._previous_slot] / (1.0 - lr)
        self.weights /= self.weights.sum()
        return slot

    def active(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The slots with weight > 0, in slot order.

        Returns:
            samples (N, ...), labels (N, ...), pixel_values (N, 2), weights (N,).
        """
        slots = [i for i, w in enumerate(self.weights.tolist()) if w > 0]
        return (
            torch.cat([self.samples[i] for i in slots]),
            torch.cat([self.labels[i] for i in slots]),
            torch.cat([self.pixel_values[i] for i in slots]),
            self.weights[slots],
        )


def bilinear_matrix(n_in: int, n_out: int, dtype: torch.dtype, device=None) -> Tensor:
    """(n_out, n_in) matrix of 1-D linear interpolation with ``align_corners=False``.

    Source positions follow ``F.interpolate``: ``max(0, (i + 0.5) * n_in / n_out - 0.5)``, computed in
    ``dtype``; each row mixes the two neighbouring inputs (the last one repeats at the border).
    """
    scale = torch.tensor(n_in / n_out, dtype=dtype)
    src = ((torch.arange(n_out, dtype=dtype) + 0.5) * scale - 0.5).clamp(min=0)
    lower = src.floor().long().clamp(max=n_in - 1)
    upper = (lower + 1).clamp(max=n_in - 1)
    frac = src - lower.to(dtype)
    rows = torch.arange(n_out)
    matrix = torch.zeros(n_out, n_in, dtype=dtype)
    matrix.index_put_((rows, lower), 1 - frac, accumulate=True)
    matrix.index_put_((rows, upper), frac, accumulate=True)
    return matrix.to(device)


def upsample_bilinear(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` as two matrix products.

    Same values up to rounding; much faster to differentiate on CPU than the scatter-based backward.

    Args:
        x: (..., h, w).
    Returns:
        (..., H, W) with ``(H, W) = size``.
    """
    rows = bilinear_matrix(x.shape[-2], size[0], x.dtype, x.device)
    cols = bilinear_matrix(x.shape[-1], size[1], x.dtype, x.device)
    return rows @ (x @ cols.T)


def compose_filter(project: Tensor, filt: Tensor) -> Tensor:
    """The weight of ``filter(project(x))`` as one 3x3 convolution (no biases, padding 1).

    project (c, C, 1, 1), filt (1, c, 3, 3) -> (1, C, 3, 3) with
    ``w[0, C, i, j] = sum_c filt[0, c, i, j] * project[c, C]``.
    """
    return torch.einsum("ocij,cd->odij", filt, project.flatten(1))


def gram_stencil(weights_sq: Tensor, size: Tuple[int, int]) -> Tensor:
    """The operator ``U^T diag(weights_sq) U`` of a bilinear upsampling U from ``size`` as a 3x3 stencil.

    U maps (h, w) to the (H, W) of ``weights_sq`` (``align_corners=False``, :func:`upsample_bilinear`); its
    rows mix at most two neighbouring inputs per axis, so ``(U^T W U s)[a, b]`` only reads ``s`` at
    ``a + da, b + db`` with ``da, db`` in -1..1. weights_sq (N, 1, H, W) -> coefficients (N, 9, h, w), tap
    ``(da + 1) * 3 + (db + 1)``, for :func:`apply_stencil`.
    """
    h, w = size
    rows = bilinear_matrix(h, weights_sq.shape[-2], weights_sq.dtype, weights_sq.device)  # (H, h)
    cols = bilinear_matrix(w, weights_sq.shape[-1], weights_sq.dtype, weights_sq.device)  # (W, w)

    def products(matrix: Tensor, d: int) -> Tensor:  # column a: matrix[:, a] * matrix[:, a + d] (0 outside)
        shifted = torch.zeros_like(matrix)
        n = matrix.shape[1]
        if d >= 0:
            shifted[:, :n - d] = matrix[:, d:]
        else:
            shifted[:, -d:] = matrix[:, :n + d]
        return matrix * shifted

    row_products = [products(rows, d).T for d in (-1, 0, 1)]  # (h, H) each
    col_products = [products(cols, d) for d in (-1, 0, 1)]  # (W, w) each
    halves = [rp @ weights_sq for rp in row_products]  # (N, 1, h, W) each
    return torch.cat([half @ cp for half in halves for cp in col_products], dim=1)


def apply_stencil(coefficients: Tensor, s: Tensor) -> Tensor:
    """``out[a, b] = sum_k coefficients[k, a, b] * s[a + da_k, b + db_k]`` (zeros outside); (N, 9, h, w),
    (N, 1, h, w) -> (N, 1, h, w)."""
    h, w = s.shape[-2:]
    padded = F.pad(s, (1, 1, 1, 1))
    out = torch.zeros_like(s)
    for k in range(9):
        da, db = k // 3 - 1, k % 3 - 1
        out = out + coefficients[:, k:k + 1] * padded[..., 1 + da:1 + da + h, 1 + db:1 + db + w]
    return out


class TargetModelProblem:
    """Residuals of the target model's least-squares problem over the live contents of a memory.

    For the memory's active samples X (N, C', h, w), labels Y (N, 1, H, W), pixel-weight values and
    sample weights ``sw`` (N,), the residual blocks are

    * data: ``pw * sqrt(sw) * (bilinear(score, (H, W)) - Y)`` (N, 1, H, W), ``align_corners=False``,
      where ``pw`` is the pixel-weight map and ``score = filter(project(X))`` for
      ``params = [project, filter]`` (memory of raw features) or ``filter(X)`` for ``params = [filter]``
      (memory of projected features); the two-parameter score is computed as one 3x3 convolution with
      the :func:`compose_filter` weight (equal up to rounding);
    * regularisation: ``filter_reg[i] * params[i]``, one block per parameter.

    Args:
        memory: read at every call, so insertions between solver runs are seen.
        filter_reg: one regularisation weight per parameter tensor.
    """

    def __init__(self, memory: SampleMemory, filter_reg: Sequence[float]):
        self.memory = memory
        self.filter_reg = [float(r) for r in filter_reg]

    def normal_operator(self, params: List[Tensor]):
        """``v -> J^T J v`` at ``params`` (the Gauss-Newton matrix, for :class:`~models.gauss_newton.GaussNewtonCG`).

        The data block's ``J^T J`` is ``conv^T (U^T W^2 U) conv`` with U the bilinear upsampling of the scores:
        ``U^T W^2 U`` is applied as a 3x3 stencil at the feature resolution (:func:`gram_stencil`, computed
        once per call), so no CG iteration touches the label resolution. The same operator as the double
        backward through :meth:`__call__`, up to rounding.
        """
        x, labels, pixel_values, sample_weights = self.memory.active()
        weights_sq = pixel_weight_map(labels, pixel_values).square() * sample_weights.view(-1, 1, 1, 1)
        stencil = gram_stencil(weights_sq, x.shape[-2:])
        regs_sq = [reg * reg for reg in self.filter_reg]
        joint = len(params) == 2
        if joint:
            project, filt = params
            weight_shape = (1, project.shape[1], *filt.shape[-2:])
        else:
            weight_shape = tuple(params[0].shape)

        def op(v: List[Tensor]) -> List[Tensor]:
            dw = compose_filter(v[0], filt) + compose_filter(project, v[1]) if joint else v[0]
            scores = F.conv2d(x, dw, padding=1)
            grad_w = torch.nn.grad.conv2d_weight(x, weight_shape, apply_stencil(stencil, scores), padding=1)
            if joint:
                out = [torch.einsum("ocij,odij->cd", filt, grad_w).view_as(project),
                       torch.einsum("odij,cd->ocij", grad_w, project.flatten(1))]
            else:
                out = [grad_w]
            return [o + r * vi for o, r, vi in zip(out, regs_sq, v)]

        return op

    def __call__(self, params: List[Tensor]) -> List[Tensor]:
        """params: ``[project (c, C, 1, 1), filter (1, c, 3, 3)]`` or ``[filter (1, c, 3, 3)]``."""
        assert len(params) == len(self.filter_reg), "one regularisation weight per parameter"
        x, labels, pixel_values, sample_weights = self.memory.active()
        # Raw features: filter(project(x)) is one 3x3 conv C -> 1 with the composed weight (the 1x1
        # projection has no bias, so zero padding commutes with it); the same scores up to rounding, at
        # 1/c of the FLOPs in the residual and in both products of every CG iteration.
        weight = compose_filter(params[0], params[1]) if len(params) == 2 else params[0]
        scores = upsample_bilinear(F.conv2d(x, weight, padding=1), labels.shape[-2:])
        weights = pixel_weight_map(labels, pixel_values) * sample_weights.sqrt().view(-1, 1, 1, 1)
        data = weights * (scores - labels)
        return [data] + [reg * p for reg, p in zip(self.filter_reg, params)]


class OnlineTargetModel:
    """Per-object target-model learner: the network, its sample memory, solver state and frame counter.

    Typical use by a tracker, per object::

        online = OnlineTargetModel(TargetModel(256, cfg.c_channels), cfg)
        online.init(aug_features, aug_labels)        # (K, C, h, w), (K, 1, H, W)
        score = online.apply(features)                # every computed frame, (1, 1, h, w)
        online.update(merged_soft_mask)               # (1, 1, H, W), after merging

    Works in the dtype of the features given to :meth:`init` (float32 or float64); the model is moved
    to their device and dtype.

    Args:
        model: the network to fit; its current weights are the starting point.
        config: hyper-parameters; ``config.c_channels`` must match the model.
        record_runs: keep a :class:`~models.gauss_newton.RunRecord` of every solver run in
            :attr:`records` as ``(stage, record)`` with stage ``"stage1"``, ``"stage2"`` or ``"update"``.
    """

    def __init__(self, model: TargetModel, config: TargetModelConfig, record_runs: bool = False):
        assert model.filter.in_channels == config.c_channels, "model width differs from the config"
        self.model = model
        self.config = config
        self.record_runs = record_runs
        self.records: List[Tuple[str, RunRecord]] = []
        self.memory: Optional[SampleMemory] = None
        self.frame_count = 0
        self._filter_solver: Optional[GaussNewtonCG] = None
        self._current_sample: Optional[Tensor] = None

    def init(self, x_aug: Tensor, y_aug: Tensor) -> None:
        """Fit the model to the augmented first frame, in two stages.

        1. Projection and filter jointly on the raw features, in a memory of capacity K, with
           ``init_iters``.
        2. The K samples are projected with the learned (from now on frozen) projection and stored in
           the long-term memory; the filter alone is optimised with ``update_iters``.

        Args:
            x_aug: (K, C, h, w) features of the augmented images, the original first.
            y_aug: (K, 1, H, W) their labels (binary, any numeric dtype).
        """
        cfg = self.config
        self.model.to(device=x_aug.device, dtype=x_aug.dtype)
        labels = y_aug.to(x_aug.dtype)
        pixel_values = self._pixel_weight_values(labels)

        raw_memory = self._new_memory(x_aug.shape[0], x_aug)
        raw_memory.initialize(x_aug, labels, pixel_values)
        joint_solver = GaussNewtonCG(
            [self.model.project.weight, self.model.filter.weight],
            TargetModelProblem(raw_memory, cfg.filter_reg),
            cfg.precond,
            cfg.direction_forget_factor,
        )
        self._run("stage1", joint_solver, cfg.init_iters)

        with torch.no_grad():
            projected = self.model.project(x_aug)
        self.memory = self._new_memory(cfg.memory_size, x_aug)
        self.memory.initialize(projected, labels, pixel_values)
        self._filter_solver = GaussNewtonCG(
            [self.model.filter.weight],
            TargetModelProblem(self.memory, cfg.filter_reg[1:]),
            cfg.precond[1:],
            cfg.direction_forget_factor,
        )
        self._run("stage2", self._filter_solver, cfg.update_iters)

    @torch.no_grad()
    def apply(self, x: Tensor) -> Tensor:
        """Score a frame; counts the frame and caches its projected features for :meth:`update`.

        Args:
            x: (B, C, h, w) features.
        Returns:
            (B, 1, h, w) scores.
        """
        self.frame_count += 1
        self._current_sample = self.model.project(x)
        return self.model.filter(self._current_sample)

    def update(self, soft_mask: Tensor) -> bool:
        """Add the last applied frame to the memory with its merged soft mask; maybe run CG.

        Nothing happens when fewer than ``MIN_OBJECT_PIXELS`` pixels are > 0.5. Otherwise the soft
        mask is stored as the label, pixel weights come from the binarised mask, and the filter is
        re-optimised with ``update_iters`` when ``frame_count % train_skipping == 0``.

        Args:
            soft_mask: (1, 1, H, W) in [0, 1], at label resolution.
        Returns:
            Whether the sample was stored.
        """
        assert self.memory is not None and self._current_sample is not None, "init() and apply() first"
        assert self._current_sample.shape[0] == 1, "update() follows an apply() on a single frame"
        if int((soft_mask > 0.5).sum()) < MIN_OBJECT_PIXELS:
            return False
        label = soft_mask.to(self._current_sample.dtype)
        self.memory.insert(self._current_sample, label, self._pixel_weight_values(label))
        if self.frame_count % self.config.train_skipping == 0:
            self._run("update", self._filter_solver, self.config.update_iters)
        return True

    def _pixel_weight_values(self, labels: Tensor) -> Tensor:
        """(N, 1, H, W) labels -> (N, 2) square-rooted (foreground, background) pixel weights."""
        if self.config.pixel_weighting == "hinge":
            return hinge_pixel_weights(labels, self.config.hinge_threshold)
        return torch.ones(labels.shape[0], 2, dtype=labels.dtype, device=labels.device)

    def _new_memory(self, capacity: int, like: Tensor) -> SampleMemory:
        return SampleMemory(capacity, self.config.memory_lr, dtype=like.dtype, device=like.device)

    def _run(self, stage: str, solver: GaussNewtonCG, cg_iters: Sequence[int]) -> None:
        record = solver.run(cg_iters, record=self.record_runs)
        if record is not None:
            self.records.append((stage, record))
