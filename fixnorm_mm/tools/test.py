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

from mmengine.config import Config

import fixnorm_mm  # noqa: F401  (registers the plugin's components)
from fixnorm_mm.tools.common import (add_runner_args, build_runner, parse_runner_args,
                                     set_work_dir)
from fixnorm_mm.tools.configs import resolve_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path, or fixnorm_mm::<path>')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save evaluation results')
    add_runner_args(parser)
    return parse_runner_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    config = resolve_config(args.config)
    cfg = Config.fromfile(config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    set_work_dir(cfg, args.work_dir, config)
    cfg.load_from = args.checkpoint
    build_runner(cfg).test()


if __name__ == '__main__':
    main()
