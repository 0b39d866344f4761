"""A stand-in for ``python -m fixnorm_mm.tools.train`` that sleeps instead of
training: the cheap synthetic trainer of ``benchmarks/sweep_wallclock.py`` and
of the sweep tests (tests/test_sweep_faults.py).

It takes the train tool's command line (``CONFIG --work-dir DIR
[--cfg-options k=v ...] [--resume]``), imports neither torch nor fixnorm_mm
(it starts in a fraction of a second) and, like a training, takes
``budget x seconds`` of wall time counted from its own process start, writes
checkpoints (``iter_<n>.pth``, ``last_checkpoint``), continues from them on
``--resume``, and logs a metric where mmengine does
(``<work_dir>/<timestamp>/vis_data/scalars.json``). The sweep runs it with
``TrainingLauncher(train_module='synthetic_train')`` and ``benchmarks/`` on
``PYTHONPATH``.

Its behaviour is one JSON object in the environment variable ``SYNTH_TRAIN``:

* ``seconds`` (1.0): wall time of a full-budget training, T_max;
* ``max_iters`` (320): the config's ``train_cfg.max_iters`` (budget =
  the trial's ``train_cfg.max_iters`` option / this; 1 without the option);
* ``lr_key``, ``alpha_key``: the options that carry lr and alpha;
* ``metric`` ('accuracy/top1'): the name it logs the metric under;
* ``lr_short``, ``lr_long``, ``alpha_best``: the metric is
  ``70 + 10 budget - (lr - peak)^2 - 0.1 log2(alpha / alpha_best)^2`` with
  ``peak = lr_short`` below the full budget, ``lr_long`` at it (the two priors
  of the paper's Sec. 2.4; the same objective as tests/test_tuning.py);
* ``kill``: ``[[lr, alpha, budget, at], ...]``: that trial SIGKILLs itself
  after ``at`` of its time, once (a file ``synthetic_killed`` marks it),
  after saving a checkpoint at half of that;
* ``fail_above``: trials with lr above this raise ``FloatingPointError``
  after half their time (a diverging run: a deterministic failure).
"""
import ast
import json
import os
import os.path as osp
import signal
import sys
import time
import zipfile


def _process_age() -> float:
    """Seconds since this process was forked (Linux), so that its interpreter
    start counts in the trial's time as a real training's does; 0 elsewhere."""
    try:
        with open('/proc/self/stat') as f:
            start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
        with open('/proc/uptime') as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf('SC_CLK_TCK'))
    except (OSError, ValueError, IndexError):
        return 0.0


def _parse(argv):
    work_dir, options, resume, i = None, {}, False, 1
    while i < len(argv):
        a = argv[i]
        if a == '--work-dir':
            work_dir, i = argv[i + 1], i + 2
        elif a.startswith('--work-dir='):
            work_dir, i = a.split('=', 1)[1], i + 1
        elif a == '--resume':
            resume, i = True, i + 1
        elif a == '--cfg-options':
            i += 1
            while i < len(argv) and not argv[i].startswith('--'):
                k, v = argv[i].split('=', 1)
                try:
                    options[k] = ast.literal_eval(v)
                except (ValueError, SyntaxError):
                    options[k] = v
                i += 1
        else:
            i += 1
    return work_dir, options, resume


def _save(work_dir: str, step: int) -> None:
    path = osp.join(work_dir, f'iter_{step}.pth')
    with zipfile.ZipFile(path, 'w') as z:  # what checkpoint_problem() accepts
        z.writestr('archive/data.pkl', b'')
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(path)


def _resumed_step(work_dir: str) -> int:
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            return int(f.read().strip().rsplit('_', 1)[1][:-len('.pth')])
    except (OSError, ValueError, IndexError):
        return 0


def main(argv=None) -> None:
    import math
    age = _process_age()
    spec = json.loads(os.environ.get('SYNTH_TRAIN', '{}'))
    argv = sys.argv if argv is None else argv
    work_dir, options, resume = _parse(argv)
    full = int(spec.get('max_iters', 320))
    iters = int(options.get('train_cfg.max_iters', full))
    budget = iters / full
    lr = float(options[spec.get('lr_key', 'optim_wrapper.optimizer.lr')])
    alpha = float(options.get(spec.get('alpha_key', 'model.alpha'), 1.0))
    duration = budget * float(spec.get('seconds', 1.0))
    start = _resumed_step(work_dir) if resume else 0
    run_dir = osp.join(work_dir, time.strftime('%Y%m%d_%H%M%S') + f'_{os.getpid()}',
                       'vis_data')
    os.makedirs(run_dir, exist_ok=True)
    print(f'synthetic training lr={lr} alpha={alpha} budget={budget:g} '
          f'from iteration {start} of {iters}', flush=True)

    def sleep_until(fraction):  # of the whole training, from this process's start
        left = duration * (fraction - start / iters) - (age + time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)

    t0 = time.perf_counter()
    for k_lr, k_alpha, k_budget, at in spec.get('kill', []):
        mark = osp.join(work_dir, 'synthetic_killed')
        if abs(k_lr - lr) < 1e-9 and abs(k_alpha - alpha) < 1e-9 \
                and abs(k_budget - budget) < 1e-9 and not osp.exists(mark) and start / iters < at:
            step = max(1, int(iters * at / 2))
            sleep_until(step / iters)
            _save(work_dir, step)
            sleep_until(at)
            with open(mark, 'w') as f:
                f.write('killed\n')
            os.kill(os.getpid(), signal.SIGKILL)
    if spec.get('fail_above') is not None and lr > spec['fail_above']:
        sleep_until(0.5)
        raise FloatingPointError(f'the norm of the fixed set is not finite (lr={lr})')
    sleep_until(1.0)
    _save(work_dir, iters)
    peak = spec.get('lr_short', 2.6) if budget < 1 else spec.get('lr_long', 1.4)
    metric = (70 + 10 * budget - (lr - peak) ** 2
              - 0.1 * math.log2(alpha / spec.get('alpha_best', 4.0)) ** 2)
    with open(osp.join(run_dir, 'scalars.json'), 'w') as f:
        f.write(json.dumps(dict(lr=lr, loss=1.0, step=iters)) + '\n')
        f.write(json.dumps({spec.get('metric', 'accuracy/top1'): metric, 'step': iters}) + '\n')


if __name__ == '__main__':
    main()
