"""fixnorm_mm: FixNorm for OpenMMLab (mmengine, mmpretrain, mmdet, mmseg)."""
import os
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def version():
    scope = {}
    with open(osp.join(HERE, 'fixnorm_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


#: The repository's tools that ship in `.mim/tools`: what `mim train fixnorm_mm` /
#: `mim test fixnorm_mm` run (train.py, test.py), and the rest of the OpenMMLab
#: set; all are thin wrappers over `fixnorm_mm.tools`.
MIM_TOOLS = ('train.py', 'test.py', 'dist_train.sh', 'dist_test.sh', 'slurm_train.sh',
             'fixnorm_tune.py', 'fold_fixnorm.py', 'compare_methods.py')


def mim_files():
    """`fixnorm_mm/.mim`: `configs/` and `tools/` (links to the repository's folders),
    the configs' metafiles and `model-index.yml`. In the wheel, `_base_ =
    'fixnorm_mm::...'` resolves to these configs, and mim finds the tools."""
    root = osp.join(HERE, 'fixnorm_mm')
    out = ['.mim/model-index.yml'] + [f'.mim/tools/{t}' for t in MIM_TOOLS]
    for dirpath, _, files in os.walk(osp.join(root, '.mim', 'configs'), followlinks=True):
        out += [osp.relpath(osp.join(dirpath, f), root)
                for f in files if f.endswith(('.py', '.yml'))]
    return out


#: Installed commands: module:function (docs: fixnorm_mm/tools/__init__.py).
CONSOLE_SCRIPTS = [
    'fixnorm-train = fixnorm_mm.tools.train:main',
    'fixnorm-test = fixnorm_mm.tools.test:main',
    'fixnorm-dist-train = fixnorm_mm.tools.dist:dist_train_main',
    'fixnorm-dist-test = fixnorm_mm.tools.dist:dist_test_main',
    'fixnorm-slurm-train = fixnorm_mm.tools.dist:slurm_train_main',
    'fixnorm-tune = fixnorm_mm.tools.tune:main',
    'fixnorm-fold = fixnorm_mm.tools.fold:main',
    'fixnorm-compare = fixnorm_mm.tools.compare_methods:main',
    'fixnorm-config = fixnorm_mm.tools.configs:main',
]


setup(
    # The distribution has the import name, as OpenMMLab packages do: mim finds an
    # installed package by its distribution (`mim train fixnorm_mm CONFIG`).
    # mmengine finds `fixnorm_mm::` configs by import, not through the distribution
    # (see MODULE2PACKAGE in fixnorm_mm/__init__.py), so editable installs work too.
    name='fixnorm_mm',
    version=version(),
    description='FixNorm (weight-decay-free norm fixing, FixNorm-FC/Conv, '
                'FixNorm-tune) as an OpenMMLab plugin',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['fixnorm_mm', 'fixnorm_mm.*']),
    package_data={'fixnorm_mm': mim_files()},
    entry_points={'console_scripts': CONSOLE_SCRIPTS},
    python_requires='>=3.8',
    install_requires=['mmengine>=0.10.0'],
    license='Apache-2.0',
    zip_safe=False,
)
