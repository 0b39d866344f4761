"""Old import path of the CPU (gloo) launcher, now :mod:`fixnorm_mm.engine.launch`.

Importing ``fixnorm_mm`` no longer imports the launcher: the tools do
(:func:`~fixnorm_mm.engine.launch.setup_launch` registers
``CPUDistributedDataParallel`` on its way). This module only re-exports it for
code that imported it from here.
"""
from .engine.launch import (CPU_BACKENDS, CPUDistributedDataParallel, GlooSyncBatchNorm,
                            convert_sync_batchnorm_to_gloo, init_cpu_dist, setup_launch)

__all__ = ['CPU_BACKENDS', 'CPUDistributedDataParallel', 'GlooSyncBatchNorm',
           'convert_sync_batchnorm_to_gloo', 'init_cpu_dist', 'setup_launch']
