"""Test helper for distributed runs: every rank saves what it holds at the
end of training (registered once, when this module is imported)."""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankDumpHook(Hook):
    """After training, write ``rank{r}.pth`` into ``out_dir``: the model's
    state_dict at the start and at the end of training, the FixNorm state
    (names and reference norms), and the fixed set's norm after every
    optimizer step."""
    priority = 'LOWEST'

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.norms = []
        self.init = None

    @staticmethod
    def _state(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def before_train(self, runner):
        self.init = self._state(runner)  # after init_weights and DDP's broadcast

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        ctrl = getattr(runner.optim_wrapper, 'norm_control', None)
        if ctrl is not None and ctrl.started and runner.optim_wrapper.should_update():
            self.norms.append({g: v.clone() for g, v in ctrl.fixer.norms().items()})

    def after_train(self, runner):
        ctrl = getattr(runner.optim_wrapper, 'norm_control', None)
        torch.save(dict(state_dict=self._state(runner), init=self.init,
                        fixnorm=ctrl.state_dict() if ctrl is not None else None,
                        norms=self.norms, world_size=runner.world_size,
                        wrapper=type(runner.model).__name__),
                   osp.join(self.out_dir, f'rank{get_rank()}.pth'))

