"""Draw the scalars of logged runs as TensorBoard shows them, one panel a tag
(default: every ``fixnorm/*`` tag that MCBRHook logged)::

    python tools/plot_scalars.py WORK_DIR [WORK_DIR ...] [--labels A B]
        [--tags accuracy fixnorm/mcbr fixnorm/g ...] [--smoothing 0.6] --out fig.png

Reads TensorBoard event files or, without them, ``vis_data/scalars.json``
(:mod:`fixnorm_mm.monitoring`). docs/monitoring.md.
"""
import argparse
import os.path as osp

from fixnorm_mm.monitoring import plot_scalars, read_scalars


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('runs', nargs='+', help='work dirs (the newest run in each is read)')
    p.add_argument('--labels', nargs='+', help='one label per run (default: the dir name)')
    p.add_argument('--tags', nargs='+', help='tags to plot (default: every fixnorm/* tag)')
    p.add_argument('--log-tags', nargs='+', default=[], help='tags drawn on a log scale')
    p.add_argument('--smoothing', type=float, default=0.6,
                   help="TensorBoard's smoothing weight in [0, 1) (0: raw values only)")
    p.add_argument('--out', required=True, help='PNG to write')
    args = p.parse_args(argv)
    labels = args.labels or [osp.basename(osp.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f'--labels: {len(labels)} labels for {len(args.runs)} runs')
    if not 0 <= args.smoothing < 1:
        p.error(f'--smoothing must be in [0, 1), got {args.smoothing}')
    runs = {lab: read_scalars(r) for lab, r in zip(labels, args.runs)}
    print(plot_scalars(runs, args.out, args.tags, smoothing=args.smoothing,
                       log_tags=args.log_tags))


if __name__ == '__main__':
    main()
