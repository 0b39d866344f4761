"""Hooks: Algo 1 for any optim wrapper, and the mechanism's curves (MCBR, g,
norms, effective learning rate) for mmengine's visualizer."""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS
from torch import Tensor, nn

from ..layers import FixNormConv2d, FixNormLinear, WNConv2d, WNLinear
from ..mcbr import mcbr
from ..norm_control.controller import NormController, build_controller
from ..norm_control.selection import unwrap


@HOOKS.register_module()
class NormControlHook(Hook):
    """A norm-control method for a runner whose optim wrapper was built
    without it (any mmengine optim wrapper; with a norm-control one, do not
    add this hook).

    The method attaches to the optimizer before the checkpoint is loaded
    (``before_run``), so it behaves exactly as through the constructor: the
    same first step, the same AMP handling, its state in the optimizer's
    state_dict, the same resume checks.

    Args:
        norm_control: ``dict(type='FixNorm', ...)`` (any registered method).
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self, norm_control: Optional[dict] = None) -> None:
        cfg = dict(type='FixNorm') if norm_control is None else norm_control
        self.controller = build_controller(cfg, self._cfg_key())

    def _cfg_key(self) -> str:
        return 'custom_hooks.NormControlHook.norm_control'

    def before_run(self, runner) -> None:
        wrapper = runner.optim_wrapper
        if not isinstance(wrapper, OptimWrapper):
            return  # a test or validation run: nothing to control
        if getattr(wrapper, 'norm_control', None) is not None:
            raise ValueError(
                f'{type(self).__name__}: the optim wrapper already runs '
                f'{wrapper.norm_control.type_name}; remove {type(self).__name__} from '
                'custom_hooks (it would act twice)')
        counts = (runner.cfg.get('optim_wrapper') or {}).get('accumulative_counts', 1)
        self.controller.attach(runner.model, wrapper.optimizer, counts)
        wrapper.norm_control = self.controller  # where MCBRHook and others look

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # checkpoints of earlier FixNormHooks kept the state at the top level
        legacy = checkpoint.get(self.controller.state_key or '') \
            if self.controller.state_key else None
        if legacy is not None and runner.cfg.get('resume', False):
            self.controller.load_resumed(self.controller.type_name, legacy)


@HOOKS.register_module()
class FixNormHook(NormControlHook):
    """FixNorm (Algo 1) through a hook: ``dict(type='FixNormHook', **fixnorm
    options)``, the same as ``NormControlHook(norm_control=dict(type='FixNorm', ...))``."""

    def __init__(self, **fixnorm) -> None:
        super().__init__(dict(type='FixNorm', **fixnorm))

    def _cfg_key(self) -> str:
        return 'custom_hooks.FixNormHook'

    @property
    def fixnorm(self):
        return self.controller


def find_controller(runner) -> Optional[NormController]:
    """The norm-control method of a runner (its optim wrapper's or a hook's)."""
    ctrl = getattr(getattr(runner, 'optim_wrapper', None), 'norm_control', None)
    if isinstance(ctrl, NormController):
        return ctrl
    for hook in runner.hooks:
        if isinstance(hook, NormControlHook):
            return hook.controller
    return None


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
    """Every ``interval`` iterations log, under ``train/fixnorm/...``:
    MCBR (Eq. 9) of ``layer``, its g and min(g, cap) (or ||W|| for a plain
    layer), the global norm of each fixed group and its effective learning
    rate lr / ||W||^2. Values go to the message hub, so the text log and every
    visualizer backend (TensorBoard, ...) get them.

    Args:
        interval: logging period in iterations.
        layer: name of the final classification layer (``'head.fc'``,
            ``'decode_head.conv_seg'``). Default: the model's only FixNorm
            layer, or MCBR is skipped.
        ignore_index: label to leave out of MCBR (segmentation: 255).
    """
    priority = 'BELOW_NORMAL'

    def __init__(self, interval: int = 50, layer: Optional[str] = None,
                 ignore_index: Optional[int] = 255) -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'MCBRHook: interval must be an int >= 1, got {interval!r}')
        self.interval = interval
        self.layer_name = layer
        self.ignore_index = ignore_index
        self._captured: Optional[Tensor] = None
        self._handle = None
        self._samples = None
        self._samples_handle = None

    def before_train(self, runner) -> None:
        model = unwrap(runner.model)
        modules = dict(model.named_modules())
        if self.layer_name is None:
            found = [n for n, m in modules.items() if isinstance(m, (FixNormLinear, FixNormConv2d))]
            self.layer_name = found[0] if len(found) == 1 else None
        elif self.layer_name not in modules:
            raise ValueError(f'MCBRHook: layer={self.layer_name!r} is not a module of '
                             f'the model (final layers seen: '
                             f'{[n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d))][-3:]})')
        self.layer = modules.get(self.layer_name) if self.layer_name else None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.layer is not None and self.every_n_train_iters(runner, self.interval):
            self._handle = self.layer.register_forward_hook(self._capture)
            # labels as the model saw them: mmseg's preprocessor pads images and
            # gt_sem_seg (with the ignore index) to the crop size on copies of
            # the data samples, so data_batch keeps the unpadded, unequal masks
            pre = getattr(unwrap(runner.model), 'data_preprocessor', None)
            if isinstance(pre, nn.Module):
                self._samples_handle = pre.register_forward_hook(self._capture_samples)

    def _capture(self, module, inputs, output) -> None:
        self._captured = inputs[0].detach()

    def _capture_samples(self, module, inputs, output) -> None:
        if isinstance(output, dict) and output.get('data_samples') is not None:
            self._samples = output['data_samples']

    @torch.no_grad()
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
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
            runner.message_hub.update_scalar(f'train/fixnorm/{k}', float(v))

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
        x, self._captured = self._captured, None
        samples, self._samples = self._samples, None
        if samples is None and data_batch is not None:
            samples = data_batch.get('data_samples')
        if x is None or samples is None:
            return {}
        weight = self.layer.weight
        if isinstance(self.layer, (WNLinear, WNConv2d)):
            # per-unit g changes the directions of W_j - W_y, so Eq. 9 needs the
            # applied weight (FixNorm's scalar factor cancels in the cosine)
            weight = self.layer.wn_weight()
        if x.dim() == 4:
            if weight.shape[-2:] != (1, 1):
                return {}  # kxk conv: MCBR is defined for FC and 1x1 (pixel) classifiers
            labels = batch_labels(samples, size=x.shape[-2:])
            x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        else:
            labels = batch_labels(samples)
        if labels is None:
            return {}
        return {'mcbr': mcbr(x, weight, labels.to(x.device).reshape(-1),
                             ignore_index=self.ignore_index)}

    @staticmethod
    def norm_scalars(runner) -> Dict[str, Tensor]:
        """The norms the runner's norm-control method controls (FixNorm: the
        global norm of each group and its effective lr = lr / ||W||^2)."""
        ctrl = find_controller(runner)
        if ctrl is None or not ctrl.started:
            return {}
        return ctrl.log_scalars(runner.optim_wrapper.get_lr()['lr'][0])
