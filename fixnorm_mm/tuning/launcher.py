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
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..tools.dist import srun_command, torchrun_command
from .schedule import DEFAULT_WARMUP, check_warmup_rule, scale_schedule
from .trial import TrialFailed, TrialOutcome

#: Metrics that OpenMMLab tasks log at evaluation, by preference (mmpretrain,
#: mmdet, mmseg); ``--metric`` names any other.
KNOWN_METRICS = ('accuracy/top1', 'coco/bbox_mAP', 'mIoU')
#: The module every trial runs (``python -m``, same interpreter and environment
#: as the sweep, so the same ``fixnorm_mm``): the package's training tool.
TRAIN_MODULE = 'fixnorm_mm.tools.train'


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
    that the evaluation logged.
    """
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    seen = set()
    for path in reversed(runs):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for rec in reversed(records):
            if 'loss' in rec or 'lr' in rec:
                continue  # a training record
            seen.update(rec)
            names = [metric] if metric else [k for k in KNOWN_METRICS if k in rec]
            if names and names[0] in rec:
                return float(rec[names[0]]), names[0]
    want = repr(metric) if metric else f'any of {KNOWN_METRICS}'
    raise TrialFailed(f'the run logged no evaluation metric {want} in {work_dir}/*/vis_data/'
                      f'scalars.json (evaluation keys seen: {sorted(seen) or "none"}); '
                      'pass --metric NAME')


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


def error_summary(log_path: str, max_lines: int = 400) -> str:
    """The exception a failed run ended with (the last ``SomethingError: ...``
    line of its log), or its last line."""
    try:
        with open(log_path, errors='replace') as f:
            lines = [line.rstrip() for line in f.readlines()[-max_lines:] if line.strip()]
    except OSError:
        return 'no log'
    for line in reversed(lines):
        if re.match(r'^[\w.]*(Error|Exception|Interrupt)\b', line):
            return line[:500]
    return lines[-1][:500] if lines else 'empty log'


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('', 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """The child gets SIGTERM when the sweep dies (even of SIGKILL), so a killed
    sweep leaves no orphan training writing into a trial's work_dir."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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
    """

    def __init__(self, config: str, metric: Optional[str] = None,
                 cfg_options: Optional[Dict[str, Any]] = None, launcher: str = 'none',
                 gpus_per_trial: Optional[int] = None, procs_per_trial: int = 1,
                 parallel: Optional[int] = None, partition: Optional[str] = None,
                 gpus_per_node: int = 8, cpus_per_task: int = 5, srun_args: str = '',
                 python: str = sys.executable, train_module: str = TRAIN_MODULE,
                 warmup: str = DEFAULT_WARMUP) -> None:
        from mmengine.config import Config
        if launcher not in ('none', 'slurm'):
            raise ValueError(f"launcher must be 'none' or 'slurm', got {launcher!r}")
        self.warmup = check_warmup_rule(warmup)
        self.config = osp.abspath(config)
        self.cfg = Config.fromfile(self.config)
        self.cfg_options = dict(cfg_options or {})
        if self.cfg_options:
            self.cfg.merge_from_dict(self.cfg_options)
        self.metric, self.launcher, self.python = metric, launcher, python
        self.train_module = train_module
        self.partition, self.gpus_per_node = partition, gpus_per_node
        self.cpus_per_task, self.srun_args = cpus_per_task, srun_args
        if launcher == 'slurm' and not partition:
            raise ValueError('--launcher slurm needs --partition')
        gpus = _visible_gpus() if launcher == 'none' else []
        if gpus_per_trial is None:
            gpus_per_trial = 1 if (gpus or launcher == 'slurm') else 0
        self.gpus_per_trial, self.procs_per_trial = int(gpus_per_trial), int(procs_per_trial)
        if launcher == 'none' and self.gpus_per_trial > 0:
            if len(gpus) < self.gpus_per_trial:
                raise ValueError(f'--gpus-per-trial {self.gpus_per_trial}, but this machine '
                                 f'shows {len(gpus)} GPU(s) (CUDA_VISIBLE_DEVICES)')
            n = len(gpus) // self.gpus_per_trial
            slots = [gpus[i * self.gpus_per_trial:(i + 1) * self.gpus_per_trial]
                     for i in range(n)]
            self.parallel = min(parallel or n, n)
        else:
            self.parallel = max(1, parallel or 1)
            slots = [None] * self.parallel
        self._slots: 'queue.Queue' = queue.Queue()
        for s in slots[:self.parallel]:
            self._slots.put(s)

    # ---------------------------------------------------------------- options
    def schedule_options(self, budget: float) -> Dict[str, Any]:
        """The shortened schedule of a trial at ``budget`` x T_max (its warm-up
        as ``self.warmup`` says: :func:`~fixnorm_mm.tuning.schedule.scale_schedule`)."""
        return scale_schedule(self.cfg, budget, warmup=self.warmup)

    def key(self, leaf: str, given: Optional[str] = None) -> str:
        return given or find_key(self.cfg, leaf)

    # ---------------------------------------------------------------- command
    def command(self, work_dir: str, options: Dict[str, Any], resume: bool,
                gpus: Optional[Sequence[str]]) -> Tuple[List[str], Dict[str, str]]:
        """argv and environment of one trial."""
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
                self.train_module,
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
            argv = torchrun_command(self.train_module,
                                    script_args + ['--launcher', 'pytorch'] + args, nproc,
                                    port=_free_port(), python=self.python)
        else:
            argv = [self.python, '-m', self.train_module] + script_args + args
        return argv, env

    # -------------------------------------------------------------------- run
    def run(self, work_dir: str, options: Dict[str, Any], resume: bool = False) -> TrialOutcome:
        """Train once; the metric, or :class:`TrialFailed` with the log's error.

        ``resume``: continue from the work_dir's last checkpoint if there is one
        (a trial whose worker died).
        """
        work_dir = osp.abspath(work_dir)
        os.makedirs(work_dir, exist_ok=True)
        log_path = osp.join(work_dir, 'trial.log')
        resume = resume and osp.exists(osp.join(work_dir, 'last_checkpoint'))
        info = dict(work_dir=work_dir, log=log_path)
        gpus = self._slots.get()
        try:
            argv, env = self.command(work_dir, options, resume, gpus)
            with open(log_path, 'a') as log:
                log.write(f'# {time.strftime("%Y-%m-%d %H:%M:%S")} '
                          f'{"resumed" if resume else "started"}: {shlex.join(argv)}\n')
                log.flush()
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_die_with_parent)
                try:
                    rc = proc.wait()
                except BaseException:
                    proc.terminate()
                    proc.wait()
                    raise
        finally:
            self._slots.put(gpus)
        if rc != 0:
            raise TrialFailed(f'exit code {rc}: {error_summary(log_path)}', returncode=rc, **info)
        diverged = training_divergence(work_dir)
        if diverged:
            raise TrialFailed(f'diverged: {diverged}', **info)
        try:
            value, name = read_metric(work_dir, self.metric)
        except TrialFailed as err:
            raise TrialFailed(err.reason, **info) from None
        info['metric_name'] = name
        if not math.isfinite(value):
            raise TrialFailed(f'{name} is {value}', **info)
        return TrialOutcome(value, info)
