"""The life cycle every norm-control method shares, on a torch optimizer's
public hooks.

A controller (FixNorm's Algo 1, epsilon-shifted L2, WRS, plain weight decay)
is a plain object that :meth:`~NormController.attach` es to a model and a
``torch.optim.Optimizer``::

    attach(model, optimizer)       watch the first forward (which conv feeds a norm)
    first real step, before it     start(): select the tensors, take over their
                                   weight decay, restore a resumed state, log a table
    every real step                before_step() / after_step()
    optimizer.state_dict()         + the controller's state (a checkpoint carries it)
    optimizer.load_state_dict()    - the controller's state (resume restores it)

Everything goes through ``register_step_pre_hook`` / ``register_step_post_hook``
/ ``register_state_dict_post_hook`` / ``register_load_state_dict_pre_hook`` of
the optimizer, so a controller works under any mmengine optim wrapper, AMP
included, without re-implementing its ``step``: a *real* step is one in which
the optimizer's ``step()`` runs. mmengine calls it only at the end of a
gradient-accumulation cycle, and torch's ``GradScaler`` does not call it when it
found inf/NaN gradients, so a skipped AMP step is seen as what it is: no step.
(Optimizers that handle the scaler inside their own kernel, such as
``fused=True`` ones, are stepped anyway; ``GradScaler`` then hands them
``optimizer.found_inf``, which :meth:`after_step` receives as ``skip``.)

Persistent non-finite gradients under AMP make every step skip while the loss
scale decays towards 0; a controller counts training forwards since the last
real step and raises after ``max_skipped_steps`` skipped steps in a row.

A new method is one file: a subclass registered in
:data:`fixnorm_mm.registry.NORM_CONTROLLERS`, whose ``methods`` names its
config fragment (docs/DEVELOPING.md).
"""
import logging
import math
import numbers
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..config_keys import accepted_keys, check_keys
from .selection import NormFollowTracer, unwrap

#: key of the controller type in the optimizer's state_dict
TYPE_KEY = 'norm_control'
#: prefix of the scalars a controller puts in mmengine's message hub (mmengine
#: drops ``train/``: logs and scalars.json say ``fixnorm/<name>``)
HUB_PREFIX = 'train/fixnorm/'


# ----------------------------------------------------------------- option checks
def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f'{key} must be True or False, got {value!r} '
                        f'({type(value).__name__})')
    return value


def check_int(key: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f'{key} must be an integer >= {minimum}, got {value!r}')
    return int(value)


def check_number(key: str, value: Any, minimum: float = 0.0, allow_none: bool = False,
                 strict: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real) \
        or not math.isfinite(value) or value < minimum or (strict and value == minimum)
    if bad:
        op = '>' if strict else '>='
        raise ValueError(f'{key} must be a finite number {op} {minimum}'
                         + (' or None' if allow_none else '') + f', got {value!r}')
    return float(value)


