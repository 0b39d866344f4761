"""mmengine glue: optim wrappers, constructor, hooks, safe checkpoint loading."""
from .checkpoint import MMENGINE_CHECKPOINT_GLOBALS, allow_mmengine_checkpoints
from .constructor import FixNormOptimWrapperConstructor
from .hooks import FixNormHook, MCBRHook, batch_labels, find_controller
from .optim_wrapper import FixNormAmpOptimWrapper, FixNormOptimWrapper

__all__ = ['FixNormOptimWrapper', 'FixNormAmpOptimWrapper',
           'FixNormOptimWrapperConstructor', 'FixNormHook', 'MCBRHook',
           'find_controller', 'batch_labels', 'MMENGINE_CHECKPOINT_GLOBALS',
           'allow_mmengine_checkpoints']
