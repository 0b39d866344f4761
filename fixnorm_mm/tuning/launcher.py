"""Runs one trial as a real training: ``python -m fixnorm_mm.tools.train CONFIG --cfg-options ...``.

A trial is a subprocess of the installed package's training tool
(``python -m fixnorm_mm.tools.train``; ``torchrun -m fixnorm_mm.tools.train``
for several processes per trial; ``srun python -m fixnorm_mm.tools.train`` on
a Slurm cluster: :mod:`fixnorm_mm.tools.dist`), never a path into a source
tree, with the trial's lr/alpha/weight decay and its shortened
schedule (:func:`~fixnorm_mm.tuning.schedule.scale_schedule`) as
``--cfg-options``, its own work_dir and a ``trial.log`` that holds everything
it printed. Its metric is the last value of the metric the run itself logged
at evaluation (``<work_dir>/<timestamp>/vis_data/scalars.json``).

Trials of one sweep run at once in *slots*: groups of ``gpus_per_trial``
GPUs of this machine (``CUDA_VISIBLE_DEVICES`` of the child), CPU processes
on a machine without GPU, or concurrent ``srun`` jobs.
"""
import glob
import json
import math
import os
import os.path as osp
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..engine.checkpoint_hook import find_resumable_checkpoint
from ..tools.dist import srun_command, torchrun_command
from .schedule import DEFAULT_WARMUP, check_warmup_rule, scale_schedule
from .trial import SweepConfigError, TrialFailed, TrialInterrupted, TrialOutcome, TrialPruned

#: Metrics that OpenMMLab tasks log at evaluation, by preference (mmpretrain,
#: mmdet, mmseg); ``--metric`` names any other.
KNOWN_METRICS = ('accuracy/top1', 'coco/bbox_mAP', 'mIoU')
#: The module every trial runs (``python -m``, same interpreter and environment
#: as the sweep, so the same ``fixnorm_mm``): the package's training tool.
TRAIN_MODULE = 'fixnorm_mm.tools.train'
#: ... and what a trial that reports its evaluations to an early-stopping tuner
#: runs instead: the same tool with :class:`~fixnorm_mm.tuning.pruning.TrialReportHook`.
REPORT_MODULE = 'fixnorm_mm.tuning.pruning'

#: mmengine parses a config with ``ast.parse``; CPython 3.11's AST builder keeps
#: its recursion depth in per-interpreter state, so two threads parsing at once
#: can fail with "SystemError: AST constructor recursion depth mismatch"
#: (python/cpython#106905). Sweeps started in threads of one process (tests,
#: notebooks) take turns here.
_CONFIG_PARSE_LOCK = threading.Lock()


