"""Class-weighted pixel cross-entropy, as OCNet trains Base-OC on Cityscapes.

    L = sum_i w_{y_i} CE(p_i, y_i) / sum_i w_{y_i}      over pixels i with y_i != ignore

which is PyTorch's ``F.cross_entropy(weight=w, ignore_index=255)``, the loss of
OCNet's code (class-balanced weights for the 19 Cityscapes classes, on both the
main and the deep-supervision branch). mmseg 1.2.2's ``CrossEntropyLoss`` with
``class_weight`` indexes the weights with the raw labels and fails on the
ignore index 255 (open-mmlab/mmsegmentation#3734), so every Cityscapes batch
would crash; this loss has no such path.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class ClassWeightedCrossEntropyLoss(nn.Module):
    """Args:
        class_weight: one weight per class (``None``: all 1, plain CE).
        loss_weight: factor on the loss (0.4 for OCNet's deep supervision).
        loss_name: key in the loss dict; must start with ``loss_`` to be
            back-propagated.
    """

    def __init__(self, class_weight: Optional[Sequence[float]] = None,
                 loss_weight: float = 1.0, loss_name: str = 'loss_ce') -> None:
        super().__init__()
        self.class_weight = None if class_weight is None else list(map(float, class_weight))
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self, cls_score: Tensor, label: Tensor, weight: Optional[Tensor] = None,
                ignore_index: int = 255, **kwargs) -> Tensor:
        """``cls_score`` (N, C, H, W), ``label`` (N, H, W); ``weight`` (N, H, W)
        is an optional per-pixel weight (mmseg's pixel samplers)."""
        if self.class_weight is not None and len(self.class_weight) != cls_score.shape[1]:
            raise ValueError(f'ClassWeightedCrossEntropyLoss: {len(self.class_weight)} class '
                             f'weights for {cls_score.shape[1]} classes')
        w = None if self.class_weight is None else cls_score.new_tensor(self.class_weight)
        if weight is None:
            return self.loss_weight * F.cross_entropy(cls_score, label, weight=w,
                                                      ignore_index=ignore_index)
        per_pixel = F.cross_entropy(cls_score, label, weight=w, ignore_index=ignore_index,
                                    reduction='none')
        class_w = (label != ignore_index).to(per_pixel.dtype)   # w_{y_i}, 0 if ignored
        if w is not None:
            class_w = class_w * w[label.clamp(0, cls_score.shape[1] - 1)]
        denominator = (class_w * weight).sum().clamp_min(torch.finfo(per_pixel.dtype).eps)
        return self.loss_weight * (per_pixel * weight).sum() / denominator

    @property
    def loss_name(self) -> str:
        return self._loss_name
