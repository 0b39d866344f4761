"""Model-zoo coverage of FixNorm: convert stock upstream configs with
``FixNormModel(final_layer='auto')`` and train each a few iterations on
synthetic data on the CPU, checking that the fixed set's norm stays at its
reference (``fixnorm_mm/zoo.py``)::

    python tools/zoo_check.py                      # ZOO and ZOO_TRANSFORMERS
    python tools/zoo_check.py --only transformers  # each transformer with FixNorm and Hyperball
    python tools/zoo_check.py mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py
    python tools/zoo_check.py --method hyperball mmpretrain::deit/deit-tiny_4xb256_in1k.py
    python tools/zoo_check.py --update-doc docs/zoo.md --json zoo.json

``--update-doc`` rewrites the tables between the ``<!-- zoo-table -->`` and
``<!-- zoo-transformers -->`` markers of the given markdown file.
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
    p.add_argument('--only', choices=('main', 'transformers'),
                   help='only the ZOO list (main) or ZOO_TRANSFORMERS (default: both)')
    p.add_argument('--method', choices=('fixnorm', 'hyperball'), default=None,
                   help='for configs named on the command line (default: fixnorm)')
    p.add_argument('--update-doc', metavar='MD', help='rewrite the tables in this file')
    p.add_argument('--json', metavar='FILE', help='write every row as JSON')
    p.add_argument('--verbose', action='store_true', help='keep the conversion logs')
    return p.parse_args()


def main():
    args = parse_args()
    if not args.verbose:
        MMLogger.get_current_instance().setLevel('ERROR')
    common = dict(iters=args.iters, lr=args.lr, batch_size=args.batch_size,
                  image_size=args.image_size)
    main_rows, transformer_rows = [], []
    if args.configs:
        main_rows = zoo.check_configs(args.configs, method=args.method, **common)
    else:
        if args.only != 'transformers':
            main_rows = zoo.check_configs(zoo.ZOO, **common)
        if args.only != 'main':
            transformer_rows = zoo.check_configs(zoo.ZOO_TRANSFORMERS, **common)
    tables = []
    if main_rows:
        tables.append((zoo.format_markdown(main_rows), zoo.TABLE_BEGIN, zoo.TABLE_END))
    if transformer_rows:
        tables.append((zoo.format_transformers_markdown(transformer_rows),
                       zoo.TRANSFORMERS_BEGIN, zoo.TRANSFORMERS_END))
    for table, begin, end in tables:
        print(table + '\n')
        if args.update_doc:
            zoo.update_doc(args.update_doc, table, begin, end)
    rows = main_rows + transformer_rows
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(zoo.to_json(rows), f, indent=1)
    return 0 if all(r.status != 'failed' for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