def format_option(value: Any) -> str:
    """A value as ``mmengine.config.DictAction`` parses it back."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return '[' + ','.join(format_option(v) for v in value) + ']'
    if isinstance(value, tuple):
        return '(' + ','.join(format_option(v) for v in value) + (',)' if len(value) == 1 else ')')
    return str(value)


def read_metric(work_dir: str, metric: Optional[str] = None) -> Tuple[float, str]:
    """``(value, name)`` of the last evaluation the run in ``work_dir`` logged.

    Reads the newest run directory (``<timestamp>/vis_data/scalars.json``)
    that has one; ``metric=None`` takes the first of :data:`KNOWN_METRICS`
    that the evaluation logged. A run that finished without logging the
    metric raises :class:`SweepConfigError`: every trial of the sweep would
    miss it (a misspelt ``--metric``, a config that does not evaluate).
    """
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    seen = set()
    for path in reversed(runs):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for rec in reversed(records):
            if 'loss' in rec or 'lr' in rec:
                continue  # a training record
            seen.update(k for k in rec if k != 'step')
            names = [metric] if metric else [k for k in KNOWN_METRICS if k in rec]
            if names and names[0] in rec:
                return float(rec[names[0]]), names[0]
    if not seen:
        raise SweepConfigError(
            f'the trial finished training but logged no evaluation ({work_dir}/*/vis_data/'
            'scalars.json has no evaluation record): check val_dataloader, val_cfg and '
            "val_evaluator of the config, and that train_cfg's val_interval is reached")
    if metric:
        raise SweepConfigError(
            f'--metric {metric!r} is not a metric the runs log; the evaluation logged '
            f'{sorted(seen)} ({work_dir}/*/vis_data/scalars.json)')
    raise SweepConfigError(
        f'the runs log none of {list(KNOWN_METRICS)}; pass --metric NAME, one of '
        f'{sorted(seen)} ({work_dir}/*/vis_data/scalars.json)')


def training_divergence(work_dir: str) -> Optional[str]:
    """``'loss is nan at iteration 40'`` if the newest run's last logged training
    loss is not finite, else None. Weight-decay training that diverges keeps
    going with a NaN loss and reports a chance-level metric; that is a failed
    trial, not a result. (FixNorm runs stop at once: Algo 1 checks the norm.)"""
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not runs:
        return None
    with open(runs[-1]) as f:
        losses = [json.loads(line) for line in f if '"loss"' in line]
    if losses and not math.isfinite(float(losses[-1]['loss'])):
        return f"training loss is {losses[-1]['loss']} at iteration {losses[-1].get('step')}"
    return None


# ------------------------------------------------------------ why a trial ended
#: A line the launcher writes into ``trial.log`` before each attempt.
ATTEMPT_HEADER = re.compile(r'^# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d (started|resumed): ')
#: Signals sent to a process from outside (the OOM killer, ``kill``, Ctrl-C,
#: a scheduler's time limit or preemption): the trial did nothing wrong.
KILL_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGXCPU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE}
#: torchrun's report of a child that died of a signal, and a scheduler's
#: (Slurm's) report of a job that was killed.
_CHILD_SIGNAL = (re.compile(r'Signal (\d+) \(SIG\w+\) received by PID'),
                 re.compile(r'exitcode\s*:\s*-(\d+)'))
_SCHEDULER_KILL = re.compile(r'oom[-_ ]kill|Out Of Memory|task \d+: Killed|CANCELLED AT .* DUE TO'
                             r'|DUE TO (TIME LIMIT|PREEMPTION|NODE FAIL)', re.IGNORECASE)
_OOM_ERROR = re.compile(r'OutOfMemoryError|out of memory|^MemoryError\b', re.IGNORECASE)
_RANK_PREFIX = re.compile(r'^\[(default)?\d+\]:\s?|^\[rank\d+\]:\s?')


def attempt_log(log_path: str, max_chars: int = 2_000_000) -> str:
    """What the last attempt of a trial printed: ``trial.log`` from the last
    line the launcher wrote before starting or resuming it."""
    try:
        with open(log_path, errors='replace') as f:
            f.seek(max(0, osp.getsize(log_path) - max_chars))
            lines = f.read().splitlines()
    except OSError:
        return ''
    start = max((i for i, line in enumerate(lines) if ATTEMPT_HEADER.match(line)), default=-1)
    return '\n'.join(lines[start + 1:])


def last_exception(text: str) -> Tuple[Optional[str], List[str]]:
    """``(exception line, frame names)`` of the last Python traceback in
    ``text`` that is not torchrun's summary (``ChildFailedError``), e.g.
    ``('FloatingPointError: FixNorm: ...', ['<module>', 'main', ..., 'step'])``;
    ``(None, [])`` if there is none."""
    found: Tuple[Optional[str], List[str]] = (None, [])
    lines = [_RANK_PREFIX.sub('', line.rstrip()) for line in text.splitlines()]
    i = 0
    while i < len(lines):
        if not lines[i].startswith('Traceback (most recent call last)'):
            i += 1
            continue
        frames = []
        i += 1
        while i < len(lines) and (not lines[i] or lines[i][0].isspace()):
            m = re.match(r'\s+File ".*", line \d+, in (\S+)', lines[i])
            if m:
                frames.append(m.group(1))
            i += 1
        if i < len(lines) and 'ChildFailedError' not in lines[i]:
            found = (lines[i].strip()[:500], frames)
    return found


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f'signal {signum}'


def classify_exit(returncode: int, log_text: str, work_dir: Optional[str] = None
                  ) -> Tuple[str, str, Dict[str, Any]]:
    """Why a trial's process ended with a non-zero ``returncode``.

    Returns ``(kind, reason, info)``. ``kind`` is ``'interrupted'`` (no
    result, run it again: killed by a signal from outside, by the OOM killer
    or a scheduler, out of memory, or died while saving a checkpoint) or
    ``'failed'`` (a result: a Python error of the training, e.g. the
    ``FloatingPointError`` of a diverging FixNorm run, or a crash such as
    SIGSEGV). ``reason`` names the exit code or signal and the exception line
    of the log's last traceback, not the log's last line; ``info`` holds
    ``returncode`` and ``signal`` (a name) for the record. ``log_text`` is the
    attempt's part of ``trial.log`` (:func:`attempt_log`); ``work_dir`` is
    looked at for a checkpoint a save did not finish (``.<name>.pth.tmp`` of
    :class:`~fixnorm_mm.engine.checkpoint_hook.AtomicCheckpointHook`).
    """
    info: Dict[str, Any] = dict(returncode=returncode)
    signum = None
    if returncode < 0:
        signum = -returncode
    else:
        for pattern in _CHILD_SIGNAL:  # torchrun: a child died of a signal
            m = pattern.search(log_text)
            if m:
                signum = int(m.group(1))
                break
        if signum is None and returncode > 128 and not last_exception(log_text)[0]:
            signum = returncode - 128  # a shell's or srun's 128 + signal
            if signum not in KILL_SIGNALS:
                signum = None
    error, frames = last_exception(log_text)
    in_save = any('save_checkpoint' in f for f in frames) or bool(
        work_dir and glob.glob(osp.join(work_dir, '.*.pth.tmp')))
    while_saving = ' while saving a checkpoint' if in_save else ''
    if signum is not None:
        info['signal'] = _signal_name(signum)
    if signum in KILL_SIGNALS:
        return 'interrupted', f'killed by {_signal_name(signum)}{while_saving}', info
    if _SCHEDULER_KILL.search(log_text) and not error:
        line = _SCHEDULER_KILL.search(log_text).group(0)
        return 'interrupted', f'killed by the scheduler ({line}){while_saving}', info
    if error and any('save_checkpoint' in f for f in frames):
        return 'interrupted', f'died while saving a checkpoint: {error}', info
    if error and _OOM_ERROR.search(error):
        return 'interrupted', f'out of memory: {error}', info
    if signum is not None:
        return 'failed', f'crashed with {_signal_name(signum)}' + (
            f': {error}' if error else ''), info
    if error:
        return 'failed', f'exit code {returncode}: {error}', info
    return 'failed', f'exit code {returncode} with no Python error in the log', info


def error_summary(log_path: str) -> str:
    """The exception line of the last traceback of a trial's last attempt."""
    error, _ = last_exception(attempt_log(log_path))
    return error or 'no Python error in the log'


