"""The installable plugin: the tools as installed commands, the metafiles and
model-zoo tables, inheriting a provided config with upstream tools, and a wheel
that works outside the repository.

The wheel tests build the wheel from a copy of this checkout, install it with
``--no-deps`` into a fresh virtual environment over this one's packages, and
run every command from a temporary folder with no source tree on the path:
train a user config that inherits ``fixnorm_mm::``, a two-trial FixNorm-tune
sweep, fold the checkpoint, ``mim train`` / ``mim test``, and mmdet's own
train script on a user config that inherits a provided FixNorm config by the
route the README documents.
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest
from mmengine.config import Config

from fixnorm_mm.tools import configs as config_tool
from fixnorm_mm.tools.dist import (dist_test_command, dist_train_command,
                                   slurm_train_command)
from fixnorm_mm.tuning.launcher import find_key

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAPER_CANDIDATES = [osp.join(ROOT, '..', 'shared', 'papers', 'fixnorm.txt'),
                    osp.join(ROOT, '..', '..', 'shared', 'papers', 'fixnorm.txt')]
#: tiny toy runs: a few iterations on a few samples
TOY_OPTIONS = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
               'default_hooks.checkpoint.interval=2',
               'train_dataloader.dataset.num_samples=64', 'val_dataloader.dataset.num_samples=64']


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module', autouse=True)
def _cached_metafiles():
    """mmengine parses every metafile of mmpretrain/mmdet/mmseg (thousands) for
    each ``pkg::`` base it resolves; each file is parsed once here."""
    import functools

    import mmengine.config.utils as cfg_utils
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cfg_utils, 'load', functools.lru_cache(maxsize=None)(cfg_utils.load))
        yield


def run(cmd, cwd, env, timeout=300):
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{cmd}\n{proc.stdout[-5000:]}'
    return proc.stdout


def dev_env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    env.update(extra)
    return env


# ------------------------------------------------------------------ the tools
def test_config_tool_finds_provided_configs(capsys, tmp_path):
    rel = 'coco/retinanet_r50_fpn_fixnorm_90k_coco.py'
    path = config_tool.config_path(rel)
    assert osp.samefile(path, osp.join(ROOT, 'configs', rel))
    assert config_tool.config_path('fixnorm_mm::' + rel) == path
    assert config_tool.resolve_config('fixnorm_mm::' + rel) == path
    assert config_tool.resolve_config('my_config.py') == 'my_config.py'
    mmdet = config_tool.resolve_config('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    assert osp.isfile(mmdet) and mmdet.endswith('retinanet_r50_fpn_1x_coco.py')
    with pytest.raises(ValueError, match="'mmdet::x.py' is not a fixnorm_mm config"):
        config_tool.config_path('mmdet::x.py')

    assert config_tool.main(['--path', rel]) == 0
    assert capsys.readouterr().out.strip() == path
    assert config_tool.main([]) == 0
    assert capsys.readouterr().out.strip() == config_tool.CONFIG_ROOT
    # the lines to paste: the path (every tool), the config's custom_imports, and
    # as comments the portable and the fixnorm_mm:: forms
    assert config_tool.main(['fixnorm_mm::' + rel]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f'_base_ = {path!r}  # every tool loads it, upstream ones too' in lines
    assert ("custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.detection'], "
            'allow_failed_imports=False)') in lines
    root = config_tool.CONFIG_ROOT
    assert f"# _base_ = '{{{{$FIXNORM_MM_CONFIGS:{root}}}}}/{rel}'" in lines
    assert f"# _base_ = 'fixnorm_mm::{rel}'" in lines
    assert [line for line in lines if not line.startswith('#')] == lines[1:3]
    assert config_tool.main(['coco/retinanet_r50_fpn_fixnorm_90k.py']) == 2
    err = capsys.readouterr().err
    assert "no provided config 'coco/retinanet_r50_fpn_fixnorm_90k.py'" in err
    assert "did you mean ['coco/retinanet_r50_fpn_fixnorm_90k_coco.py'" in err
    assert config_tool.main(['--list']) == 0
    listing = capsys.readouterr().out
    assert f'{rel}  [box AP 36.9; lr 0.0145, alpha 0.5, weight decay 0.0]' in listing
    assert 'toy/toy_fixnorm.py\n' in listing  # listed, no paper numbers
    assert '_base_' not in listing


def test_distributed_commands_run_the_packages_modules(monkeypatch):
    for k, v in dict(NNODES='2', NODE_RANK='1', MASTER_ADDR='10.1.2.3', PORT='1234',
                     PYTHON='/env/bin/python').items():
        monkeypatch.setenv(k, v)
    torchrun = ['/env/bin/python', '-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1',
                '--master_addr=10.1.2.3', '--nproc_per_node=4', '--master_port=1234', '-m']
    assert dist_train_command(['c.py', '4', '--amp']) == torchrun + [
        'fixnorm_mm.tools.train', 'c.py', '--launcher', 'pytorch', '--amp']
    assert dist_test_command(['c.py', 'k.pth', '4']) == torchrun + [
        'fixnorm_mm.tools.test', 'c.py', 'k.pth', '--launcher', 'pytorch']
    with pytest.raises(SystemExit, match="NPROC_PER_NODE must be an integer, got 'four'"):
        dist_train_command(['c.py', 'four'])
    for k, v in dict(GPUS='4', GPUS_PER_NODE='0', NTASKS_PER_NODE='2', CPUS_PER_TASK='3',
                     SRUN_ARGS='--quotatype=auto -x node7').items():
        monkeypatch.setenv(k, v)
    assert slurm_train_command(['cpu', 'job', 'c.py', 'w', '--amp']) == [
        'srun', '-p', 'cpu', '--job-name=job', '--ntasks=4', '--ntasks-per-node=2',
        '--cpus-per-task=3', '--kill-on-bad-exit=1', '--quotatype=auto', '-x', 'node7',
        '/env/bin/python', '-u', '-m', 'fixnorm_mm.tools.train', 'c.py', '--work-dir=w',
        '--launcher=slurm', '--amp']
    monkeypatch.setenv('GPUS_PER_NODE', '8')
    assert '--gres=gpu:8' in slurm_train_command(['gpu', 'job', 'c.py', 'w'])


# ------------------------------------------------------ metafiles and model zoo
def test_model_index_lists_every_provided_config():
    models = config_tool.model_index()
    listed = sorted(m['Config'] for m in models)
    provided = sorted(f'configs/{p}' for p in config_tool.provided_configs()
                      if not p.startswith('toy/'))
    assert listed == provided and len(listed) == 35
    for m in models:
        assert m['Name'] == osp.splitext(osp.basename(m['Config']))[0]
        assert m['Metadata']['Training Data'] in m['Collection']['Metadata']['Training Data']
        assert m['Collection']['Paper']['Title'].startswith('FixNorm: Dissecting Weight Decay')
        results = m.get('Results')
        if m['Config'].startswith('configs/convert/'):
            assert results is None  # examples: no paper numbers
            continue
        (result,) = results
        assert result['Dataset'] == m['Metadata']['Training Data']
        assert list(result['Metrics']) == [{'ImageNet-1k': 'Top 1 Accuracy', 'COCO': 'box AP',
                                            'Cityscapes': 'mIoU'}[result['Dataset']]]
    # what `mim search fixnorm_mm` reads
    from modelindex.load_model_index import load
    index = load(osp.join(ROOT, 'fixnorm_mm', '.mim', 'model-index.yml'))
    index.build_models_with_collections()
    assert sorted(m.config for m in index.models) == listed


def test_metafile_settings_are_what_the_configs_train_with():
    for m in config_tool.model_index():
        meta = m['Metadata']
        cfg = Config.fromfile(osp.join(ROOT, m['Config']))
        optimizer = cfg.optim_wrapper.optimizer
        where = m['Config']
        assert optimizer.lr == pytest.approx(meta['lr']), where
        assert optimizer.get('weight_decay', 0) == pytest.approx(meta['weight decay']), where
        fixnorm = (cfg.optim_wrapper.get('norm_control') or {}).get('type') == 'FixNorm' \
            or cfg.optim_wrapper.get('type', 'OptimWrapper').startswith('FixNorm')
        assert fixnorm == (meta['Method'] == 'FixNorm'), where
        if 'alpha' in meta:
            key = find_key(cfg, 'alpha')
            value = cfg
            for part in key.split('.'):
                value = value[part]
            assert value == meta['alpha'], where
        else:
            with pytest.raises(ValueError, match='cannot tell which `alpha`'):
                find_key(cfg, 'alpha')
        if 'Epochs' in meta:
            assert cfg.train_cfg.max_epochs == meta['Epochs'], where
        if 'Iterations' in meta:
            assert cfg.train_cfg.max_iters == meta['Iterations'], where
        if 'Batch Size' in meta:
            gpus = int(m['Collection']['Metadata']['Training Resources'].split('x')[0])
            assert cfg.train_dataloader.batch_size * gpus == meta['Batch Size'], where


def _paper_tables(text):
    """Table number -> its rows (lists of cells) in the paper's plain text."""
    tables = {}
    for n in range(1, 6):
        start = text.index(f'Table {n}:')
        rows, seen = [], False
        for line in text[start:].split('\n')[1:]:
            if '\t' in line:
                seen = True
                cells = [c.split('\\pm')[0].strip() for c in line.split('\t')]
                if cells[0] and cells[0] != 'Model':
                    rows.append(cells)
            elif line.strip() and seen:
                break
        tables[n] = rows
    return tables


