"""Evaluate a checkpoint of a fixnorm_mm (or any OpenMMLab) config.

    fixnorm-test CONFIG CHECKPOINT [--work-dir DIR]
    fixnorm-dist-test CONFIG CHECKPOINT NPROC

Like :mod:`fixnorm_mm.tools.train` it imports the plugin (CONFIG may be
``fixnorm_mm::<path>``) and runs on CPU-only machines under torchrun/Slurm
with gloo (:func:`fixnorm_mm.engine.launch.setup_launch`). Also
``python -m fixnorm_mm.tools.test``, ``tools/test.py`` and, for
``mim test fixnorm_mm``, ``.mim/tools/test.py``.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import fixnorm_mm  # noqa: F401  (registers the plugin's components)
from fixnorm_mm.engine.launch import setup_launch
from fixnorm_mm.tools.configs import resolve_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path, or fixnorm_mm::<path>')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save evaluation results')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    config = resolve_config(args.config)
    cfg = Config.fromfile(config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    cfg.load_from = args.checkpoint
    setup_launch(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.test()


if __name__ == '__main__':
    main()