_MISSING = object()


def config_value(cfg, key: str, default: Any = _MISSING) -> Any:
    """The value the dotted ``key`` (list items by index, as ``--cfg-options``
    writes them) names in ``cfg`` (an mmengine ``Config`` or a dict);
    ``default`` (or KeyError) if there is none."""
    node = cfg.to_dict() if not isinstance(cfg, dict) and hasattr(cfg, 'to_dict') else cfg
    for part in key.split('.'):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif default is _MISSING:
            raise KeyError(key)
        else:
            return default
    return node


def config_has_key(cfg, key: str) -> bool:
    """Whether the dotted ``key`` names a value of ``cfg``."""
    try:
        config_value(cfg, key)
    except KeyError:
        return False
    return True


def find_key(cfg, leaf: str, under: str = 'model') -> str:
    """The one config key ending in ``.<leaf>`` under ``under`` that is not part
    of a loss (RetinaNet's focal loss has an ``alpha`` too). For the FixNorm
    layer's alpha: ``model.head.alpha``, ``model.bbox_head.alpha``,
    ``model.decode_head.alpha``."""
    found: List[str] = []

    def walk(node, path):
        if isinstance(node, dict):
            if 'loss' in str(node.get('type', '')).lower():
                return
            for k, v in node.items():
                p = f'{path}.{k}'
                if k == leaf and isinstance(v, (int, float)) and not isinstance(v, bool):
                    found.append(p)
                elif 'loss' not in str(k).lower():
                    walk(v, p)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f'{path}.{i}')

    walk(cfg.get(under, {}), under)
    if len(found) != 1:
        raise ValueError(f'cannot tell which `{leaf}` to tune: the config has '
                         f'{found or "none"} under `{under}`; pass the key '
                         f'(e.g. --alpha-key model.head.alpha)')
    return found[0]


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'TrainingLauncher: {name} must be an int >= {minimum}, '
                         f'got {value!r}')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('', 0))
        return s.getsockname()[1]