def _num(cell):
    return float(re.sub(r'[^0-9.e-]', '', cell))


def test_metafile_numbers_are_the_papers():
    paper = next((p for p in PAPER_CANDIDATES if osp.exists(p)), None)
    if paper is None:
        pytest.skip('the paper (shared/papers/fixnorm.txt) is not beside this checkout')
    with open(paper, encoding='utf-8') as f:
        tables = _paper_tables(f.read())
    table1 = {r[0]: dict(fixnorm=tuple(map(float, r[1:4])), bo=tuple(map(float, r[4:7])),
                         ref=tuple(map(float, r[7:10]))) for r in tables[1]}
    basic = {row['ref'][:2] for row in table1.values()}  # "lr and λ from basic settings"
    assert basic == {(0.4, 1e-4), (0.2, 4e-5)}
    t25 = [dict(epochs=int(r[1]), top1=float(r[2]), ref=_num(r[3]), dagger='†' in r[3],
                lr=float(r[6]), alpha=float(r[7])) for r in tables[2] + tables[5]]

    def table25(**match):
        rows = [r for r in t25 if all(r[k] == v for k, v in match.items())]
        assert len(rows) >= 1, f'no row of Table 2/5 with {match}'
        return rows[0]

    checked = 0
    for m in config_tool.model_index():
        meta, results = m['Metadata'], m.get('Results')
        if not results:
            continue
        value = next(iter(results[0]['Metrics'].values()))
        row_name, method = meta['Paper Row'], meta['Method']
        if meta['Training Data'] == 'ImageNet-1k':
            triple = (meta['lr'], meta.get('alpha', meta['weight decay']), value)
            if row_name.startswith('T1'):
                kind = {'FixNorm': 'fixnorm', 'BO+WD': 'bo', 'weight decay': 'ref'}[method]
                assert triple in [r[kind] for r in table1.values()], (m['Name'], triple)
            if method == 'FixNorm':
                row = table25(epochs=meta['Epochs'], top1=value)
                assert (row['lr'], row['alpha']) == (meta['lr'], meta['alpha']), m['Name']
                assert row['ref'] == meta['Reference Top 1 Accuracy'], m['Name']
                assert row['dagger'] == meta['Reference From Basic Settings'], m['Name']
            elif 'T2' in row_name or 'T5' in row_name:
                row = table25(epochs=meta['Epochs'], ref=value)
                assert row['dagger'] == meta['Reference From Basic Settings'], m['Name']
                if row['dagger']:
                    assert (meta['lr'], meta['weight decay']) in basic, m['Name']
        else:
            table = tables[3] if meta['Training Data'] == 'Cityscapes' else tables[4]
            (row,) = [r for r in table if r[0] == row_name]
            assert (int(row[1]), float(row[2])) == (meta['Iterations'], value), m['Name']
            hyper = dict(re.findall(r'(lr|\\alpha|\\lambda|wd)\s*=\s*([0-9.e-]+)', row[3]))
            assert float(hyper['lr']) == meta['lr'], m['Name']
            if method == 'FixNorm':
                assert float(hyper['\\alpha']) == meta['alpha'], m['Name']
            else:
                wd = hyper.get('wd', hyper.get('\\lambda'))
                assert float(wd) == meta['weight decay'], m['Name']
        checked += 1
    assert checked == 30  # 22 ImageNet + 4 COCO + 4 Cityscapes rows