def check_patterns(key: str, value: Any) -> List[str]:
    """A list of fnmatch patterns (a bare string would be split into characters)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(p, str) for p in value):
        raise TypeError(f'{key} must be a list of fnmatch patterns (strings), got {value!r}')
    return list(value)


def check_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f'{key} must be one of {list(choices)}, got {value!r}')
    return value


def check_optimizer_hyperparameters(optimizer: torch.optim.Optimizer,
                                    key: str = 'optim_wrapper.optimizer') -> None:
    """lr, weight decay, momentum... of every param group are finite numbers:
    a NaN lr corrupts every weight at the first step, before anything else
    could notice."""
    for i, group in enumerate(optimizer.param_groups):
        for name, value in group.items():
            if name == 'params' or isinstance(value, bool):
                continue
            values = value if isinstance(value, (tuple, list)) else [value]
            for v in values:
                if isinstance(v, Tensor):
                    v = float(v.detach().float().max()) if v.numel() else 0.0
                if isinstance(v, numbers.Real) and not math.isfinite(v):
                    where = f'{key}.{name}' if i == 0 else f'{key}.{name} (param group {i})'
                    raise ValueError(f'{where} must be a finite number, got {value!r}')


# ----------------------------------------------------------------- the base class
class NormController:
    """Base class of the norm-control methods.

    Subclasses set :attr:`type_name` (their registry name), :attr:`methods`
    and, if they have state to resume, :attr:`state_key`, and implement
    :meth:`start` plus any of :meth:`before_step`, :meth:`after_step`,
    :meth:`state_dict`, :meth:`load_state_dict`, :meth:`log_scalars`.

    Args:
        on_method_change: what resuming a checkpoint of another method (or of
            none) does: ``'error'`` (default) stops; ``'restart'`` starts this
            method afresh from the resumed weights, and says so in the log.
        max_skipped_steps: raise after this many consecutive steps that the
            AMP loss scaler skipped (persistent inf/NaN); 0 never raises.
        uncontrolled_weight_decay: for methods that replace the weight decay
            of the tensors they control: ``'keep'`` (default) leaves every
            other tensor the weight decay the config gives it; ``'none'``
            sets it to 0 everywhere (no weight decay anywhere, the setting of
            the FixNorm and Hyperball papers).
        log_interval: every this many real steps, put :meth:`log_scalars`
            (the controlled norms) into mmengine's message hub as
            ``train/fixnorm/<name>``, so that any Runner's log, ``scalars.json``
            and TensorBoard show them as ``fixnorm/<name>`` with no hook to
            add; 1 (default): every step, so a logged line holds its own
            iteration's values (one host read of a few scalars a step); 0: never.
        cfg_key: the config key the options came from, for error messages.
    """
    type_name = 'NormController'
    #: method name -> config fragment (a path, absolute or relative to the
    #: package's configs); what ``tools/train.py --method`` offers
    methods: Dict[str, str] = {}
    #: method name -> how tables and plots call it
    labels: Dict[str, str] = {}
    #: key of this method's state in the optimizer's state_dict (None: stateless)
    state_key: Optional[str] = None
    #: default ``optimizer.weight_decay`` of the method's configs (None: keep)
    default_weight_decay: Optional[float] = None
    #: the method sets the weight decay of single tensors (one param group each)
    one_group_per_tensor = False
    #: the method replaces the weight decay of the tensors it controls
    #: (:meth:`apply_weight_decay_rule`); the others keep the config's
    takes_over_weight_decay = False

    def __init__(self, on_method_change: str = 'error', max_skipped_steps: int = 50,
                 uncontrolled_weight_decay: str = 'keep', log_interval: int = 1,
                 cfg_key: str = 'optim_wrapper.norm_control') -> None:
        self.cfg_key = cfg_key
        self.on_method_change = check_choice(f'{cfg_key}.on_method_change',
                                             on_method_change, ('error', 'restart'))
        self.max_skipped_steps = check_int(f'{cfg_key}.max_skipped_steps', max_skipped_steps)
        self.log_interval = check_int(f'{cfg_key}.log_interval', log_interval)
        self.uncontrolled_weight_decay = check_choice(
            f'{cfg_key}.uncontrolled_weight_decay', uncontrolled_weight_decay, ('keep', 'none'))
        if uncontrolled_weight_decay != 'keep' and not self.takes_over_weight_decay:
            raise ValueError(f"{cfg_key}.uncontrolled_weight_decay={uncontrolled_weight_decay!r}: "
                             f'{self.type_name} controls no tensor\'s weight decay; leave it '
                             "at 'keep'")
        self.model: Optional[nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.tracer: Optional[NormFollowTracer] = None
        self.started = False
        self.steps = 0                 # real optimizer steps seen
        self.accumulative_counts = 1
        self.configured_weight_decay: Dict[int, float] = {}
        self._handles: list = []
        self._model_handle = None
        self._forwards = 0             # training forwards since the last real step
        self._skip_streak: Optional[Tensor] = None  # fused AMP: skipped steps in a row (device)
        self._resumed: Optional[Tuple[Optional[str], Any]] = None  # (saved type, state)
        #: what the traced forward saw: weight layers in the order they ran, and
        #: layers that fed a norm and also another op
        self.layer_order: List[str] = []
        self.also_used: Dict[str, str] = {}

    def key(self, option: str) -> str:
        return f'{self.cfg_key}.{option}'

    @classmethod
    def adapt_to_config(cls, norm_control: dict, optimizer: dict) -> Optional[str]:
        """``apply_method`` (``--method``) calls this with the new
        ``norm_control`` options and the converted config's optimizer: a
        method may derive options from them (in place). Returns a note for
        the log, or None."""
        return None

    # ------------------------------------------------------------- attaching
    def attach(self, model: Optional[nn.Module], optimizer: torch.optim.Optimizer,
               accumulative_counts: int = 1) -> 'NormController':
        """Hook this controller into ``optimizer`` (and watch ``model``).

        ``model`` may come later (:meth:`attach_model`); the first step
        refuses to run without one.
        """
        if self.optimizer is not None:
            raise RuntimeError(f'{self.type_name}: this controller is already attached '
                               'to an optimizer')
        self.optimizer = optimizer
        self.accumulative_counts = check_int('optim_wrapper.accumulative_counts',
                                             accumulative_counts, 1)
        # what the config asked for, read before a resumed state overwrites the groups
        self.configured_weight_decay = {
            id(p): float(g.get('weight_decay', 0) or 0)
            for g in optimizer.param_groups for p in g['params']}
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
            optimizer.register_state_dict_post_hook(self._save),
            optimizer.register_load_state_dict_pre_hook(self._load)]
        if model is not None:
            self.attach_model(model)
        return self

    def attach_model(self, model: nn.Module) -> None:
        """Give the controller the model it acts on, and watch its forwards."""
        self.model = model
        inner = unwrap(model)
        if self.tracer is None and not self.started:
            self.tracer = NormFollowTracer(inner).attach()
        if self._model_handle is None:
            self._model_handle = inner.register_forward_pre_hook(self._count_forward)
        self.check_before_training(inner)

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._model_handle is not None:
            self._model_handle.remove()
            self._model_handle = None
        if self.tracer is not None:
            self.tracer.detach()
            self.tracer = None
        self.optimizer = None

    # ------------------------------------------------------------- hooks
    def _count_forward(self, module: nn.Module, args) -> None:
        if not module.training or not self.max_skipped_steps:
            return
        self._forwards += 1
        # after k skipped steps the next forward is number k * counts + 1
        if self._forwards > self.accumulative_counts * self.max_skipped_steps:
            self._raise_skipped()

    def _raise_skipped(self) -> None:
        raise FloatingPointError(
            f'{self.type_name}: the last {self.max_skipped_steps} optimizer steps were '
            'all skipped (the AMP loss scaler found inf/NaN gradients every time): the '
            'loss or the weights are not finite. Stop and check the data, the loss and '
            f'the learning rate ({self.key("max_skipped_steps")} sets this limit; 0 '
            'disables it).')

    def _pre_step(self, optimizer, args, kwargs) -> None:
        if not self.started:
            self._start()
        self.before_step()

    def _post_step(self, optimizer, args, kwargs) -> None:
        self._forwards = 0
        self.steps += 1
        # GradScaler sets found_inf only for optimizers that skip inside their own
        # kernel (fused=True): they are stepped even on a skipped step, which is
        # then known on the device only. Keep it there: the rescale factor is 1
        # where it is set, and the run of skipped steps is counted on the device.
        found_inf = getattr(optimizer, 'found_inf', None)
        if found_inf is None:
            self.after_step(skip=None)
            self._push_scalars()
            return
        skipped = found_inf.reshape(-1).sum() > 0
        streak = self._skip_streak if self._skip_streak is not None \
            else torch.zeros((), dtype=torch.long, device=skipped.device)
        self._skip_streak = torch.where(skipped, streak + 1, torch.zeros_like(streak))
        self.after_step(skip=skipped)
        self._push_scalars()
        check = max(1, min(10, self.max_skipped_steps))  # one host sync every `check` steps
        if self.max_skipped_steps and self.steps % check == 0 \
                and int(self._skip_streak) >= self.max_skipped_steps:
            self._raise_skipped()

    def _push_scalars(self) -> None:
        if not self.log_interval or self.steps % self.log_interval:
            return
        from mmengine.logging import MessageHub
        hub = MessageHub.get_current_instance()
        lr = float(self.optimizer.param_groups[0]['lr'])
        for name, value in self.log_scalars(lr).items():
            hub.update_scalar(f'{HUB_PREFIX}{name}', float(value))

    def _start(self) -> None:
        if self.model is None:
            raise RuntimeError(
                f'{self.type_name}: no model to act on. Build the optim wrapper with '
                "optim_wrapper.constructor='NormControlOptimWrapperConstructor' (FixNorm "
                "configs may say 'FixNormOptimWrapperConstructor'), or call "
                'attach_model(model) before training.')
        followed = {}
        if self.tracer is not None:
            if not self.tracer.seen_forward:
                print_log(f'{self.type_name}: no forward pass was traced before the first '
                          'step; only FixNorm/WN layers and `include` patterns are known',
                          logger='current', level=logging.WARNING)
            followed = self.tracer.followed
            self.layer_order = list(self.tracer.order)
            self.also_used = self.tracer.also_used
            self.tracer.detach()
            self.tracer = None
        resumed_state = None if self._resumed is None else self._resumed[1]
        self.start(unwrap(self.model), followed, resumed_state)
        self.started = True

    def _save(self, optimizer, state_dict: dict) -> None:
        self.check_before_save()
        state_dict[TYPE_KEY] = self.type_name
        if self.state_key is not None:
            state = self.state_dict()
            if state is not None:
                state_dict[self.state_key] = state

    def _load(self, optimizer, state_dict: dict) -> dict:
        state_dict = dict(state_dict)
        saved_type = state_dict.pop(TYPE_KEY, None)
        states = {}
        for cls in registered_controllers():
            if cls.state_key is not None and cls.state_key in state_dict:
                states[cls.type_name] = state_dict.pop(cls.state_key)
                if saved_type is None:  # checkpoints written before TYPE_KEY existed
                    saved_type = cls.type_name
        if saved_type is None and self._resumed is not None:
            return state_dict  # FixNormHook's legacy top-level key restored it already
        self.load_resumed(saved_type, states.get(self.type_name))
        return state_dict

    def load_resumed(self, saved_type: Optional[str], state: Any) -> None:
        """A resumed checkpoint's method and state: checked now (before the
        optimizer loads anything else), applied at :meth:`start`."""
        self._resumed = (saved_type, self._checked_resume(saved_type, state))
        if self.started:
            self._apply_late_resume()

    def _apply_late_resume(self) -> None:
        raise RuntimeError(f'{self.type_name}: a checkpoint was loaded after training '
                           'started; resume before the first step')

    def _checked_resume(self, saved_type: Optional[str], state: Any) -> Any:
        """The state to resume from, None to start afresh; or the error of
        resuming another method's checkpoint."""
        mismatch = (saved_type is not None and saved_type != self.type_name) or \
            (saved_type is None and self.state_key is not None)
        if not mismatch:
            return state
        what = f'with {saved_type}' if saved_type else 'without norm control (or an unknown one)'
        if self.on_method_change == 'error':
            raise ValueError(
                f'{self.type_name}: the checkpoint being resumed was trained {what}, this '
                f'config trains with {self.type_name}; resuming would silently start '
                f'{self.type_name} afresh from its weights. To do that on purpose, set '
                f"{self.key('on_method_change')}='restart'.")
        print_log(f'{self.type_name}: the resumed checkpoint was trained {what}; '
                  f"{self.key('on_method_change')}='restart': starting {self.type_name} "
                  'afresh from the resumed weights', logger='current', level=logging.WARNING)
        return None

    # ------------------------------------------------------------- for subclasses
    def check_before_training(self, model: nn.Module) -> None:
        """Checks possible before any forward (e.g. weight decay on a FixNorm layer)."""

    def start(self, model: nn.Module, followed: Dict[str, Tuple[str, str, bool]],
              resumed_state: Any) -> None:
        """Select what the method acts on, at the first real step, before it
        updates. ``followed``: the tracer's output; ``resumed_state``: the
        state of a resumed checkpoint of this method, or None."""
        raise NotImplementedError

    def before_step(self) -> None:
        """Before every real step (the gradients are final, unscaled)."""

    def after_step(self, skip: Optional[Tensor] = None) -> None:
        """After every real step."""

    def check_before_save(self) -> None:
        """Before the state is saved (a checkpoint): a chance to refuse."""

    def state_dict(self) -> Any:
        return None

    def log_scalars(self, lr: float) -> Dict[str, Tensor]:
        """Scalars worth logging (the norms the method controls); names without prefix."""
        return {}

    # ------------------------------------------------------------- helpers
    def take_over_weight_decay(self, params: Dict[str, nn.Parameter]) -> Dict[str, float]:
        """Set the optimizer's weight decay of ``params`` to 0 (the method
        replaces it) and return the decay each was configured with.

        Every parameter must have its own param group, or zeroing its decay
        would zero its neighbours' too: ``NormControlOptimWrapperConstructor``
        builds one group per parameter for such methods.
        """
        group_of = {id(p): g for g in self.optimizer.param_groups for p in g['params']}
        configured = {}
        for name, p in params.items():
            group = group_of.get(id(p))
            if group is None:
                raise ValueError(f'{self.type_name}: {name} is not optimized by this '
                                 'optimizer (requires_grad=False or left out of its params)')
            wd = float(group.get('weight_decay', 0) or 0)
            if wd > 0 and len(group['params']) > 1:
                raise self.shared_group_error(name, group)
            configured[name] = self.configured_weight_decay.get(id(p), wd)
            if wd > 0:
                group['weight_decay'] = 0.0
        return configured

    def shared_group_error(self, name: str, group: dict) -> ValueError:
        wd = float(group.get('weight_decay', 0) or 0)
        return ValueError(
            f'{self.type_name}: {name} shares a param group (weight_decay={wd}) '
            f'with {len(group["params"]) - 1} other tensors, so its weight decay '
            "cannot be replaced alone. Set optim_wrapper.constructor="
            "'NormControlOptimWrapperConstructor' (one group per parameter), or "
            'optim_wrapper.optimizer.weight_decay=0.')

    def check_can_take_over(self, params: Dict[str, nn.Parameter]) -> None:
        """Before training: each of ``params`` with weight decay has a param
        group of its own (else :meth:`take_over_weight_decay` would fail at
        the first step)."""
        group_of = {id(p): g for g in self.optimizer.param_groups for p in g['params']}
        for name, p in params.items():
            group = group_of.get(id(p))
            if group is not None and float(group.get('weight_decay', 0) or 0) > 0 \
                    and len(group['params']) > 1:
                raise self.shared_group_error(name, group)

    def apply_weight_decay_rule(self, controlled: Dict[str, nn.Parameter]) -> Dict[str, float]:
        """The method replaces the weight decay of ``controlled`` (set to 0);
        every other tensor keeps the config's, or, with
        ``uncontrolled_weight_decay='none'``, gets none either. Returns the
        decay each controlled tensor was configured with."""
        configured = self.take_over_weight_decay(controlled)
        if self.uncontrolled_weight_decay == 'none':
            for group in self.optimizer.param_groups:
                if 'weight_decay' in group:
                    group['weight_decay'] = 0.0
        return configured

    def weight_decay_summary(self, model: nn.Module, controlled: Dict[str, nn.Parameter],
                             configured: Dict[str, float]) -> str:
        """One line of the startup table: which weight decay each tensor got, and why."""
        taken = sorted({v for v in configured.values() if v > 0})
        decay = self.decay_of()
        others: Dict[float, int] = {}
        for n, p in model.named_parameters():
            if n not in controlled and p.requires_grad and id(p) in decay:
                others[decay[id(p)]] = others.get(decay[id(p)], 0) + 1
        part = ', '.join(f'{v:g} on {k}' for v, k in sorted(others.items(), reverse=True))
        rule = ("none on the other tensors either (uncontrolled_weight_decay='none', the "
                "paper's setting)" if self.uncontrolled_weight_decay == 'none' else
                f"the config's on the {sum(others.values())} other tensors "
                "(uncontrolled_weight_decay='keep')")
        line = (f'weight decay: 0 on the {len(controlled)} controlled tensors'
                + (f' (taken over from {", ".join(f"{v:g}" for v in taken)})' if taken else '')
                + f'; {rule}')
        return line + (f': {part}' if part and self.uncontrolled_weight_decay == 'keep' else '')

    def warn_uncontrolled(self, model: nn.Module, controlled: Sequence[str],
                          excluded: Sequence[Tuple[str, int, str]], extra: str = '') -> None:
        """The WARNING for trainable conv/linear weights that neither the
        method nor weight decay bounds, with the config line that changes it;
        other parameters without weight decay (tokens, position tables, which
        configs exempt on purpose) get one INFO line."""
        from . import table
        items = table.uncontrolled(model, controlled, excluded, self.decay_of())
        weights = [i for i in items if i[2] != table.OTHER_PARAMETER]
        others = [i for i in items if i[2] == table.OTHER_PARAMETER]
        if self.uncontrolled_weight_decay == 'none':
            remedy = (f"{self.key('uncontrolled_weight_decay')}='none' takes their weight decay "
                      "away (the paper's setting); 'keep' (the default) leaves them the "
                      "config's.")
        else:
            remedy = ('The config gives them no weight decay (optim_wrapper.optimizer.'
                      'weight_decay, and paramwise_cfg per tensor); the method keeps the '
                      "config's weight decay on every tensor it does not control, so weight "
                      'decay given to them there bounds them.')
        for line in table.uncontrolled_warning(weights, self.type_name,
                                               remedy + (f' {extra}' if extra else '')):
            print_log(f'{self.type_name}: {line}', logger='current', level=logging.WARNING)
        if others:
            names = ', '.join(n for n, _, _ in others[:4]) + (', ...' if len(others) > 4 else '')
            why = ('uncontrolled_weight_decay=\'none\'' if self.uncontrolled_weight_decay == 'none'
                   else 'the config (paramwise_cfg)')
            print_log(f'{self.type_name}: {len(others)} other parameter(s) ({names}: tokens, '
                      f'position tables, embeddings, ...) train with no weight decay, as {why} '
                      'says.', logger='current')

    def decay_of(self) -> Dict[int, float]:
        """Current weight decay of every optimized tensor, by id."""
        return {id(p): float(g.get('weight_decay', 0) or 0)
                for g in self.optimizer.param_groups for p in g['params']}

    def log_table(self, summary: str, details: str) -> None:
        """The startup table: ``summary`` to the log; ``details`` (one line a
        tensor) at DEBUG and, when the log goes to a file, beside it."""
        from mmengine.dist import is_main_process
        print_log(summary, logger='current')
        print_log(details, logger='current', level=logging.DEBUG)
        path = _log_dir_file(f'{self.type_name.lower()}_tensors.txt')
        if path is not None and is_main_process():
            with open(path, 'w') as f:
                f.write(summary + '\n\n' + details + '\n')
            print_log(f'{self.type_name}: the per-tensor list is in {path}', logger='current')


