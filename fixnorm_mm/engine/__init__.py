"""mmengine glue: the constructor that attaches a norm-control method to any
optim wrapper, the hooks, the legacy wrapper aliases, safe checkpoint loading."""
from .checkpoint import MMENGINE_CHECKPOINT_GLOBALS, allow_mmengine_checkpoints
from .checkpoint_hook import (AtomicCheckpointHook, check_checkpoint_file,
                              find_resumable_checkpoint)
from .constructor import FixNormOptimWrapperConstructor, NormControlOptimWrapperConstructor
from .hooks import FixNormHook, NormControlHook, find_controller
from .mcbr_hook import MCBRHook, batch_labels
from .optim_wrapper import (EpsShiftedL2OptimWrapper, FixNormAmpOptimWrapper,
                            FixNormOptimWrapper, WRSOptimWrapper)

__all__ = ['NormControlOptimWrapperConstructor', 'FixNormOptimWrapperConstructor',
           'NormControlHook', 'FixNormHook', 'MCBRHook', 'find_controller', 'batch_labels',
           'FixNormOptimWrapper', 'FixNormAmpOptimWrapper', 'EpsShiftedL2OptimWrapper',
           'WRSOptimWrapper', 'MMENGINE_CHECKPOINT_GLOBALS', 'allow_mmengine_checkpoints',
           'AtomicCheckpointHook', 'find_resumable_checkpoint', 'check_checkpoint_file']