def test_model_zoo_tables_are_generated_from_the_metafiles():
    zoo = load_script('model_zoo')
    assert zoo.stale_pages() == []
    text = {osp.relpath(p, ROOT): open(p, encoding='utf-8').read() for p in zoo.pages()}
    for key, page in [('coco', 'README.md'), ('cityscapes', 'README.md'),
                      ('coco-schedule', 'docs/coco.md'),
                      ('cityscapes-schedule', 'docs/cityscapes.md'),
                      ('imagenet', 'docs/imagenet.md')]:
        assert f'<!-- model-zoo:{key} -->' in text[page], (key, page)
    assert ('| FixNorm-tune | `retinanet_r50_fpn_fixnorm_90k_coco.py` | 0.0145 | 0 | 0.5 | 36.9 |'
            in text['README.md'])
    # a table edited by hand is put back from the metafile
    edited = text['README.md'].replace('| 0.0145 | 0 | 0.5 | 36.9 |', '| 0.0145 | 0 | 0.5 | 39.9 |')
    assert edited != text['README.md'] and zoo.update(edited) == text['README.md']
    assert zoo.number(8.6e-5) == '8.6e-5' and zoo.number(1e-4) == '1e-4'
    assert zoo.number(0.0145) == '0.0145' and zoo.number(0) == '0'


