"""The mechanism's curves for mmengine's logs and visualizers: MCBR (Eq. 9) of
the final layer, its g and min(g, cap) (Fig. 2 of the FixNorm paper), and the
norms the norm-control method controls with their effective learning rate.

Where they appear: the hook writes ``train/fixnorm/<name>`` to the runner's
message hub; mmengine's ``LogProcessor`` drops the ``train/`` prefix, so the
text log, ``vis_data/scalars.json`` and TensorBoard show ``fixnorm/<name>``.
A name that ends in ``lr`` (``fixnorm/<group>_effective_lr``) is printed by
mmengine as a learning rate: in scientific notation, beside ``lr``.
"""
import logging
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook, LoggerHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from torch import Tensor, nn

from ..layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear
from ..mcbr import mcbr
from ..norm_control.selection import unwrap
from .hooks import find_controller

#: prefix of every scalar of :class:`MCBRHook` in the message hub
HUB_PREFIX = 'train/fixnorm/'


def batch_labels(data_samples, size=None) -> Optional[Tensor]:
    """Class labels of a batch from OpenMMLab data samples: one per image
    (``gt_label``) or one per pixel (``gt_sem_seg``, resized by nearest
    neighbour to ``size``, the final layer's input resolution)."""
    if not data_samples:
        return None
    first = data_samples[0]
    if hasattr(first, 'gt_label'):
        return torch.cat([ds.gt_label.reshape(-1)[:1] for ds in data_samples])
    if hasattr(first, 'gt_sem_seg') and size is not None:
        seg = torch.stack([ds.gt_sem_seg.data for ds in data_samples]).float()
        return F.interpolate(seg, size=size, mode='nearest').long()
    return None


