"""Resume with torch's safe checkpoint loading.

torch >= 2.6 loads checkpoints with ``weights_only=True``: only tensors,
containers and allow-listed types are unpickled, so a checkpoint cannot run
code. mmengine 0.10.7 calls plain ``torch.load`` and its checkpoints hold a
few of its own types (the message hub's ``HistoryBuffer``, numpy scalars and
arrays in the logged scalars), so ``resume=True`` fails out of the box.

We keep safe loading on and allow-list exactly those types, nothing else
(:data:`MMENGINE_CHECKPOINT_GLOBALS`). Importing ``fixnorm_mm`` does it.

One entry needs care: ``HistoryBuffer.__getstate__`` stores its statistics
methods, which pickle as ``getattr(HistoryBuffer, 'mean')``. Allow-listing
the builtin ``getattr`` would let a checkpoint read any attribute of anything;
instead the name ``builtins.getattr`` is bound, for the safe loader only, to
:func:`history_buffer_method`, which returns HistoryBuffer's registered
statistics methods and refuses everything else.
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


_BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_method(owner, name: str):
    """``getattr`` restricted to what mmengine checkpoints use it for."""
    # HistoryBuffer registers its own four methods in __init__ only, so a
    # process that has built none yet (tools/test.py) must know them by name
    if owner is HistoryBuffer and name in HistoryBuffer._statistics_methods:
        return HistoryBuffer._statistics_methods[name]
    if owner is HistoryBuffer and name in _BUILTIN_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'fixnorm_mm safe loading: refusing getattr({owner!r}, {name!r}); mmengine '
        'checkpoints only need HistoryBuffer statistics methods')


#: Everything beyond tensors and containers that an mmengine checkpoint holds.
MMENGINE_CHECKPOINT_GLOBALS = [HistoryBuffer, *_numpy_globals(),
                               (history_buffer_method, 'builtins.getattr')]


def allow_mmengine_checkpoints() -> None:
    """Allow-list mmengine's checkpoint types for ``torch.load(weights_only=True)``."""
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 has no safe loading to extend
        add(MMENGINE_CHECKPOINT_GLOBALS)
