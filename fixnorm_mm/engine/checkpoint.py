"""Resume with torch's safe checkpoint loading.

torch >= 2.6 loads checkpoints with ``weights_only=True``: only tensors,
containers and allow-listed types are unpickled, so a checkpoint cannot run
code. mmengine 0.10.7 calls plain ``torch.load`` and its checkpoints hold a
few of its own types (the message hub's ``HistoryBuffer``, numpy scalars and
arrays in the logged scalars), so ``resume=True`` fails out of the box.

We keep safe loading on and allow-list exactly those types, nothing else
(:data:`MMENGINE_CHECKPOINT_GLOBALS`); importing ``fixnorm_mm`` does it, so
any tool that ``custom_imports`` the plugin resumes. Two entries need care,
because unpickling them must not let a checkpoint change anything beyond the
objects it creates:

* ``HistoryBuffer.__setstate__`` copies the checkpoint's ``statistics_methods``
  into a table shared by every HistoryBuffer of the process; a crafted
  checkpoint could rebind ``'mean'`` for all of them. The allow-listed name
  ``mmengine.logging.history_buffer.HistoryBuffer`` is therefore bound to
  :class:`CheckpointHistoryBuffer`, which restores a buffer's values and drops
  the methods (the process has its own), then becomes a plain HistoryBuffer.
* those methods pickle as ``getattr(HistoryBuffer, 'mean')``. Allow-listing
  the builtin ``getattr`` would let a checkpoint read any attribute of
  anything; instead ``builtins.getattr`` is bound, for the safe loader only,
  to :func:`history_buffer_method`, which returns one of HistoryBuffer's four
  built-in statistics and refuses everything else.
"""
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals() -> list:
    from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in
              ('float64', 'float32', 'float16', 'int64', 'int32', 'int8',
               'uint8', 'bool')]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtypes]


#: the statistics every HistoryBuffer has (mmengine registers them in __init__)
BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


class CheckpointHistoryBuffer(HistoryBuffer):
    """What a checkpoint's HistoryBuffer is unpickled as: its values, not its
    statistics methods; afterwards an ordinary :class:`HistoryBuffer` (so it
    pickles, compares and behaves as one)."""

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError('fixnorm_mm safe loading: a HistoryBuffer state '
                                         f'must be a dict, got {type(state).__name__}')
        state = {k: v for k, v in state.items() if k != 'statistics_methods'}
        HistoryBuffer()  # its __init__ registers the built-in statistics, if no buffer did
        self.__dict__.update(state)
        self.__class__ = HistoryBuffer


def history_buffer_method(owner, name: str):
    """``getattr`` restricted to what mmengine checkpoints use it for."""
    if owner in (HistoryBuffer, CheckpointHistoryBuffer) and name in BUILTIN_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'fixnorm_mm safe loading: refusing getattr({owner!r}, {name!r}); mmengine '
        'checkpoints only need HistoryBuffer statistics methods')


#: Everything beyond tensors and containers that an mmengine checkpoint holds.
MMENGINE_CHECKPOINT_GLOBALS = [
    (CheckpointHistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
    *_numpy_globals(),
    (history_buffer_method, 'builtins.getattr')]


def allow_mmengine_checkpoints() -> None:
    """Allow-list mmengine's checkpoint types for ``torch.load(weights_only=True)``."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 has no safe loading to extend
        add(MMENGINE_CHECKPOINT_GLOBALS)