# ------------------------------ a fresh process: upstream tools, package root
FRESH = """
import sys
from mmengine.config import Config
from mmengine.registry import MODEL_WRAPPERS
assert 'fixnorm_mm' not in sys.modules
try:
    Config.fromfile('scope.py')
except AssertionError as e:
    print('scope:', e)
for name in ('path.py', 'envvar.py'):
    cfg = Config.fromfile(name)
    print(name, cfg.model.type, cfg.model.alpha)
# the base's custom_imports imported the plugin (and the toy task): components
# only, no launcher
assert 'fixnorm_mm' in sys.modules and 'fixnorm_mm.testing.toy' in sys.modules
assert 'fixnorm_mm.engine.launch' not in sys.modules
assert 'CPUDistributedDataParallel' not in MODEL_WRAPPERS.module_dict
from fixnorm_mm.launch import CPUDistributedDataParallel, setup_launch
from fixnorm_mm.engine import launch
assert setup_launch is launch.setup_launch
assert MODEL_WRAPPERS.get('CPUDistributedDataParallel') is CPUDistributedDataParallel
print('ok')
"""


def test_upstream_loading_needs_the_path_route_and_the_plugin_registers_no_launcher(tmp_path):
    """A fresh process that has not imported the plugin (mmdet's train script,
    ``mim train mmdet``, a bare ``Config.fromfile``) refuses ``fixnorm_mm::``;
    the file path of the installed config, or the environment variable route,
    work there (the README's 'FixNorm in your own config'). Importing the
    package registers its components and leaves the CPU launcher to the tools
    (``fixnorm_mm.launch`` still re-exports it)."""
    toy = config_tool.config_path('toy/toy_fixnorm.py')
    (tmp_path / 'scope.py').write_text("_base_ = 'fixnorm_mm::toy/toy_fixnorm.py'\n")
    (tmp_path / 'path.py').write_text(f'_base_ = {toy!r}\nmodel = dict(alpha=2.0)\n')
    (tmp_path / 'envvar.py').write_text(
        "_base_ = '{{$FIXNORM_MM_CONFIGS:}}/toy/toy_fixnorm.py'\nmodel = dict(alpha=3.0)\n")
    out = run([sys.executable, '-c', FRESH], tmp_path,
              dev_env(FIXNORM_MM_CONFIGS=config_tool.CONFIG_ROOT))
    assert 'scope: mmengine does not support to load fixnorm_mm config' in out
    assert 'path.py ToyNet 2.0' in out and 'envvar.py ToyNet 3.0' in out
    assert out.strip().endswith('ok')


