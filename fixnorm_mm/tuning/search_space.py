"""What a tuner searches for a given config: the lr scale and range, the
weight-decay range, chosen from the config's optimizer.

The paper tunes SGD: FixNorm-tune probes lr on a linear grid in [0.2, 3.2]
(ImageNet from scratch) or [0.005, 0.1] (fine-tuning), BO+WD searches lr in
the same range and weight decay in [1e-5, 5e-4] (Sec. 3.1, App. D). Those
ranges mean nothing for Adam-family optimizers, whose per-coordinate step is
about lr whatever the gradient's scale. For them (our choice, docs/tuning.md,
docs/paper_departures.md):

* **lr scale: log.** FixNorm-tune's probes are evenly spaced in log(lr)
  (:func:`~fixnorm_mm.tuning.fixnorm_tune.lr_probes` with ``scale='log'``);
  BO+WD and ASHA+WD search lr on a log scale for every optimizer anyway.
* **lr range: [1e-5, 1e-2]** (:data:`ADAM_LR_RANGE`). The AdamW configs of the
  OpenMMLab model zoos use 6e-5 (SegFormer) and 1e-4 (DETR, Mask2Former) for
  fine-tuning, 5e-4 to 1e-3 (DeiT, Swin at batch 1024) and 4e-3 (ConvNeXt at
  batch 4096) from scratch: [1e-5, 1e-2] holds all of them with about one
  round-0 step (a factor of 4) to spare at each end.
* **weight decay (decoupled, AdamW): [1e-4, 0.3]** (:data:`ADAMW_WD_RANGE`).
  AdamW multiplies the decay by lr, so its values are 100-1000x SGD's: 1e-4
  (DETR), 0.01 (PyTorch's default, SegFormer), 0.05 (DeiT, Swin, ConvNeXt),
  0.3 (ViT pre-training). Adam with coupled L2 decay keeps the paper's range.
* **alpha: unchanged.** FixNorm-FC's cap bounds the logits' scale (Eq. 10),
  which no optimizer changes: the alpha round tries the paper's candidates
  {0.5, 1, 2, 4, 8, 16} at lr_best, as for SGD.

Adam family: optimizer types whose name contains ``adam`` (Adam, AdamW,
NAdam, RAdam, Adamax, SparseAdam, ...), and Lamb, Lion and Adafactor.
Everything else (SGD, RMSprop, LARS, ...) keeps the paper's linear probes.
"""
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from .bo_wd import PAPER_WD_RANGE
from .fixnorm_tune import LR_SCALES, PAPER_LR_RANGES, check_lr_scale

#: lr range of FixNorm-tune, BO+WD and ASHA+WD for Adam-family optimizers (module docstring).
ADAM_LR_RANGE = (1e-5, 1e-2)
#: weight-decay range of BO+WD and ASHA+WD for AdamW (decoupled decay).
ADAMW_WD_RANGE = (1e-4, 0.3)
#: Optimizer types tuned on a log lr scale by default.
ADAPTIVE_OPTIMIZERS = re.compile(r'adam|^lamb$|^lion$|^adafactor$', re.IGNORECASE)


def optimizer_type(cfg) -> str:
    """The class name of ``cfg.optim_wrapper.optimizer.type`` (a string, a
    class, or ``scope.Name``); ``''`` if the config names none."""
    wrapper = cfg.get('optim_wrapper') or {}
    optimizer = wrapper.get('optimizer') or {}
    t = optimizer.get('type', '') if hasattr(optimizer, 'get') else ''
    name = t if isinstance(t, str) else getattr(t, '__name__', str(t))
    return name.rsplit('.', 1)[-1]


def is_adaptive(optimizer: str) -> bool:
    """Whether ``optimizer`` (a type name) is of the Adam family."""
    return bool(ADAPTIVE_OPTIMIZERS.search(optimizer or ''))


def has_decoupled_weight_decay(cfg) -> bool:
    """AdamW, or an optimizer configured with ``decoupled_weight_decay=True``."""
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer') or {}
    return 'adamw' in optimizer_type(cfg).lower() or bool(
        hasattr(optimizer, 'get') and optimizer.get('decoupled_weight_decay'))


@dataclass(frozen=True)
class SearchSpace:
    """What the tuners search for one config, and why each default was taken
    (``why``: ``'lr_range'``, ``'lr_scale'``, ``'wd_range'`` -> reason; given
    values have none)."""
    optimizer: str
    lr_scale: str
    lr_range: Tuple[float, float]
    wd_range: Tuple[float, float]
    why: Dict[str, str]

    def describe(self, method: str) -> str:
        """One line for the sweep's log: what ``method`` searches, and why."""
        if method == 'fixnorm-tune':
            text, keys = f'lr {self.lr_range}, {self.lr_scale} probes', ('lr_range', 'lr_scale')
        else:
            text, keys = (f'lr {self.lr_range}, weight decay {self.wd_range} (both log scale)',
                          ('lr_range', 'wd_range'))
        reasons = [self.why[k] for k in keys if k in self.why]
        if not reasons:
            return text + ' (as given)'
        family = ('of the Adam family' if is_adaptive(self.optimizer)
                  else 'not of the Adam family')
        return text + f' ({self.optimizer or "the optimizer"} is {family}: {", ".join(reasons)})'


def search_space(cfg, task: Optional[str] = None, lr_range: Optional[Sequence[float]] = None,
                 lr_scale: str = 'auto',
                 wd_range: Optional[Sequence[float]] = None) -> SearchSpace:
    """The search space for ``cfg`` (an mmengine Config or dict).

    Given values win; ``lr_scale='auto'`` is log for the Adam family and
    linear otherwise; the default lr range is :data:`ADAM_LR_RANGE` for the
    Adam family and the paper's range of ``task`` (``'imagenet'`` if None)
    otherwise; the default weight-decay range :data:`ADAMW_WD_RANGE` with
    decoupled decay, the paper's otherwise.
    """
    optimizer = optimizer_type(cfg)
    adaptive = is_adaptive(optimizer)
    if task is not None and task not in PAPER_LR_RANGES:
        raise ValueError(f'--task must be one of {sorted(PAPER_LR_RANGES)}, got {task!r}')
    why = {}
    if lr_range is None:
        lr_range = ADAM_LR_RANGE if adaptive else PAPER_LR_RANGES[task or 'imagenet']
        why['lr_range'] = ('the Adam lr range' if adaptive
                           else f"the paper's lr range for {task or 'imagenet'}")
    lr_range = (float(lr_range[0]), float(lr_range[1]))
    if lr_scale == 'auto':
        lr_scale = 'log' if adaptive else 'linear'
        why['lr_scale'] = 'log probes' if adaptive else "the paper's linear probes"
    if lr_scale not in LR_SCALES:
        raise ValueError(f"--lr-scale must be 'auto' or one of {LR_SCALES}, got {lr_scale!r}")
    check_lr_scale(lr_scale, lr_range, '--lr-scale')
    if wd_range is None:
        decoupled = has_decoupled_weight_decay(cfg)
        wd_range = ADAMW_WD_RANGE if decoupled else PAPER_WD_RANGE
        why['wd_range'] = ('the weight-decay range of decoupled decay (AdamW)' if decoupled
                           else "the paper's weight-decay range")
    wd_range = (float(wd_range[0]), float(wd_range[1]))
    return SearchSpace(optimizer, lr_scale, lr_range, wd_range, why)