#: Run by ``python -I -S -c`` in front of a trial's command: set
#: PR_SET_PDEATHSIG (SIGTERM when the thread that started it ends, e.g. the
#: sweep is SIGKILLed), give up if that parent is already gone, then exec the
#: trial (same pid, the setting survives exec). Cheaper for the sweep than
#: ``preexec_fn``, which makes every start fork the whole sweep process:
#: without it Python starts the wrapper with vfork.
_DEATHSIG_EXEC = (
    'import ctypes, os, signal, sys\n'
    'try:\n'
    '    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n'
    'except (OSError, AttributeError):\n'
    '    pass\n'
    'if os.getppid() != int(sys.argv[1]):\n'
    '    os.kill(os.getpid(), signal.SIGTERM)\n'
    'os.execvpe(sys.argv[2], sys.argv[2:], os.environ)\n')


def popen_dying_with_parent(argv: Sequence[str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(argv, **kwargs)`` whose process gets SIGTERM when the
    calling process dies (even of SIGKILL), so a killed sweep leaves no
    orphan training writing into a trial's work_dir. Linux; elsewhere the
    command just runs."""
    if not sys.platform.startswith('linux'):
        return subprocess.Popen(list(argv), **kwargs)
    return subprocess.Popen([sys.executable, '-I', '-S', '-c', _DEATHSIG_EXEC,
                             str(os.getpid())] + list(argv), **kwargs)


def _visible_gpus() -> List[str]:
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is not None:
        return [d for d in env.split(',') if d.strip() and d.strip() != '-1']
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


class TrainingLauncher:
    """Launches trainings of one config.

    Args:
        config: the config file every trial trains.
        metric: the evaluation metric to read (default: first of :data:`KNOWN_METRICS`).
        cfg_options: options given to every trial (e.g. a smaller dataset).
        launcher: ``'none'`` (this machine) or ``'slurm'`` (``srun``).
        gpus_per_trial: GPUs of one trial; default 1 where GPUs are visible, else 0.
        procs_per_trial: processes of one CPU trial (> 1: torchrun with gloo).
        parallel: trials at once; default: GPUs // gpus_per_trial, 1 on CPU.
        partition, gpus_per_node, cpus_per_task, srun_args: Slurm settings.
        python: the interpreter of the trials.
        train_module: the module a trial runs with ``python -m`` (its command
            line is :mod:`fixnorm_mm.tools.train`'s).
        warmup: how a budget treats the warm-up, ``'scaled'`` (default) or
            ``'absolute'`` (:func:`~fixnorm_mm.tuning.schedule.scale_schedule`,
            docs/tuning.md).
        report_module: the module of a trial that reports its evaluations
            (:meth:`run` with ``report``); default :data:`REPORT_MODULE`, or
            ``train_module`` when that is not the package's tool (it must then
            report itself).
    """

    def __init__(self, config: str, metric: Optional[str] = None,
                 cfg_options: Optional[Dict[str, Any]] = None, launcher: str = 'none',
                 gpus_per_trial: Optional[int] = None, procs_per_trial: int = 1,
                 parallel: Optional[int] = None, partition: Optional[str] = None,
                 gpus_per_node: int = 8, cpus_per_task: int = 5, srun_args: str = '',
                 python: str = sys.executable, train_module: str = TRAIN_MODULE,
                 warmup: str = DEFAULT_WARMUP, report_module: Optional[str] = None) -> None:
        from mmengine.config import Config
        if launcher not in ('none', 'slurm'):
            raise ValueError(f"TrainingLauncher: launcher (--launcher) must be 'none' or "
                             f"'slurm', got {launcher!r}")
        _check_int('parallel (--parallel)', parallel, 1, optional=True)
        _check_int('gpus_per_trial (--gpus-per-trial)', gpus_per_trial, 0, optional=True)
        _check_int('procs_per_trial (--procs-per-trial)', procs_per_trial, 1)
        _check_int('gpus_per_node (--gpus-per-node)', gpus_per_node, 1)
        _check_int('cpus_per_task (--cpus-per-task)', cpus_per_task, 1)
        if metric is not None and not (isinstance(metric, str) and metric.strip()):
            raise ValueError(f'TrainingLauncher: metric (--metric) must be a non-empty name, '
                             f'got {metric!r}')
        self.warmup = check_warmup_rule(warmup)
        self.config = osp.abspath(config)
        with _CONFIG_PARSE_LOCK:
            self.cfg = Config.fromfile(self.config)
        self.cfg_options = dict(cfg_options or {})
        if self.cfg_options:
            self.cfg.merge_from_dict(self.cfg_options)
        self.metric, self.launcher, self.python = metric, launcher, python
        self.train_module = train_module
        self.report_module = report_module or (
            REPORT_MODULE if train_module == TRAIN_MODULE else train_module)
        self.partition, self.gpus_per_node = partition, gpus_per_node
        self.cpus_per_task, self.srun_args = cpus_per_task, srun_args
        if launcher == 'slurm' and not partition:
            raise ValueError('TrainingLauncher: --launcher slurm needs --partition')
        gpus = _visible_gpus() if launcher == 'none' else []
        if gpus_per_trial is None:
            gpus_per_trial = 1 if (gpus or launcher == 'slurm') else 0
        self.gpus_per_trial, self.procs_per_trial = int(gpus_per_trial), int(procs_per_trial)
        if launcher == 'none' and self.gpus_per_trial > 0:
            if len(gpus) < self.gpus_per_trial:
                raise ValueError(f'TrainingLauncher: --gpus-per-trial {self.gpus_per_trial}, '
                                 f'but this machine shows {len(gpus)} GPU(s) '
                                 '(CUDA_VISIBLE_DEVICES)')
            n = len(gpus) // self.gpus_per_trial
            slots = [gpus[i * self.gpus_per_trial:(i + 1) * self.gpus_per_trial]
                     for i in range(n)]
            if parallel is not None and parallel > n:
                need = parallel * self.gpus_per_trial
                raise ValueError(f'TrainingLauncher: --parallel {parallel} trials of '
                                 f'{self.gpus_per_trial} GPU(s) need {need} GPUs, this machine '
                                 f'shows {len(gpus)} (CUDA_VISIBLE_DEVICES)')
            self.parallel = parallel or n
        else:
            self.parallel = parallel or 1
            slots = [None] * self.parallel
        self._slots: 'queue.Queue' = queue.Queue()
        for s in slots[:self.parallel]:
            self._slots.put(s)
        self._procs: Dict[int, subprocess.Popen] = {}
        self._procs_lock = threading.Lock()
        self._stopping: Optional[str] = None

    def check_key(self, key: str, option: str) -> str:
        """``key`` if it names a value of the config (after ``cfg_options``),
        else a :class:`SweepConfigError` naming ``option``: ``--cfg-options``
        would add a misspelt key silently, and every trial would train with
        the config's own value (or fail on an unknown argument)."""
        if config_has_key(self.cfg, key):
            return key
        parent = key.rpartition('.')[0]
        node = config_value(self.cfg, parent, None) if parent else None
        where = (f'; {parent} has {sorted(node)}' if isinstance(node, dict)
                 else f'; the config has no {parent!r} either' if parent and node is None
                 else '')
        hint = (f', or add it with --cfg-options {key}=VALUE' if isinstance(node, dict)
                else '')
        raise SweepConfigError(f'{option} {key!r} is not a key of {self.config}{where}. '
                               f'Name an existing key{hint}')

    # ---------------------------------------------------------------- options
    def schedule_options(self, budget: float) -> Dict[str, Any]:
        """The shortened schedule of a trial at ``budget`` x T_max (its warm-up
        as ``self.warmup`` says: :func:`~fixnorm_mm.tuning.schedule.scale_schedule`)."""
        return scale_schedule(self.cfg, budget, warmup=self.warmup)

    def key(self, leaf: str, given: Optional[str] = None) -> str:
        return given or find_key(self.cfg, leaf)

    # ---------------------------------------------------------------- command
    def command(self, work_dir: str, options: Dict[str, Any], resume: bool,
                gpus: Optional[Sequence[str]], module: Optional[str] = None
                ) -> Tuple[List[str], Dict[str, str]]:
        """argv and environment of one trial (``module``: default the train module)."""
        module = module or self.train_module
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        # the sweep's own overrides first, the trial's (schedule, lr, alpha) last
        options = dict(self.cfg_options, **options)
        args = ['--cfg-options'] + [f'{k}={format_option(v)}' for k, v in options.items()]
        if resume:
            args.append('--resume')
        if self.launcher == 'slurm':
            n = max(1, self.gpus_per_trial or self.procs_per_trial)
            per_node = min(n, self.gpus_per_node) if self.gpus_per_trial else n
            argv = srun_command(
                module,
                [self.config, f'--work-dir={work_dir}', '--launcher=slurm'] + args,
                partition=self.partition, job_name='tune-' + osp.basename(work_dir),
                ntasks=n, ntasks_per_node=per_node,
                gpus_per_node=per_node if self.gpus_per_trial else 0,
                cpus_per_task=self.cpus_per_task, srun_args=shlex.split(self.srun_args),
                python=self.python)
            return argv, env
        if gpus is not None:
            env['CUDA_VISIBLE_DEVICES'] = ','.join(gpus)
        else:
            # CPU trials share the cores: one trial must not take all of them with
            # its own thread pool (over-subscription makes every trial slower)
            cores = os.cpu_count() or 1
            per = max(1, cores // (self.parallel * self.procs_per_trial))
            env.setdefault('OMP_NUM_THREADS', str(per))
        nproc = len(gpus) if gpus is not None else self.procs_per_trial
        script_args = [self.config, '--work-dir', work_dir]
        if nproc > 1:
            argv = torchrun_command(module,
                                    script_args + ['--launcher', 'pytorch'] + args, nproc,
                                    port=_free_port(), python=self.python)
        else:
            argv = [self.python, '-m', module] + script_args + args
        return argv, env

    # -------------------------------------------------------------------- run
    def run(self, work_dir: str, options: Dict[str, Any], resume: bool = False,
            report: Optional[Dict[str, Any]] = None) -> TrialOutcome:
        """Train once; the metric, or why there is none.

        Raises :class:`TrialFailed` (a result: a Python error, a crash, NaN),
        :class:`TrialInterrupted` (no result: killed by a signal or a
        scheduler, out of memory, died while saving a checkpoint, stopped by
        :meth:`stop`) or :class:`SweepConfigError` (it trained, but logged no
        ``metric``). Every attempt appends to ``<work_dir>/trial.log``.

        ``resume``: continue from the newest complete checkpoint of the
        work_dir, if there is one (an earlier attempt was interrupted).

        ``report``: where the trial reports each evaluation (an Optuna trial:
        ``storage``, ``study_name``, ``trial_number``, ``pruner``; ASHA+WD).
        It then runs :attr:`report_module`, and a trial its pruner stops
        raises :class:`TrialPruned` with the fraction of T_max it ran.
        """
        from .pruning import PRUNED_FILE, REPORT_ENV, read_pruned
        work_dir = osp.abspath(work_dir)
        os.makedirs(work_dir, exist_ok=True)
        log_path = osp.join(work_dir, 'trial.log')
        # a save that an earlier attempt did not finish: not a checkpoint, and it
        # would make this attempt look as if it died while saving; an earlier
        # attempt's pruning note says nothing about this attempt
        for tmp in glob.glob(osp.join(work_dir, '.*.pth.tmp')) + glob.glob(
                osp.join(work_dir, PRUNED_FILE)):
            os.remove(tmp)
        resume = resume and find_resumable_checkpoint(work_dir)[0] is not None
        info: Dict[str, Any] = dict(work_dir=work_dir, log=log_path)
        if self._stopping:
            raise TrialInterrupted(f'not started: {self._stopping}', retry_now=False, **info)
        gpus = self._slots.get()
        try:
            argv, env = self.command(work_dir, options, resume, gpus,
                                     self.report_module if report else None)
            if report:
                env[REPORT_ENV] = json.dumps(dict(report, metric=self.metric))
            with open(log_path, 'a') as log:
                log.write(f'# {time.strftime("%Y-%m-%d %H:%M:%S")} '
                          f'{"resumed" if resume else "started"}: {shlex.join(argv)}\n')
                log.flush()
                proc = popen_dying_with_parent(argv, stdout=log, stderr=subprocess.STDOUT,
                                               env=env)
                with self._procs_lock:
                    self._procs[proc.pid] = proc
                    stopping = self._stopping
                if stopping:  # stop() ran between our check and the start
                    proc.terminate()
                try:
                    rc = proc.wait()
                except BaseException:
                    proc.terminate()
                    proc.wait()
                    raise
                finally:
                    with self._procs_lock:
                        self._procs.pop(proc.pid, None)
        finally:
            self._slots.put(gpus)
        pruned = read_pruned(work_dir) if rc != 0 and report else None
        if pruned is not None:  # stopped by its tuner: a result, neither a kill nor a failure
            info.update(returncode=rc, metric_name=pruned['metric_name'])
            raise TrialPruned(pruned['budget'], pruned['metric'], pruned['step'], **info)
        if rc != 0:
            kind, reason, more = classify_exit(rc, attempt_log(log_path), work_dir)
            info.update(more)
            if self._stopping and (kind == 'interrupted' or rc < 0):
                raise TrialInterrupted(f'stopped: {self._stopping}', retry_now=False, **info)
            if kind == 'interrupted':
                raise TrialInterrupted(reason, **info)
            raise TrialFailed(reason, **info)
        diverged = training_divergence(work_dir)
        if diverged:
            raise TrialFailed(f'diverged: {diverged}', **info)
        value, name = read_metric(work_dir, self.metric)  # SweepConfigError if not logged
        info['metric_name'] = name
        if not math.isfinite(value):
            raise TrialFailed(f'{name} is {value}', **info)
        return TrialOutcome(value, info)

    def stop(self, why: str) -> None:
        """Stop the sweep's trainings: SIGTERM to every running trial (their
        :meth:`run` raises :class:`TrialInterrupted` with ``retry_now=False``)
        and no new one starts."""
        with self._procs_lock:
            self._stopping = why
            procs = list(self._procs.values())
        for proc in procs:
            try:
                proc.terminate()
            except ProcessLookupError:
                pass
