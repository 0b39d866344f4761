"""The model-zoo tables of README.md and docs/*.md, generated from the metafiles.

``configs/<task>/metafile.yml`` (OpenMMLab format, imported by
``fixnorm_mm/.mim/model-index.yml``) hold every provided config with the
paper's metric, lr and alpha. Each table in the pages sits between
``<!-- model-zoo:KEY -->`` and ``<!-- /model-zoo:KEY -->`` and is rewritten
from them, so that pages and metafiles cannot disagree::

    python tools/model_zoo.py           # rewrite the tables
    python tools/model_zoo.py --check   # exit 1 if a table is out of date (the test)
"""
import argparse
import glob
import os.path as osp
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAGES = ('README.md', 'docs/*.md')


def number(v) -> str:
    """0.0145 -> '0.0145', 1e-4 -> '1e-4', 8.6e-05 -> '8.6e-5', 0 -> '0'."""
    v = float(v)
    if v == 0:
        return '0'
    if abs(v) < 1e-3:
        mantissa, exp = f'{v:e}'.split('e')
        return f'{mantissa.rstrip("0").rstrip(".")}e{int(exp)}'
    return f'{v:g}'


def metric(model: Dict, decimals: int) -> str:
    values = [v for r in model.get('Results') or [] for v in (r.get('Metrics') or {}).values()]
    return f'{values[0]:.{decimals}f}' if values else '-'


def _meta(key: str, fmt: Callable = str, missing: str = '–') -> Callable:
    def get(model):
        meta = model.get('Metadata') or {}
        return fmt(meta[key]) if key in meta else missing
    return get


def _config(model: Dict) -> str:
    return f'`{osp.basename(model["Config"])}`'


def _reference(model: Dict) -> str:
    meta = model['Metadata']
    dagger = ' †' if meta.get('Reference From Basic Settings') else ''
    return f'{meta["Reference Top 1 Accuracy"]:.2f}{dagger}'


def _train(gpus: int) -> Callable:
    def get(model):
        rel = model['Config'].partition('/')[2]
        return f'`fixnorm-dist-train fixnorm_mm::{rel} {gpus}`'
    return get


Column = Tuple[str, Callable[[Dict], str]]
DENSE = [('lr', _meta('lr', number)), ('wd', _meta('weight decay', number))]
#: key -> (metafile, columns)
TABLES: Dict[str, Tuple[str, List[Column]]] = {
    'coco': ('configs/coco/metafile.yml', [
        ('Table 4 row', _meta('Paper Row')), ('config (`configs/coco/`)', _config), *DENSE,
        ('α', _meta('alpha', repr)), ('paper AP', lambda m: metric(m, 1))]),
    'coco-schedule': ('configs/coco/metafile.yml', [
        ('Table 4 row', _meta('Paper Row')), ('config', _config), *DENSE,
        ('schedule', _meta('Schedule')), ('α', _meta('alpha', repr)),
        ('paper AP', lambda m: metric(m, 1))]),
    'cityscapes': ('configs/cityscapes/metafile.yml', [
        ('Table 3 row', _meta('Paper Row')), ('config (`configs/cityscapes/`)', _config), *DENSE,
        ('α', _meta('alpha', repr)), ('paper mIoU', lambda m: metric(m, 1))]),
    'cityscapes-schedule': ('configs/cityscapes/metafile.yml', [
        ('Table 3 row', _meta('Paper Row')), ('config', _config), *DENSE,
        ('schedule', _meta('Schedule')), ('α', _meta('alpha', repr)),
        ('paper mIoU', lambda m: metric(m, 1))]),
    'imagenet': ('configs/imagenet/metafile.yml', [
        ('config (`configs/imagenet/`)', _config), ('paper row', _meta('Paper Row')),
        ('lr', _meta('lr', number)), ('alpha', _meta('alpha', repr, '-')),
        ('weight decay', _meta('weight decay', number)),
        ('top-1 (paper)', lambda m: metric(m, 2)), ("top-1 (paper's reference)", _reference),
        ('train', _train(16))]),
}
MARKER = re.compile(r'(<!-- model-zoo:([\w-]+) -->\n)(.*?)(<!-- /model-zoo:\2 -->)', re.S)


def load_models(metafile: str, root: str = ROOT) -> List[Dict]:
    with open(osp.join(root, metafile)) as f:
        return yaml.safe_load(f)['Models']


def render(key: str, root: str = ROOT) -> str:
    metafile, columns = TABLES[key]
    lines = ['| ' + ' | '.join(h for h, _ in columns) + ' |',
             '|' + '---|' * len(columns)]
    for model in load_models(metafile, root):
        lines.append('| ' + ' | '.join(get(model) for _, get in columns) + ' |')
    return '\n'.join(lines) + '\n'


def update(text: str, root: str = ROOT) -> str:
    def repl(m):
        if m.group(2) not in TABLES:
            raise KeyError(f'unknown model-zoo table {m.group(2)!r}; known: {sorted(TABLES)}')
        return m.group(1) + render(m.group(2), root) + m.group(4)
    return MARKER.sub(repl, text)


def pages(root: str = ROOT) -> List[str]:
    return sorted(p for pattern in PAGES for p in glob.glob(osp.join(root, pattern)))


def stale_pages(root: str = ROOT) -> List[str]:
    """Pages whose tables differ from the metafiles."""
    out = []
    for path in pages(root):
        with open(path, encoding='utf-8') as f:
            text = f.read()
        if update(text, root) != text:
            out.append(osp.relpath(path, root))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--check', action='store_true', help='only report out-of-date pages')
    args = p.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for page in stale:
            print(f'{page}: model-zoo table out of date; run python tools/model_zoo.py')
        return 1 if stale else 0
    for path in pages():
        with open(path, encoding='utf-8') as f:
            text = f.read()
        new = update(text)
        if new != text:
            with open(path, 'w', encoding='utf-8') as f:
                f.write(new)
            print(f'updated {osp.relpath(path, ROOT)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
