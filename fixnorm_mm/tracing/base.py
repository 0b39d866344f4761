"""The task interface, and the two ways of tracing a model: its training
loss on a task's synthetic batch, or ``forward(x)`` on a random tensor."""
import contextlib
import copy
import inspect
import random
import sys
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..norm_control.selection import NormFollowTracer
from ..registry import TRACING_TASKS


def loaded_class(module: str, name: str):
    """``module.name`` if ``module`` is already imported, else None: a model
    built from a package that was never imported cannot be one of its classes
    (and probing costs no import)."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def is_instance(obj, *classes) -> bool:
    classes = tuple(c for c in classes if c is not None)
    return bool(classes) and isinstance(obj, classes)


def out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def weight_layers(module: nn.Module):
    """(relative name, layer) of every conv / linear under ``module``."""
    for name, m in module.named_modules():
        if isinstance(m, (_ConvNd, nn.Linear)):
            yield name, m


class TaskTracing:
    """What the conversion needs to know about one task's models.

    Subclasses register in :data:`TRACING_TASKS` and implement:

    * :meth:`accepts`: is ``model`` one of this task's models;
    * :meth:`batch`: a synthetic training batch, as the task's dataloader
      yields it (``inputs``: uint8 ``C x H x W`` images; ``data_samples``
      with ground truth), for ``model.data_preprocessor(batch, True)`` and
      then ``model(**data, mode='loss')``;
    * :meth:`final_layers`: the classification layers of the model's heads,
      each with the rule that chose it (``final_layer='auto'``);
    * :meth:`for_small_batches` (optional): change the model in place so
      that it takes the small batch as it is (no batch-level resize to the
      training scale, no padding to a fixed crop).
    """
    #: a short name, used in logs ("detection")
    task = ''
    #: what :meth:`batch` puts in a sample, for logs
    ground_truth = ''
    #: side of the square synthetic images when the caller gives none
    default_image_size = 64
    #: the side tried when a model cannot take ``default_image_size`` (a
    #: classifier with fixed-size FC layers, window attention)
    fallback_image_size: Optional[int] = None

    def accepts(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def batch(self, model: nn.Module, image_size: Tuple[int, int],
              batch_size: int = 2, seed: int = 0) -> dict:
        raise NotImplementedError

    def final_layers(self, model: nn.Module) -> Dict[str, str]:
        raise NotImplementedError

    def ground_truth_of(self, model: nn.Module) -> str:
        """What :meth:`batch` gives ``model``, for logs."""
        return self.ground_truth

    def for_small_batches(self, model: nn.Module, image_size: Tuple[int, int]) -> None:
        """Default: nothing to change."""

    @staticmethod
    def generator(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    @staticmethod
    def random_images(g: torch.Generator, batch_size: int, size: Tuple[int, int],
                      channels: int = 3):
        return [torch.randint(0, 256, (channels, *size), generator=g, dtype=torch.uint8)
                for _ in range(batch_size)]

    @staticmethod
    def image_meta(i: int, size: Tuple[int, int]) -> dict:
        return dict(img_id=i, img_path=f'synthetic_{i}.png', ori_shape=tuple(size),
                    img_shape=tuple(size), scale_factor=(1.0, 1.0), flip=False,
                    flip_direction=None)


def find_task(model: nn.Module) -> Optional[TaskTracing]:
    """The registered task that accepts ``model``, or None."""
    TRACING_TASKS.import_from_location()
    for cls in TRACING_TASKS.module_dict.values():
        task = cls()
        if task.accepts(model):
            return task
    return None


def known_tasks() -> str:
    TRACING_TASKS.import_from_location()
    return ', '.join(TRACING_TASKS.module_dict)


@dataclass
class Trace:
    """What one traced run saw.

    ``followed``: layer name -> (norm name, norm class, uses batch statistics),
    from :class:`~fixnorm_mm.norm_control.NormFollowTracer`; ``ran``: the
    conv/linear layers that ran; ``how``: one line for the log.
    """
    followed: Dict[str, Tuple[str, str, bool]]
    ran: Set[str] = field(default_factory=set)
    how: str = ''
    #: (H, W) of the synthetic batch (None for a tensor forward)
    image_size: Optional[Tuple[int, int]] = None


@contextlib.contextmanager
def _random_state_kept():
    """Tracing must not move the random streams that training will use."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@contextlib.contextmanager
def training_progress():
    """``epoch`` and ``iter`` at 0 in the message hub while no Runner has set
    them: some heads schedule their loss on them (TOOD's initial epochs)."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()
    added = [k for k in ('epoch', 'iter') if hub.get_info(k) is None]
    for k in added:
        hub.update_info(k, 0)
    try:
        yield
    finally:
        for k in added:
            hub.runtime_info.pop(k, None)


def _run_traced(replica: nn.Module, run) -> Trace:
    ran: Set[str] = set()
    handles = [m.register_forward_hook(lambda *_, n=n: ran.add(n))
               for n, m in weight_layers(replica)]
    try:
        with NormFollowTracer(replica) as tracer, torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return Trace(followed=dict(tracer.followed), ran=ran)


def trace_loss(model: nn.Module, task: TaskTracing,
               image_size: Optional[Sequence[int]] = None, batch_size: int = 2) -> Trace:
    """One training-mode loss computation of a copy of ``model`` on the task's
    synthetic batch (``image_size`` ``(H, W)``), traced. Without
    ``image_size``, the task's default size, and if the model cannot take
    it, its :attr:`~TaskTracing.fallback_image_size`."""
    sizes = [tuple(image_size)] if image_size else \
        [(s, s) for s in (task.default_image_size, task.fallback_image_size) if s]
    for i, size in enumerate(sizes):
        try:
            return _trace_loss_at(model, task, size, batch_size)
        except Exception:
            if i == len(sizes) - 1:
                raise


def _trace_loss_at(model: nn.Module, task: TaskTracing, size: Tuple[int, int],
                   batch_size: int) -> Trace:
    replica = copy.deepcopy(model).train()
    task.for_small_batches(replica, size)
    batch = task.batch(replica, size, batch_size=batch_size, seed=0)

    def run():
        data = replica.data_preprocessor(batch, True)
        if isinstance(data, dict):
            replica(**data, mode='loss')
        else:
            replica(*data, mode='loss')
    with _random_state_kept(), training_progress():
        trace = _run_traced(replica, run)
    trace.image_size = size
    trace.how = (f'the {task.task} loss of {type(model).__name__} on a synthetic batch of '
                 f'{batch_size} images {size[0]}x{size[1]} with {task.ground_truth_of(model)}')
    return trace


def trace_tensor_forward(model: nn.Module, input_shape: Sequence[int],
                         batch_size: int = 2) -> Trace:
    """``model(x)`` (``mode='tensor'`` for OpenMMLab models) of a copy of
    ``model`` in train mode, ``x`` a random batch of shape ``input_shape``."""
    replica = copy.deepcopy(model).train()
    takes_mode = 'mode' in inspect.signature(replica.forward).parameters
    with _random_state_kept():
        x = torch.randn(batch_size, *input_shape, device=next(replica.parameters()).device)
        trace = _run_traced(replica, lambda: replica(x, mode='tensor') if takes_mode
                            else replica(x))
    trace.how = (f'forward of {type(model).__name__} on a random batch of shape '
                 f'{tuple(x.shape)}')
    return trace
