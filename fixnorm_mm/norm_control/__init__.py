"""Norm control: FixNorm (Algo 1) and the methods it is compared with.

Plain PyTorch, usable without a Runner:

* :class:`NormFixer` (``fixer.py``): Algo 1's rescale, the whole algorithm in
  one small object for a bare training loop;
* :class:`Hyperball`, :class:`EpsShiftedL2` and :class:`WeightRescaler`: the other
  methods' arithmetic;
* ``selection.py``: which weights are scale-invariant (a traced forward),
  ``table.py``: the startup table.

Life cycle and registry (``controller.py``): a :class:`NormController`
attaches to a torch optimizer through its public hooks; the registered
controllers are ``'FixNorm'`` (global or ``per_layer``), ``'Hyperball'``,
``'EpsShiftedL2'``, ``'WRS'`` and ``'WeightDecay'`` (the baseline), built with
``norm_control=dict(type=...)``. ``methods.py`` switches a config from one to
another (``tools/train.py --method``).
"""
# registration order is the order methods are listed and compared in
from .controller import NormController, build_controller
from .weight_decay import WeightDecayController
from .fixnorm import FixNormController
from .hyperball import Hyperball, HyperballController
from .eps_shifted_l2 import EpsShiftedL2, EpsShiftedL2Controller, ws_layer_types
from .weight_rescaling import PAPER_TAUS, WeightRescaler, WRSController
from .fixer import NormFixer
from .methods import apply_method, available_methods, method_fragment
from .selection import (NormFollowTracer, Selection, drop_zero_norm, select_fixed_params,
                        select_unit_invariant, unwrap, uses_input_statistics)
from .units import OutputUnits

__all__ = ['NormFixer', 'NormFollowTracer', 'Selection', 'select_fixed_params',
           'select_unit_invariant', 'drop_zero_norm', 'uses_input_statistics', 'unwrap',
           'NormController', 'build_controller', 'FixNormController', 'Hyperball',
           'HyperballController',
           'EpsShiftedL2', 'EpsShiftedL2Controller', 'ws_layer_types', 'WeightRescaler',
           'WRSController', 'PAPER_TAUS', 'WeightDecayController', 'OutputUnits',
           'apply_method', 'available_methods', 'method_fragment']
