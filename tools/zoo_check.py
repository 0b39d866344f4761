"""Model-zoo coverage of FixNorm: convert stock upstream configs with
``FixNormModel(final_layer='auto')`` and train each a few iterations on
synthetic data on the CPU, checking that the fixed set's norm stays at its
reference (``fixnorm_mm/zoo.py``)::

    python tools/zoo_check.py                      # the whole ZOO list
    python tools/zoo_check.py mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py
    python tools/zoo_check.py --update-doc docs/zoo.md --json zoo.json

``--update-doc`` rewrites the table between the ``<!-- zoo-table -->``
markers of the given markdown file.
"""
import argparse
import json
import sys

from mmengine.logging import MMLogger

import fixnorm_mm  # noqa: F401  (registers the plugin)
from fixnorm_mm import zoo


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('configs', nargs='*', help='config names (pkg::path or files); '
                   'default: the ZOO list of fixnorm_mm/zoo.py')
    p.add_argument('--iters', type=int, default=3, help='training iterations per config')
    p.add_argument('--lr', type=float, default=1e-3, help='lr of the config\'s optimizer')
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--image-size', type=int, default=None,
                   help='side of the synthetic images (default: 128 detection, 64 otherwise)')
    p.add_argument('--update-doc', metavar='MD', help='rewrite the table in this file')
    p.add_argument('--json', metavar='FILE', help='write every row as JSON')
    p.add_argument('--verbose', action='store_true', help='keep the conversion logs')
    return p.parse_args()


def main():
    args = parse_args()
    if not args.verbose:
        MMLogger.get_current_instance().setLevel('ERROR')
    entries = args.configs or zoo.ZOO
    rows = zoo.check_configs(entries, iters=args.iters, lr=args.lr,
                             batch_size=args.batch_size, image_size=args.image_size)
    table = zoo.format_markdown(rows)
    print(table)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(zoo.to_json(rows), f, indent=1)
    if args.update_doc:
        zoo.update_doc(args.update_doc, table)
    return 0 if all(r.status != 'failed' for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