@HOOKS.register_module()
class MCBRHook(Hook):
    """Log the curves of Fig. 2 and the norm-control method's norms.

    At every iteration that mmengine's ``LoggerHook`` logs, and every
    ``interval`` iterations, the hook puts into the message hub (keys
    ``train/fixnorm/<name>``; logs, ``scalars.json`` and TensorBoard show
    ``fixnorm/<name>``), all of that very iteration:

    * ``mcbr``: MCBR (Eq. 9) of ``layer`` on the iteration's training batch,
      with the weight that batch was classified with;
    * ``g`` and ``g_capped`` = min(g, cap) of a FixNorm layer; ``g`` = the
      norm of the applied weight of a WN layer; ``weight_norm`` = ||W|| of a
      plain layer (Fig. 2 top right);
    * what the runner's norm-control method logs (FixNorm: ``norm_<group>``,
      the global norm of each fixed group after the step, and
      ``<group>_effective_lr`` = lr / ||W||^2 with the iteration's lr;
      Hyperball: ``sphere_max_rel_dev`` and ``angular_lr``), if the method
      does not put them into the message hub itself at every step (its
      ``log_interval``, 1 by default: then they are logged with no hook).

    The hook runs before ``LoggerHook`` (priority ``NORMAL`` against its
    ``BELOW_NORMAL``), so a log line and its ``fixnorm/*`` values belong to
    the same iteration.

    Args:
        interval: also compute the scalars every this many iterations (the
            message hub's history, what other hooks read).
        layer: name of the final classification layer (``'head.fc'``,
            ``'decode_head.conv_seg'``). Default: the model's only FixNorm
            layer; without one, MCBR and g are not logged (a warning says so).
        ignore_index: label to leave out of MCBR, e.g. 255 for segmentation.
            Default None: every sample counts, as in Eq. 9.
    """
    priority = 'NORMAL'

    def __init__(self, interval: int = 50, layer: Optional[str] = None,
                 ignore_index: Optional[int] = None) -> None:
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ValueError(f'MCBRHook: interval must be an int >= 1, got {interval!r}')
        if ignore_index is not None and (not isinstance(ignore_index, int)
                                         or isinstance(ignore_index, bool)):
            raise ValueError(f'MCBRHook: ignore_index must be an int or None, got '
                             f'{ignore_index!r}')
        self.interval = interval
        self.layer_name = layer
        self.ignore_index = ignore_index
        self.layer: Optional[nn.Module] = None
        self._logger_hook: Optional[LoggerHook] = None
        self._due_now = False
        self._captured: Optional[Tensor] = None
        self._captured_weight: Optional[Tensor] = None
        self._handle = None
        self._samples = None
        self._samples_handle = None
        self._warned: set = set()

    # ------------------------------------------------------------- set-up
    def before_train(self, runner) -> None:
        model = unwrap(runner.model)
        modules = dict(model.named_modules())
        if self.layer_name is None:
            found = [n for n, m in modules.items() if isinstance(m, (FixNormLinear, FixNormConv2d))]
            self.layer_name = found[0] if len(found) == 1 else None
            if self.layer_name is None:
                self._warn_once(
                    'no layer',
                    f'MCBRHook: no layer given and the model has {len(found)} FixNorm layers '
                    f'({", ".join(found[:4]) or "none"}), so MCBR and g are not logged (the '
                    "norm-control method's norms still are). Name the final classifier: "
                    "custom_hooks=[dict(type='MCBRHook', layer='head.fc')] (the module's name "
                    'in model.named_modules()).')
        elif self.layer_name not in modules:
            raise ValueError(f'MCBRHook: layer={self.layer_name!r} is not a module of '
                             f'the model (final layers seen: '
                             f'{[n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d))][-3:]})')
        self.layer = modules.get(self.layer_name) if self.layer_name else None
        hooks = list(runner.hooks)
        loggers = [h for h in hooks if isinstance(h, LoggerHook)]
        self._logger_hook = loggers[0] if loggers else None
        if self._logger_hook is not None and self in hooks \
                and hooks.index(self._logger_hook) < hooks.index(self):
            self._warn_once(
                'order',
                f'MCBRHook runs after LoggerHook (priority {self.priority!r}), so every '
                'logged fixnorm/* value is that of the previous logged iteration. Leave '
                "MCBRHook's priority at 'NORMAL' (or any priority above LoggerHook's "
                "'BELOW_NORMAL').")

    def _warn_once(self, key: str, message: str, level: int = logging.WARNING) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print_log(message, logger='current', level=level)

    def _due(self, runner, batch_idx: int) -> bool:
        """This iteration is logged by LoggerHook (same test as its
        ``after_train_iter``), or is one of every ``interval``."""
        if self.every_n_train_iters(runner, self.interval):
            return True
        log = self._logger_hook
        if log is None:
            return False
        if self.every_n_inner_iters(batch_idx, log.interval):
            return True
        loader = runner.train_dataloader
        return bool(self.end_of_epoch(loader, batch_idx)
                    and (not log.ignore_last or len(loader) <= log.interval))

    # ------------------------------------------------------------- per iteration
    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._due_now = self._due(runner, batch_idx)
        if self.layer is not None and self._due_now:
            self._handle = self.layer.register_forward_hook(self._capture)
            # labels as the model saw them: mmseg's preprocessor pads images and
            # gt_sem_seg (with the ignore index) to the crop size on copies of
            # the data samples, so data_batch keeps the unpadded, unequal masks
            pre = getattr(unwrap(runner.model), 'data_preprocessor', None)
            if isinstance(pre, nn.Module):
                self._samples_handle = pre.register_forward_hook(self._capture_samples)

    @torch.no_grad()
    def _capture(self, module, inputs, output) -> None:
        self._captured = inputs[0].detach()
        # the weight this batch is classified with: the step changes it in place
        if module.weight.dim() == 4 and module.weight.shape[-2:] != (1, 1):
            self._captured_weight = None  # kxk conv: no MCBR, nothing to keep
        elif isinstance(module, (WNLinear, WNConv2d)):
            # per-unit g changes the directions of W_j - W_y, so Eq. 9 needs the
            # applied weight (FixNorm's scalar factor cancels in the cosine)
            self._captured_weight = module.wn_weight().detach()
        else:
            self._captured_weight = module.weight.detach().clone()

    def _capture_samples(self, module, inputs, output) -> None:
        if isinstance(output, dict) and output.get('data_samples') is not None:
            self._samples = output['data_samples']

    @torch.no_grad()
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._due_now:
            return
        self._due_now = False
        scalars = self.layer_scalars()
        if self._samples_handle is not None:
            self._samples_handle.remove()
            self._samples_handle = None
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            scalars.update(self.mcbr_scalar(data_batch))
        scalars.update(self.norm_scalars(runner))
        for k, v in scalars.items():
            runner.message_hub.update_scalar(HUB_PREFIX + k, float(v))

    # ------------------------------------------------------------- the scalars
    def layer_scalars(self) -> Dict[str, Tensor]:
        if self.layer is None:
            return {}
        if isinstance(self.layer, (FixNormLinear, FixNormConv2d)):
            return {'g': self.layer.g.detach(), 'g_capped': self.layer.effective_scale}
        if isinstance(self.layer, (WNLinear, WNConv2d)):
            # one g per output unit: ||g * v / ||v|| || = ||g||, the norm of the
            # weight the layer applies (||v|| itself is fixed by Algo 1)
            return {'g': self.layer.g.detach().norm()}
        return {'weight_norm': self.layer.weight.detach().norm()}

    def mcbr_scalar(self, data_batch) -> Dict[str, Tensor]:
        """MCBR (Eq. 9) of the captured batch; {} (and a one-time message
        saying why) when it cannot be computed."""
        x, self._captured = self._captured, None
        weight, self._captured_weight = self._captured_weight, None
        samples, self._samples = self._samples, None
        if samples is None and isinstance(data_batch, dict):
            samples = data_batch.get('data_samples')
        if x is None:
            return {}  # the layer did not run in this iteration's forward
        if weight is None:
            weight = self.layer.wn_weight() if isinstance(self.layer, (WNLinear, WNConv2d)) \
                else self.layer.weight
        if x.dim() == 4:
            if weight.shape[-2:] != (1, 1):
                self._warn_once(
                    'kxk', f'MCBRHook: {self.layer_name} is a {weight.shape[-2]}x'
                    f'{weight.shape[-1]} conv; MCBR (Eq. 9) is defined for FC and 1x1 (per-pixel) '
                    'classifiers, so only g and the norms are logged.', logging.INFO)
                return {}
            labels = batch_labels(samples, size=x.shape[-2:])
            x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        else:
            labels = batch_labels(samples)
        if labels is None:
            first = samples[0] if samples else None
            what = ('no data samples' if first is None else
                    f'{type(first).__name__} samples with fields '
                    f'{sorted(getattr(first, "keys", lambda: [])())}')
            self._warn_once(
                'no labels',
                f'MCBRHook: MCBR of {self.layer_name} is not logged: the training batch has '
                f'{what}, none of them gt_label (one class per image) or gt_sem_seg (one '
                'per pixel). Pack the labels into the data samples as OpenMMLab does '
                "(mmpretrain's PackInputs, mmseg's PackSegInputs); g and the norms are logged "
                'all the same.')
            return {}
        labels = labels.to(x.device).reshape(-1)
        num_classes = weight.shape[0]
        kept = labels if self.ignore_index is None else labels[labels != self.ignore_index]
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= num_classes):
            bad = int(kept.max()) if int(kept.max()) >= num_classes else int(kept.min())
            raise ValueError(
                f'MCBRHook: label {bad} is not a class of {self.layer_name} ({num_classes} '
                f'outputs) and ignore_index={self.ignore_index!r}. If {bad} marks pixels to '
                f"ignore, set custom_hooks=[dict(type='MCBRHook', ignore_index={bad}, ...)]; "
                'else layer= names the wrong layer.')
        return {'mcbr': mcbr(x, weight, labels, ignore_index=self.ignore_index)}

    @staticmethod
    def norm_scalars(runner) -> Dict[str, Tensor]:
        """The norms the runner's norm-control method controls (FixNorm: the
        global norm of each group and its effective lr = lr / ||W||^2, with
        the lr of the step just taken), unless the method puts them into the
        message hub itself (its ``log_interval``, 1 by default)."""
        ctrl = find_controller(runner)
        if ctrl is None or not ctrl.started or getattr(ctrl, 'log_interval', 0):
            return {}
        return ctrl.log_scalars(runner.optim_wrapper.get_lr()['lr'][0])
