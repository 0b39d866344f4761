"""Train a fixnorm_mm (or any OpenMMLab) config with mmengine's Runner.

The OpenMMLab tools/train.py, with the plugin imported so that every config
can name its components and inherit ``fixnorm_mm::`` configs, and a CPU
(gloo) path for torchrun and Slurm
(:func:`fixnorm_mm.engine.launch.setup_launch`; with a GPU nothing changes)::

    fixnorm-train CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
    fixnorm-dist-train CONFIG NPROC [--cfg-options ...]

CONFIG is a path or ``fixnorm_mm::<path>`` (a provided config). The same
tool is ``python -m fixnorm_mm.tools.train``, ``tools/train.py`` in the
repository and ``.mim/tools/train.py`` in the installed package (what
``mim train fixnorm_mm CONFIG`` runs).
"""
import argparse

from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

import fixnorm_mm  # noqa: F401  (registers the plugin, allows safe resume)
from fixnorm_mm.engine.checkpoint_hook import check_checkpoint_file, find_resumable_checkpoint
from fixnorm_mm.norm_control.methods import (apply_method, available_methods, check_method_name,
                                             enable_amp)
from fixnorm_mm.tools.common import (add_runner_args, build_runner, parse_runner_args,
                                     set_work_dir)
from fixnorm_mm.tools.configs import resolve_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path, or fixnorm_mm::<path>')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or the latest one '
                             'in work_dir when no path is given')
    parser.add_argument('--amp', action='store_true', help='mixed precision training')
    parser.add_argument('--method',
                        help='train with this norm-control method instead of the config\'s: '
                             f'a registered method ({", ".join(available_methods())}, or one of '
                             'your own) or a fragment file; --cfg-options still apply after it')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual batch size (auto_scale_lr)')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def build_cfg(args) -> Config:
    config = resolve_config(args.config)
    cfg = Config.fromfile(config)
    cfg.launcher = args.launcher
    if args.method is not None:
        cfg = apply_method(cfg, check_method_name(args.method))
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    set_work_dir(cfg, args.work_dir, config)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs `auto_scale_lr=dict(enable=..., '
                             'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    use_atomic_checkpoints(cfg)
    if args.resume == 'auto':
        # the newest complete checkpoint, even if a kill interrupted the last save
        cfg.resume = True
        cfg.load_from, why = find_resumable_checkpoint(cfg.work_dir)
        print_log(f'--resume: {why}', logger='current')
    elif args.resume is not None:
        check_checkpoint_file(args.resume, '--resume')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def use_atomic_checkpoints(cfg: Config) -> None:
    """mmengine's CheckpointHook -> AtomicCheckpointHook (same arguments):
    a kill during a save leaves the previous checkpoint resumable."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is not None and hook.get('type') in ('CheckpointHook', CheckpointHook):
        hook['type'] = 'AtomicCheckpointHook'


def main(argv=None, hooks=()):
    """Train; ``hooks``: hook objects registered on the Runner besides the
    config's (an ASHA+WD trial's reporter, :mod:`fixnorm_mm.tuning.pruning`)."""
    runner = build_runner(build_cfg(parse_args(argv)))
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()


if __name__ == '__main__':
    main()
