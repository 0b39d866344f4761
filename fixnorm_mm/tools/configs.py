"""The provided configs of the installed package, for tools that do not import it.

mmengine 0.10.7 resolves ``_base_ = 'pkg::path'`` only for the packages in
its table ``mmengine.config.utils.MODULE2PACKAGE``; ``import fixnorm_mm`` adds
``fixnorm_mm`` there, so the scope works in every process that imported the
plugin first (this package's tools, ``mim train fixnorm_mm``), and nowhere
else (upstream ``tools/train.py``, ``mim train mmdet``, a bare
``Config.fromfile``). There a config inherits a provided one by its file path,
which this command prints::

    fixnorm-config --list                                     # every config, the paper's numbers
    fixnorm-config coco/retinanet_r50_fpn_fixnorm_90k_coco.py  # the lines to paste into yours
    fixnorm-config --path coco/retinanet_r50_fpn_fixnorm_90k_coco.py  # its absolute path
    fixnorm-config                                            # the configs folder

The lines to paste are the ``_base_`` line by the installed path (every tool
loads it), the ``custom_imports`` line of the config (what it registers from;
a config of yours that sets its own keeps these), and, as comments, the
portable ``{{$FIXNORM_MM_CONFIGS:<this configs folder>}}`` form and the
``fixnorm_mm::`` form that only this package's tools load.

(``python -m fixnorm_mm.tools.configs`` is the same command.)
"""
import argparse
import difflib
import glob
import os.path as osp
import re
import sys
import warnings
from typing import Dict, List, Optional

from ..registry import CONFIG_ROOT, MIM_DIR

PACKAGE = 'fixnorm_mm'


def provided_configs() -> List[str]:
    """Every provided config, relative to :data:`CONFIG_ROOT` (bases excluded)."""
    found = glob.glob(osp.join(CONFIG_ROOT, '**', '*.py'), recursive=True)
    rel = [osp.relpath(p, CONFIG_ROOT) for p in found]
    return sorted(r for r in rel if '_base_' not in r.split(osp.sep))


def config_path(name: str) -> str:
    """Absolute path of a provided config: ``coco/x.py`` or ``fixnorm_mm::coco/x.py``."""
    scope, sep, rel = name.partition('::')
    if not sep:
        rel = name
    elif scope != PACKAGE:
        raise ValueError(f'{name!r} is not a {PACKAGE} config (scope {scope!r})')
    path = osp.join(CONFIG_ROOT, rel)
    if not osp.isfile(path):
        close = difflib.get_close_matches(rel, provided_configs(), n=3, cutoff=0.5)
        hint = f'; did you mean {close}?' if close else '; see `fixnorm-config --list`'
        raise FileNotFoundError(f'no provided config {rel!r} under {CONFIG_ROOT}{hint}')
    return path


def resolve_config(config: str) -> str:
    """A tool's config argument as a file path: paths pass unchanged,
    ``fixnorm_mm::<path>`` is a provided config, and ``<pkg>::<path>`` another
    package's config as mmengine finds it (``mmdet::``, ``mmpretrain::``...)."""
    if '::' not in config or osp.exists(config):
        return config
    if config.partition('::')[0] == PACKAGE:
        return config_path(config)
    from mmengine.config import Config
    return Config._get_cfg_path(config, '')[0]


def paste_lines(name: str) -> List[str]:
    """What a config of yours needs to inherit the provided config ``name``,
    with every tool: valid config lines, the alternatives as comments."""
    from mmengine.config import Config
    path = config_path(name)
    rel = osp.relpath(path, CONFIG_ROOT).replace(osp.sep, '/')
    with warnings.catch_warnings():  # mmengine's pkg_resources deprecation: noise here
        warnings.simplefilter('ignore', UserWarning)
        imports = Config.fromfile(path, import_custom_modules=False).get('custom_imports')
    lines = [f'# inherit {PACKAGE}::{rel}: paste these lines into your config',
             f'_base_ = {path!r}  # every tool loads it, upstream ones too']
    if imports:
        modules = list(imports['imports']) if isinstance(imports, dict) else list(imports)
        lines.append(f'custom_imports = dict(imports={modules!r}, allow_failed_imports=False)')
    if not re.search(r'\s', CONFIG_ROOT):  # mmengine's {{$VAR:default}} takes no spaces
        # mmengine substitutes it in comments too: without a default, an unset
        # variable would stop the config from loading
        lines += ['# or, portable between installations: $FIXNORM_MM_CONFIGS if set '
                  '(`export FIXNORM_MM_CONFIGS=$(fixnorm-config)`), else this one:',
                  f"# _base_ = '{{{{$FIXNORM_MM_CONFIGS:{CONFIG_ROOT}}}}}/{rel}'"]
    lines += [f"# or, with {PACKAGE}'s own tools only (fixnorm-train, mim train {PACKAGE}; "
              "mmdet's, mmpretrain's and mmseg's tools/train.py refuse it):",
              f"# _base_ = '{PACKAGE}::{rel}'"]
    return lines


def model_index(mim_dir: str = MIM_DIR) -> List[Dict]:
    """The models of ``model-index.yml`` (OpenMMLab format), each with its
    collection's fields under ``'Collection'``."""
    from mmengine.fileio import load
    index = load(osp.join(mim_dir, 'model-index.yml'))
    models = []
    for meta in index.get('Import') or []:
        data = load(osp.join(mim_dir, meta))
        collections = {c['Name']: c for c in data.get('Collections') or []}
        for model in data.get('Models') or []:
            models.append(dict(model, Collection=collections.get(model.get('In Collection'), {}),
                               Metafile=meta))
    return models


def _metric(model: Dict) -> str:
    out = []
    for result in model.get('Results') or []:
        out += [f'{k} {v}' for k, v in (result.get('Metrics') or {}).items()]
    return ', '.join(out) or '-'


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog='fixnorm-config',
                                description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('config', nargs='?',
                   help='a provided config (coco/x.py or fixnorm_mm::coco/x.py): print the '
                        'lines that inherit it; without one: the configs folder')
    p.add_argument('--path', action='store_true',
                   help="print only the config's absolute path")
    p.add_argument('--list', action='store_true',
                   help='list the provided configs with the paper\'s metric, lr and alpha')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.list:
        listed = {m['Config'].partition('/')[2]: m for m in model_index()}
        for rel in provided_configs():
            m = listed.get(rel)
            if m is None:
                print(rel)
                continue
            meta = m.get('Metadata') or {}
            hp = ', '.join(f'{k} {meta[k]}' for k in ('lr', 'alpha', 'weight decay') if k in meta)
            print(f'{rel}  [{_metric(m)}; {hp}]')
        return 0
    try:
        if not args.config:
            print(CONFIG_ROOT)
        elif args.path:
            print(config_path(args.config))
        else:
            print('\n'.join(paste_lines(args.config)))
    except (FileNotFoundError, ValueError) as err:
        print(f'fixnorm-config: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
