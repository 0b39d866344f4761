"""Plain weight decay, the baseline FixNorm replaces, as a norm-control method.

Weight decay is the optimizer's own L2 term; this controller changes nothing
in training. It exists so that the baseline runs through the same machinery as
the methods it is compared with (same constructor, same startup table, same
logged norms) and so that ``--method wd`` is found where every method is:
in the registry.
"""
import logging
from typing import Dict

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..registry import NORM_CONTROLLERS
from . import table
from .controller import NormController


@NORM_CONTROLLERS.register_module('WeightDecay')
class WeightDecayController(NormController):
    """No norm control: the weights with weight decay > 0 are the 'controlled'
    ones. Logs their global norm (``norm_decayed``)."""
    type_name = 'WeightDecay'
    methods = {'wd': '_base_/methods/wd.py'}
    labels = {'wd': 'weight decay'}

    def start(self, model: nn.Module, followed: dict, resumed_state) -> None:
        decay = self.decay_of()
        named = {n: p for n, p in model.named_parameters() if decay.get(id(p), 0.0) > 0}
        self.decayed = named
        excluded = [(n, p.numel(), 'weight_decay=0') for n, p in model.named_parameters()
                    if n not in named and p.dim() > 1 and p.requires_grad]
        groups = {'default': named} if named else {}
        values = sorted({decay[id(p)] for p in named.values()})
        warn = table.uncontrolled_warning(
            table.uncontrolled(model, list(named), excluded, decay), 'weight decay',
            'Set optim_wrapper.optimizer.weight_decay > 0 (paramwise_cfg decides per tensor).')
        self.log_table(
            table.summary('weight decay (no norm control)', groups,
                          {'weight decay': {'default': ', '.join(f'{v:g}' for v in values)}},
                          excluded, model),
            table.details(groups, {n: 'weight_decay > 0' for n in named}, excluded,
                          {'weight_decay': {n: f'{decay[id(p)]:g}' for n, p in named.items()}}))
        for line in warn:
            print_log(f'WeightDecay: {line}', logger='current', level=logging.WARNING)

    @torch.no_grad()
    def log_scalars(self, lr: float) -> Dict[str, Tensor]:
        if not getattr(self, 'decayed', None):
            return {}
        norm = torch.linalg.vector_norm(torch.stack(
            [p.detach().float().norm() for p in self.decayed.values()]))
        return {'norm_decayed': norm}
