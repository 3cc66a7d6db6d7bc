"""``train.py --stage gttvos``: G-TTVOS's reuse modules trained on a trained TTVOS, resumably.

The TTVOS weights come from ``--initPth`` and stay as they are (frozen, eval mode): at tau 1 the trained G-TTVOS
computes exactly what that TTVOS computes. The template modules (placement ``frame``), the gate, the
delta-generator and the translator train with the paper's losses (:mod:`trainers.gttvos_recurrent`), Adam,
StepLR, one checkpoint per epoch (a project-format ``gttvos`` file that ``evaluate.py --model`` runs), and
``runs/<name>/gttvos.pth`` at the end. The loop is TTVOS's (:class:`trainers.ttvos.TTVOSTrainer`).
"""

from __future__ import annotations

from typing import Dict

from torch import Tensor

from base.errors import ConfigError
from lib.tools.checkpoint import load_ttvos
from models.gttvos import GTTVOS
from trainers.gttvos_recurrent import GTTVOSLossOptions, GTTVOSRecurrent
from trainers.ttvos import TTVOSTrainer

REUSE_MODULES = ("Tmatching", "convGS", "Convert_Diff", "Diff_process")


def gttvos_from_ttvos(path: str, placement: str, trust: bool = False) -> GTTVOS:
    """A G-TTVOS with the TTVOS weights of ``path`` (a TTVOS file: fresh reuse modules with the gate's training
    init; a G-TTVOS file of the same placement: all its weights)."""
    start = load_ttvos(path, trust=trust)
    if isinstance(start, GTTVOS) and start.placement != placement:
        raise ConfigError(f"--initPth {path}: a G-TTVOS with placement {start.placement}, but this run trains "
                          f"--placement {placement}")
    model = GTTVOS(start.backbone_name, start.query_group, placement)
    if isinstance(start, GTTVOS):
        model.load_state_dict(start.state_dict())
    else:
        model.init_gate_bias()
        missing, unexpected = model.load_state_dict(start.state_dict(), strict=False)
        assert not unexpected and all(k.split(".")[0] in REUSE_MODULES for k in missing), (missing, unexpected)
    return model


class GTTVOSTrainer(TTVOSTrainer):
    """Builds G-TTVOS from ``--initPth``, freezes its TTVOS, and trains the reuse modules (TTVOS's construction,
    resumption and loop; a :class:`trainers.config.GTTVOSTrainConfig`)."""

    STATS = ("loss", "seg", "reuse", "delta", "gate", "iou", "reuse_iou", "reuse_rate")

    def build_model(self):
        config = self.config
        self.model = gttvos_from_ttvos(config.init_pth, config.placement, trust=config.trust_checkpoint)
        if self.model.backbone_name != config.backbone:
            raise ConfigError(f"--initPth {config.init_pth}: a {self.model.backbone_name} TTVOS, but this run trains "
                              f"--ttvos-backbone {config.backbone}")
        self.log(f"--initPth: TTVOS weights from {config.init_pth} (frozen); training placement {config.placement}")
        self.model.to(self.device)
        self.frozen = [child for name, child in self.model.named_children() if name not in REUSE_MODULES]
        for child in self.frozen:
            child.requires_grad_(False)
        return self.model.reuse_parameters()

    def build_recurrent(self):
        config = self.config
        return GTTVOSRecurrent(self.model, GTTVOSLossOptions(
            m1=config.m1, m2=config.m2, margin_epochs=config.margin_epochs, reuse_weight=config.reuse_weight,
            official_quirks=config.official_quirks))

    @staticmethod
    def describe(stats: Dict[str, float]) -> str:
        return (f"loss {stats['loss']:.4f} (seg {stats['seg']:.4f}, reuse {stats['reuse']:.4f}, delta "
                f"{stats['delta']:.4f}, gate {stats['gate']:.4f}), IoU {stats['iou']:.3f}, reuse-path IoU "
                f"{stats['reuse_iou']:.3f}, reuse rate {stats['reuse_rate']:.3f}")

    def step(self, images: Tensor, labels: Tensor, epoch: int) -> Dict[str, Tensor]:
        return self.recurrent(images, labels, epoch)