# ------------------------------------------------------------ the wheel
def _copy_source(dst):
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info', 'build', 'dist',
                                    'work_dirs')
    os.makedirs(dst)
    for name in ('fixnorm_mm', 'configs', 'tools'):
        shutil.copytree(osp.join(ROOT, name), osp.join(dst, name), symlinks=True, ignore=ignore)
    for name in ('setup.py', 'README.md'):
        shutil.copy(osp.join(ROOT, name), dst)


@pytest.fixture(scope='module')
def wheel_env(tmp_path_factory):
    """The wheel installed (no dependencies) into a fresh venv over this
    environment's packages; ``env`` runs its commands with no source tree on
    the path, from ``work`` (outside the repository)."""
    tmp = tmp_path_factory.mktemp('wheel')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env.update(OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', MPLBACKEND='Agg')
    _copy_source(str(tmp / 'src'))
    run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
         '-w', str(tmp / 'dist'), str(tmp / 'src')], str(tmp), env)
    (wheel,) = list((tmp / 'dist').glob('fixnorm_mm-*.whl'))
    shutil.rmtree(tmp / 'src')  # nothing of the source is left to import
    venv = tmp / 'venv'
    run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)], str(tmp), env)
    python = str(venv / 'bin' / 'python')
    run([python, '-m', 'pip', 'install', '-q', '--no-deps', str(wheel)], str(tmp), env)
    env.update(PATH=f'{venv / "bin"}{os.pathsep}{env["PATH"]}', VIRTUAL_ENV=str(venv))
    work = tmp / 'work'
    work.mkdir()
    # where the wheel put the package (the first test checks that commands import it)
    (site,) = venv.glob('lib/python*/site-packages/fixnorm_mm')
    # the user's config: a provided config by its scope, and a test split
    (work / 'my_toy.py').write_text(
        "_base_ = 'fixnorm_mm::toy/toy_fixnorm.py'\n"
        'model = dict(alpha=2.0)\n'
        'test_dataloader = _base_.val_dataloader\n'
        'test_evaluator = _base_.val_evaluator\n'
        'test_cfg = dict()\n')
    return dict(python=python, env=env, work=work, venv=venv, package=str(site))


def test_wheel_trains_inherits_tunes_and_folds_outside_the_repository(wheel_env):
    python, env, work = wheel_env['python'], wheel_env['env'], wheel_env['work']
    # the console commands are installed and import the wheel's package
    assert run(['fixnorm-config', 'coco/retinanet_r50_fpn_fixnorm_90k_coco.py'],
               work, env).strip().splitlines()[-1] == osp.join(
        wheel_env['package'], '.mim', 'configs', 'coco', 'retinanet_r50_fpn_fixnorm_90k_coco.py')

    # train a user config inheriting `fixnorm_mm::`
    run(['fixnorm-train', 'my_toy.py', '--work-dir', 'train', '--cfg-options', *TOY_OPTIONS],
        work, env)
    dumped = Config.fromfile(str(work / 'train' / 'my_toy.py'))
    assert (dumped.model.type, dumped.model.alpha) == ('ToyNet', 2.0)
    assert dumped.optim_wrapper.norm_control.type == 'FixNorm'
    assert (work / 'train' / 'iter_2.pth').exists()

    # a two-trial sweep (one lr, then the second alpha), trials through the package
    out = run(['fixnorm-tune', 'my_toy.py', '--work-dir', 'sweep', '--lr-range', '0.1', '0.8',
               '--k', '1', '--budgets', '1', '--alphas', '2', '4', '--poll', '0.5',
               '--cfg-options', *TOY_OPTIONS], work, env)
    assert '2 trials (0 failed)' in out
    result = json.loads((work / 'sweep' / 'fixnorm-tune_result.json').read_text())
    trials = result['trials']
    assert [(t['lr'], t['alpha']) for t in trials] == [(0.8, 2.0), (0.8, 4.0)]
    for t in trials:
        with open(t['info']['log']) as f:
            started = f.readline()
        assert f'started: {python} -m fixnorm_mm.tools.train ' in started
        assert ROOT not in started

    # fold the checkpoint; the plain twin config loads it with the same outputs
    out = run(['fixnorm-fold', 'my_toy.py', 'train/iter_2.pth', 'plain.pth', '--plain-config',
               'fixnorm_mm::toy/toy_wd.py', '--input-shape', '2', '1', '8', '8'], work, env)
    assert 'folded 1 layer(s): head (FixNormLinear)' in out and 'written: plain.pth' in out
    assert float(out.split('random batch: ')[1].split()[0]) < 1e-5


