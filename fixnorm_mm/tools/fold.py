"""Export a trained FixNorm checkpoint as a checkpoint of the plain upstream model.

FixNorm-FC/Conv (Eq. 10, 29) and weight-normalised layers are folded into
ordinary conv/linear weights (``fixnorm_mm/fold.py``); the result loads in the
plain mmpretrain/mmdet/mmseg config, computes the same outputs, and needs no
plugin for deployment::

    fixnorm-fold FIXNORM_CONFIG CHECKPOINT OUT.pth \\
        [--plain-config UPSTREAM_CONFIG] [--input-shape 1 3 224 224]

(also ``python -m fixnorm_mm.tools.fold`` and ``tools/fold_fixnorm.py``; the
configs are paths or ``<pkg>::<path>``, e.g. ``fixnorm_mm::imagenet/...``,
``mmpretrain::resnet/...``).

The folded checkpoint is checked before it is written: the plain config's
model must load it with no missing or unexpected key, and give the FixNorm
model's outputs on a random batch (relative difference <= --tolerance). For a
``FixNormModel`` config (FixNorm for any config) the plain config is derived.
"""
import argparse

from mmengine.config import Config, DictAction

import fixnorm_mm  # noqa: F401  (registers the plugin's components)
from fixnorm_mm.fold import fold_checkpoint
from fixnorm_mm.tools.configs import resolve_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='fixnorm-fold',
                                     description='Fold FixNorm/WN layers into plain weights')
    parser.add_argument('config', help='the FixNorm config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='the trained FixNorm checkpoint')
    parser.add_argument('out', help='where to write the folded checkpoint')
    parser.add_argument('--plain-config', help='the plain upstream config to check against')
    parser.add_argument('--input-shape', type=int, nargs='+',
                        help='N C H W of the random check batch (default 2 C 64 64)')
    parser.add_argument('--tolerance', type=float, default=1e-5,
                        help='largest relative output difference accepted')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides of the FixNorm config, key=value')
    parser.add_argument('--plain-cfg-options', nargs='+', action=DictAction,
                        help='overrides of the plain config, key=value')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(resolve_config(args.config))
    plain = Config.fromfile(resolve_config(args.plain_config)) if args.plain_config else None
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if plain is not None and args.plain_cfg_options:
        plain.merge_from_dict(args.plain_cfg_options)
    report = fold_checkpoint(cfg, args.checkpoint, args.out, plain_config=plain,
                             input_shape=args.input_shape, tolerance=args.tolerance)
    print(f'folded {len(report["folded"])} layer(s): '
          + ', '.join(f'{n} ({t})' for n, t in report['folded'].items()))
    print(f'relative output difference on a random batch: {report["difference"]:.3g}'
          + ('' if report['plain_checked'] else
             ' (against the folded FixNorm model; give --plain-config to check the '
             'upstream config loads it)'))
    print(f'written: {args.out}')


if __name__ == '__main__':
    main()
