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


def mim_files():
    """`fixnorm_mm/.mim/configs` (a link to `configs/` in the repository) ships
    in the wheel, so that `_base_ = 'fixnorm_mm::...'` resolves when installed."""
    root = osp.join(HERE, 'fixnorm_mm')
    out = []
    for dirpath, _, files in os.walk(osp.join(root, '.mim'), followlinks=True):
        out += [osp.relpath(osp.join(dirpath, f), root) for f in files if f.endswith(('.py', '.yml'))]
    return out


setup(
    # The distribution is named apart from the import name `fixnorm_mm`: mmengine
    # then finds an editable install's configs through the module, not the dist-info.
    name='openmmlab-fixnorm',
    version=version(),
    description='FixNorm (weight-decay-free norm fixing, FixNorm-FC/Conv, '
                'FixNorm-tune) as an OpenMMLab plugin',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['fixnorm_mm', 'fixnorm_mm.*']),
    package_data={'fixnorm_mm': mim_files()},
    python_requires='>=3.8',
    install_requires=['mmengine>=0.10.0'],
    license='Apache-2.0',
    zip_safe=False,
)
