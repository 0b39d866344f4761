"""Distributed training on machines without a GPU (gloo), with mmengine's Runner.

mmengine 0.10.7 assumes a GPU per process: its ``pytorch`` and ``slurm``
launchers call ``torch.cuda.set_device(local_rank)`` before creating the
process group, and the Runner wraps the model in DDP with
``device_ids=[LOCAL_RANK]``, which DDP refuses for a CPU module. SyncBN is
CUDA-only in both torch and mmcv. :func:`setup_launch` makes a config run as
it is on such a machine, without patching mmengine:

* it creates the process group itself (``gloo`` unless the config names
  another CPU backend in ``env_cfg.dist_cfg.backend``), from the same
  environment variables mmengine reads; the Runner then finds the group
  initialised and keeps it;
* it sets ``model_wrapper_cfg`` to :class:`CPUDistributedDataParallel`, which
  is mmengine's DDP wrapper without device ids and with every SyncBN layer
  replaced by :class:`GlooSyncBatchNorm`.

With a GPU it does nothing: GPU runs are exactly upstream's.
"""
import datetime
import os
import subprocess
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

CPU_BACKENDS = ('gloo', 'mpi')


class _AllReduceSum(torch.autograd.Function):
    """``sum_r x_r`` over the processes. Its backward is again a sum over the
    processes: every process's loss depends on ``x_r`` through the sum, so
    d(sum of the losses)/dx_r = sum_r' dL_r'/d(sum)."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class GlooSyncBatchNorm(_BatchNorm):
    """Synchronized BatchNorm for CPU process groups (gloo, mpi).

    In training the statistics are those of the *global* batch, so N processes
    with batch b compute what one process with batch N*b computes:

        mean = sum_r sum_i x_ri / n,    var = sum_r sum_i (x_ri - mean)^2 / n

    Both sums are all-reduced by an autograd function whose backward
    all-reduces the gradients, so the gradient of every sample also flows
    through the statistics of the other processes' samples, as in
    ``torch.nn.SyncBatchNorm``. Two passes (mean, then centred squares) keep
    the variance as accurate as ``F.batch_norm``'s. Outside training, or in a
    single process, it is a plain BatchNorm.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group=None, **kwargs) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {x.dim()}D input)')

    def _synchronized(self) -> bool:
        return (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self._synchronized():
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        group = self.process_group or dist.group.WORLD
        local = torch.cat([x.sum(dims), x.new_full((1,), x.numel() / x.shape[1])])
        total = _AllReduceSum.apply(local, group)
        count = total[-1].detach()
        mean = total[:-1] / count
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims), group) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None \
                    else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), factor)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _is_sync_bn(module: nn.Module) -> bool:
    if isinstance(module, nn.SyncBatchNorm):
        return True
    # mmcv.ops.SyncBatchNorm ('MMSyncBN'), matched by name: importing mmcv.ops
    # is not needed to recognise it
    return type(module).__name__ == 'SyncBatchNorm' and \
        type(module).__module__.startswith('mmcv')


def convert_sync_batchnorm_to_gloo(module: nn.Module) -> nn.Module:
    """Replace every SyncBN layer (torch's or mmcv's) by :class:`GlooSyncBatchNorm`,
    keeping parameters, buffers, ``requires_grad`` and train/eval mode."""
    if _is_sync_bn(module):
        new = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum,
                                module.affine, module.track_running_stats,
                                process_group=getattr(module, 'process_group', None)
                                if isinstance(module, nn.SyncBatchNorm) else None)
        with torch.no_grad():
            if module.affine:
                new.weight = module.weight
                new.bias = module.bias
            if module.track_running_stats:
                new.running_mean = module.running_mean
                new.running_var = module.running_var
                if getattr(module, 'num_batches_tracked', None) is not None:
                    new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm_to_gloo(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for a model on the CPU.

    The Runner passes ``device_ids=[LOCAL_RANK]`` to every DDP wrapper; DDP of
    a CPU module must get none, so they are dropped (kept if the module is on
    an accelerator after all). SyncBN layers become :class:`GlooSyncBatchNorm`.
    """

    def __init__(self, module: nn.Module, device_ids=None, **kwargs) -> None:
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        if on_cpu:
            module = convert_sync_batchnorm_to_gloo(module)
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)


def _launcher_env(launcher: str, port: Optional[int]) -> None:
    """Set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT as mmengine's
    ``init_dist`` does for this launcher (torchrun sets them itself)."""
    if launcher == 'slurm':
        node_list = os.environ['SLURM_NODELIST']
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:
            os.environ['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {node_list} | head -n1')
    elif launcher == 'mpi':
        os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
        os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
        os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:
            raise KeyError('The environment variable MASTER_ADDR is not set')
    elif launcher != 'pytorch':
        raise ValueError(f'launcher must be one of none, pytorch, slurm, mpi; got {launcher!r}')


def init_cpu_dist(launcher: str, backend: str = 'gloo', timeout: Optional[float] = None,
                  port: Optional[int] = None, init_backend: str = 'torch', **kwargs) -> None:
    """``mmengine.dist.init_dist`` without ``torch.cuda.set_device``."""
    if backend not in CPU_BACKENDS:
        raise ValueError(
            f'env_cfg.dist_cfg.backend={backend!r} needs a GPU, and this machine has '
            f'none: use one of {CPU_BACKENDS} (gloo is chosen when the config says nccl)')
    if init_backend != 'torch':
        raise ValueError(f'env_cfg.dist_cfg.init_backend={init_backend!r} is not supported '
                         "on the CPU; use 'torch'")
    _launcher_env(launcher, port)
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def setup_launch(cfg) -> None:
    """Prepare ``cfg`` (an mmengine ``Config`` with ``cfg.launcher`` set) for its
    launcher on this machine. Call before ``Runner.from_cfg``.

    No-op without a launcher or with a GPU. On the CPU: ``nccl`` in
    ``env_cfg.dist_cfg.backend`` becomes ``gloo``, the process group is
    created, and the DDP wrapper becomes :class:`CPUDistributedDataParallel`.
    """
    launcher = cfg.get('launcher', 'none') or 'none'
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    env_cfg = cfg.setdefault('env_cfg', dict())
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    env_cfg['dist_cfg'] = dist_cfg
    wrapper = cfg.get('model_wrapper_cfg', None)
    if wrapper is None:
        wrapper = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                       find_unused_parameters=cfg.get('find_unused_parameters', False))
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper['type'] = 'CPUDistributedDataParallel'
    cfg.model_wrapper_cfg = wrapper
    init_cpu_dist(launcher, **dist_cfg)
    print_log(f'No GPU: distributed training on the CPU with backend '
              f'{dist_cfg["backend"]!r}, rank {dist.get_rank()} of {dist.get_world_size()}',
              logger='current')
