import os

import pytest
import torch

os.environ.setdefault('MPLBACKEND', 'Agg')
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_default_scope():
    """A Runner leaves its default scope as the current one; builds in a later
    test must not inherit it (mmpretrain's MODELS would then search mmengine's)."""
    yield
    from mmengine.registry import DefaultScope
    DefaultScope._instance_dict.clear()


@pytest.fixture
def cpu_amp(monkeypatch):
    """mmengine's real AmpOptimWrapper on the CPU (tests/test_amp.py says why
    and what is patched: two names in mmengine's module, for one test)."""
    import functools

    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'GradScaler',
                        functools.partial(torch.amp.GradScaler, 'cpu'))