def _log_dir_file(name: str) -> Optional[str]:
    """``name`` in the directory of the current MMLogger's log file, if any."""
    from mmengine.logging import MMLogger
    for handler in MMLogger.get_current_instance().handlers:
        path = getattr(handler, 'baseFilename', None)
        if path:
            return osp.join(osp.dirname(path), name)
    return None


def registered_controllers() -> List[type]:
    """Every registered norm-control method, in registration order."""
    from ..registry import NORM_CONTROLLERS
    NORM_CONTROLLERS.import_from_location()
    return [c for c in NORM_CONTROLLERS.module_dict.values()
            if isinstance(c, type) and issubclass(c, NormController)]


def controller_class(name: Any, cfg_key: str = 'optim_wrapper.norm_control') -> type:
    """The registered method ``name`` (a class passes as is), or an error
    naming ``<cfg_key>.type`` and the registered ones."""
    from ..registry import NORM_CONTROLLERS
    cls = NORM_CONTROLLERS.get(name) if isinstance(name, str) else name
    if cls is None:
        raise KeyError(f'{cfg_key}.type={name!r} is not a registered norm-control method; '
                       f'registered: {sorted(c.type_name for c in registered_controllers())}')
    return cls


def build_controller(cfg: Any, cfg_key: str = 'optim_wrapper.norm_control') -> NormController:
    """A controller from ``dict(type='FixNorm', ...)`` (or an instance, as is)."""
    if isinstance(cfg, NormController):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"{cfg_key} must be dict(type=<method>, ...), e.g. "
                        f"dict(type='FixNorm'), got {cfg!r}")
    cfg = dict(cfg)
    cfg.pop('_scope_', None)  # added by mmengine to dicts of `pkg::` bases
    name = cfg.pop('type')
    cls = controller_class(name, cfg_key)
    valid = accepted_keys(cls)  # None: a method whose options cannot be told
    if valid is not None:  # a typo names its key and the nearest option
        check_keys(cfg_key, cfg, valid - {'cfg_key'}, getattr(cls, 'type_name', name))
    return cls(cfg_key=cfg_key, **cfg)