def test_wheel_runs_mim_train_and_test(wheel_env):
    if importlib.util.find_spec('mim') is None:
        pytest.skip('openmim is not installed (tools/setup_env.sh installs it)')
    python, env, work = wheel_env['python'], wheel_env['env'], wheel_env['work']
    # a provided config by its name: mim finds it in the package and runs .mim/tools/train.py
    out = run([python, '-m', 'mim', 'train', 'fixnorm_mm', 'toy_fixnorm.py', '--work-dir', 'mim',
               '--cfg-options', *TOY_OPTIONS], work, env)
    tools = osp.join(wheel_env['package'], '.mim', 'tools')
    assert f'Training command is {python} {tools}/train.py ' in out
    assert 'Training finished successfully' in out
    assert (work / 'mim' / 'iter_2.pth').exists()
    out = run([python, '-m', 'mim', 'test', 'fixnorm_mm', 'my_toy.py', '--checkpoint',
               'mim/iter_2.pth', '--work-dir', 'mim_test', '--cfg-options',
               'test_dataloader.dataset.num_samples=64'], work, env)
    assert 'Testing finished successfully' in out
    assert re.search(r'Testing command is \S+ \S*fixnorm_mm/\S*tools/test\.py my_toy\.py', out)


def test_mmdet_train_script_trains_a_user_config_inheriting_a_provided_one(wheel_env):
    """The documented route for upstream tools: the installed config's path."""
    pytest.importorskip('pycocotools')
    import mmdet
    from mmengine.config import ConfigDict

    from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config
    python, env, work = wheel_env['python'], wheel_env['env'], wheel_env['work']
    # what `fixnorm-config coco/retinanet_r50_fpn_fixnorm_90k_coco.py` prints (first test)
    installed = osp.join(wheel_env['package'], '.mim', 'configs', 'coco',
                         'retinanet_r50_fpn_fixnorm_90k_coco.py')
    data = make_coco_dataset(str(work / 'coco'))
    base = Config.fromfile(installed)
    small = shrink_coco_config(base, data, str(work / 'det'), max_iters=2)
    # the user's config states only data, model size and schedule; FixNorm's
    # optim wrapper, head, hooks and custom_imports come from the provided config
    lines = [f'_base_ = {installed!r}']
    for key, value in small.items():
        if key in ('work_dir', 'launcher') or (key in base and base[key] == value):
            continue
        value = value.to_dict() if isinstance(value, ConfigDict) else value
        if isinstance(value, dict) and key in base:
            value = dict(_delete_=True, **value)
        lines.append(f'{key} = {value!r}')
    assert not any(line.startswith('optim_wrapper') for line in lines)
    (work / 'user_det.py').write_text('\n'.join(lines) + '\n')
    script = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    out = run([python, script, 'user_det.py', '--work-dir', 'det'], work, env)
    assert 'FixNorm fixed set' in out and 'FixNorm layer: 1 tensor' in out
    tensors = glob.glob(str(work / 'det' / '*' / 'fixnorm_tensors.txt'))
    assert 'bbox_head.retina_cls.weight  (FixNorm layer)' in open(tensors[0]).read()
    assert 'coco/bbox_mAP' in out and (work / 'det' / 'iter_2.pth').exists()
    dumped = Config.fromfile(str(work / 'det' / 'user_det.py'))
    assert dumped.optim_wrapper.norm_control.type == 'FixNorm'
    assert dumped.model.bbox_head.type == 'FixNormRetinaHead'
