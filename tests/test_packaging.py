"""The installable plugin: the tools as installed commands, the metafiles and
model-zoo tables, inheriting a provided config with upstream tools, and a wheel
that works outside the repository.

The wheel tests build the wheel from a copy of this checkout, install it with
``--no-deps`` into a fresh virtual environment over this one's packages, and
run every command from a temporary folder with no source tree on the path:
the README's quick start as it is written there (read from the README: train,
test, fold, a three-trial FixNorm-tune sweep, ``fixnorm-config``), in an empty
folder; the README's three-line Faster R-CNN config through mmdet's own train
script; ``mim train`` / ``mim test``; and mmdet's train script on a user
config that inherits a provided FixNorm config by the lines ``fixnorm-config``
printed.
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest
from mmengine.config import Config

from fixnorm_mm.tools import configs as config_tool
from fixnorm_mm.tools.dist import (dist_test_command, dist_train_command,
                                   slurm_train_command)
from fixnorm_mm.tuning.launcher import find_key

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
README = osp.join(ROOT, 'README.md')
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


def readme_commands(marker='quick-start'):
    """The commands of the README's bash block between ``<!-- marker -->`` and
    ``<!-- /marker -->``, as argument lists (comments dropped)."""
    text = open(README, encoding='utf-8').read()
    block = text.split(f'<!-- {marker} -->\n', 1)[1].split(f'<!-- /{marker} -->', 1)[0]
    code = block.split('```bash\n', 1)[1].split('```', 1)[0]
    lines = code.replace('\\\n', ' ').splitlines()
    return [argv for argv in (shlex.split(line, comments=True) for line in lines) if argv]


def three_lines(text):
    """The three-line FixNorm config for Faster R-CNN of a page (README: an
    indented block; docs/zoo.md: a fenced one), as a config file's text."""
    m = re.search(r"^( *)_base_ = 'mmdet::faster_rcnn/.*?(?=\n\s*(\n|```))", text, re.S | re.M)
    assert m, 'no three-line Faster R-CNN config on the page'
    return textwrap.dedent(m.group(0)) + '\n'


def code_only(config_text):
    return [re.sub(r'\s+', '', line.split('#')[0]) for line in config_text.splitlines()
            if line.split('#')[0].strip()]


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
    the path, from folders under ``tmp`` (outside the repository)."""
    tmp = tmp_path_factory.mktemp('wheel')
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'PYTHONHOME', 'FIXNORM_MM_CONFIGS')}
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
    # where the wheel put the package (the quick start checks that commands import it)
    (site,) = venv.glob('lib/python*/site-packages/fixnorm_mm')
    # a user's config: a provided config by its scope
    (work / 'my_toy.py').write_text("_base_ = 'fixnorm_mm::toy/toy_fixnorm.py'\n"
                                    'model = dict(alpha=2.0)\n')
    return dict(python=python, env=env, tmp=tmp, work=work, venv=venv, package=str(site))


@pytest.fixture(scope='module')
def quick_start(wheel_env):
    """The README's quick start, run as written from an empty folder with only
    the wheel installed. ``outputs``: (argv, output) of each command;
    ``scalars``: the ``scalars.json`` of its training run."""
    folder = wheel_env['tmp'] / 'quick_start'
    folder.mkdir()
    outputs = [(argv, run(argv, folder, wheel_env['env'], timeout=600))
               for argv in readme_commands('quick-start')]
    (scalars,) = glob.glob(str(folder / 'work' / 'toy' / '*' / 'vis_data' / 'scalars.json'))
    return dict(folder=folder, outputs=outputs, scalars=scalars)


def test_readme_quick_start_runs_as_written_from_an_empty_folder(wheel_env, quick_start):
    """Every command of the README's quick start succeeds (``run`` checks the
    exit status) and does what the README says it does."""
    python, folder = wheel_env['python'], quick_start['folder']
    out = {}
    for argv, output in quick_start['outputs']:
        out[' '.join(argv[:2]) if argv[0] == 'fixnorm-config' else argv[0]] = output
    retina = 'coco/retinanet_r50_fpn_fixnorm_90k_coco.py'
    assert {'fixnorm-config --list', 'fixnorm-train', 'fixnorm-test', 'fixnorm-fold',
            'fixnorm-tune', f'fixnorm-config {retina}'} <= set(out), list(out)

    assert f'{retina}  [box AP 36.9; lr 0.0145, alpha 0.5, weight decay 0.0]' in \
        out['fixnorm-config --list']
    # train: 320 iterations, the startup table, and one endless data stream
    # (a loader restarted every epoch warns, and its pause is missing from the
    # logged iteration times)
    train = out['fixnorm-train']
    assert 'FixNorm fixed set' in train and 'Iter(train) [320/320]' in train
    assert (folder / 'work' / 'toy' / 'iter_320.pth').exists()
    assert 'Reach the end of the dataloader' not in train
    # what FixNorm does is in the log and scalars.json with no hook to add: the fixed
    # set's norm at every logged iteration is its reference (Algo 1), and MCBRHook's
    # MCBR and g of the FixNorm-FC classifier
    records = [json.loads(line) for line in open(quick_start['scalars'])]
    norms = [r['fixnorm/norm_default'] for r in records if 'fixnorm/norm_default' in r]
    assert len(norms) >= 4 and max(norms) - min(norms) < 1e-3 * norms[0]
    logged = {k for r in records for k in r}
    assert {'fixnorm/default_effective_lr', 'fixnorm/mcbr', 'fixnorm/g',
            'fixnorm/g_capped'} <= logged
    assert 'fixnorm/norm_default: ' in train
    # test: the held-out split, scored
    test = out['fixnorm-test']
    top1 = float(re.search(r'Iter\(test\) \[4/4\] +accuracy/top1: ([0-9.]+)', test).group(1))
    assert 50 < top1 <= 100  # 10 classes: chance is 10 %
    # fold: a plain FC that the weight-decay twin config loads, same outputs
    fold = out['fixnorm-fold']
    assert 'folded 1 layer(s): head (FixNormLinear)' in fold
    assert 'written: work/toy_plain.pth' in fold and (folder / 'work' / 'toy_plain.pth').exists()
    assert float(fold.split('random batch: ')[1].split()[0]) < 1e-5
    # the sweep: two lrs at the full budget, then the second alpha at the better
    # one, every trial `python -m fixnorm_mm.tools.train` of the wheel
    assert '3 trials (0 failed)' in out['fixnorm-tune']
    result = json.loads((folder / 'work' / 'tune' / 'fixnorm-tune_result.json').read_text())
    trials = result['trials']
    assert sorted((t['lr'], t['alpha']) for t in trials[:2]) == [(0.85, 1.0), (1.6, 1.0)]
    assert (trials[2]['lr'], trials[2]['alpha']) == (result['best_lr'], 4.0)
    assert (folder / 'work' / 'tune' / 'fixnorm-tune.png').stat().st_size > 0
    for t in trials:
        log = open(t['info']['log']).read()
        started = log.split('\n', 1)[0]
        assert f'started: {python} -m fixnorm_mm.tools.train ' in started
        assert ROOT not in started
        assert 'Reach the end of the dataloader' not in log
    # fixnorm-config: lines that inherit the installed config with any tool
    # (test_mmdet_train_script_... trains them with mmdet's tools/train.py)
    lines = out[f'fixnorm-config {retina}'].splitlines()
    installed = osp.join(wheel_env['package'], '.mim', 'configs', retina)
    assert f'_base_ = {installed!r}  # every tool loads it, upstream ones too' in lines


def test_three_line_snippets_carry_custom_imports():
    """The README's and docs/zoo.md's three lines are one config, with the
    ``custom_imports`` line that upstream tools need; so are configs/convert."""
    readme = three_lines(open(README, encoding='utf-8').read())
    zoo = three_lines(open(osp.join(ROOT, 'docs', 'zoo.md'), encoding='utf-8').read())
    assert code_only(readme) == code_only(zoo)
    assert "custom_imports=dict(imports=['fixnorm_mm'],allow_failed_imports=False)" in \
        code_only(readme)
    for path in glob.glob(osp.join(ROOT, 'configs', 'convert', '*.py')):
        code = ''.join(code_only(open(path, encoding='utf-8').read()))
        assert "custom_imports=dict(imports=['fixnorm_mm']" in code, path


def _config_lines(base, small, nested=('model',)):
    """Lines that turn the config ``base`` into ``small``: the keys that differ,
    dicts replaced whole (``_delete_``); a key of ``nested`` key by key, so
    that what the base says there and the small config keeps stays the base's."""
    from mmengine.config import ConfigDict

    def value(v):
        return v.to_dict() if isinstance(v, ConfigDict) else v

    lines = []
    for key, new in small.items():
        if key in ('work_dir', 'launcher') or (key in base and base[key] == new):
            continue
        new = value(new)
        if key in nested and key in base:
            parts = {k: (dict(_delete_=True, **value(v)) if isinstance(value(v), dict) else
                         value(v)) for k, v in new.items() if base[key].get(k) != v}
            lines.append(f'{key} = {parts!r}')
        elif isinstance(new, dict) and key in base:
            lines.append(f'{key} = {dict(_delete_=True, **new)!r}')
        else:
            lines.append(f'{key} = {new!r}')
    return lines


@pytest.fixture(scope='module')
def three_line_faster_rcnn(wheel_env):
    """The README's three-line Faster R-CNN config, trained by mmdet's own
    ``tools/train.py`` (as mmdet ships it, ``.mim/tools/train.py``) from an
    empty folder with only the wheel installed. A second file that inherits
    it sets a generated COCO dataset, a small ResNet-18 and two iterations.
    ``out``: the run's output (FixNormModel's conversion log, the startup
    table); ``work_dir``, ``log``: its work folder and log file."""
    pytest.importorskip('pycocotools')
    import mmdet

    from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config
    folder = wheel_env['tmp'] / 'three_lines'
    folder.mkdir()
    user = folder / 'faster_rcnn_fixnorm.py'
    user.write_text(three_lines(open(README, encoding='utf-8').read()))
    data = make_coco_dataset(str(folder / 'coco'), num_train=2, num_val=1, image_size=64)
    base = Config.fromfile(str(user))
    small = shrink_coco_config(base, data, 'det', max_iters=2, width=16)
    small.val_cfg = small.val_dataloader = small.val_evaluator = None
    lines = _config_lines(base, small)
    assert not any(line.startswith(('optim_wrapper', 'custom_imports')) for line in lines)
    (folder / 'small.py').write_text("_base_ = './faster_rcnn_fixnorm.py'\n"
                                     + '\n'.join(lines) + '\n')
    script = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    out = run([wheel_env['python'], script, 'small.py', '--work-dir', 'det'], folder,
              wheel_env['env'], timeout=600)
    (log,) = glob.glob(str(folder / 'det' / '*' / '*.log'))
    return dict(out=out, work_dir=folder / 'det', log=log, folder=folder)


def test_readme_three_lines_train_with_mmdets_own_train_script(three_line_faster_rcnn):
    run_ = three_line_faster_rcnn
    out, work_dir = run_['out'], run_['work_dir']
    assert 'FixNormModel: converted' in out and 'roi_head.bbox_head.fc_cls: FixNormLinear' in out
    assert 'FixNorm fixed set' in out
    assert (work_dir / 'iter_2.pth').exists()
    dumped = Config.fromfile(str(work_dir / 'small.py'))
    assert (dumped.model.type, dumped.model.model_type, dumped.model.final_layer) == \
        ('FixNormModel', 'FasterRCNN', 'auto')
    assert dumped.optim_wrapper.norm_control.type == 'FixNorm'
    assert dumped.custom_imports.imports == ['fixnorm_mm']
    assert dumped.model.backbone.depth == 18  # the small model, over the three lines
    # the startup table and what it warns agree: the frozen-BN backbone is left out of
    # the fixed set (frozen, or eval-mode BN) and keeps the stock config's weight decay,
    # so nothing is left with neither, and no WARNING says otherwise; WN gains are
    # never controlled, listed as such
    log = open(run_['log']).read()
    table = log[log.index('FixNorm fixed set'):]
    table = table[:table.index('FixNorm: the per-tensor list')]
    assert re.search(r'frozen \(requires_grad=False\): \d+ tensors', table)
    assert re.search(r'followed by BatchNorm2d in eval mode \(frozen statistics\): not '
                     r'scale-invariant: \d+ tensors', table)
    assert re.search(r'biases, normalization parameters and gains \(never controlled\)', table)
    fixed = int(re.search(r'default +(\d+) ', table).group(1))
    assert re.search(rf'weight decay: 0 on the {fixed} controlled tensors \(taken over from '
                     r"0\.0001\); the config's on the (\d+) other tensors "
                     r"\(uncontrolled_weight_decay='keep'\): 0\.0001 on \1", table)
    assert 'get neither FixNorm nor weight decay' not in log
    assert 'gets neither FixNorm nor weight decay' not in log
    # and the run logs the fixed set's norm, constant, with no hook in the three lines
    (scalars,) = glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    records = [json.loads(line) for line in open(scalars)]
    norms = [r['fixnorm/norm_default'] for r in records if 'fixnorm/norm_default' in r]
    assert len(norms) == 2 and abs(norms[1] - norms[0]) < 1e-4 * norms[0]


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


def test_mmdet_train_script_trains_a_user_config_inheriting_a_provided_one(wheel_env,
                                                                          quick_start):
    """The documented route for upstream tools: the lines ``fixnorm-config``
    printed in the quick start (the installed config's path)."""
    pytest.importorskip('pycocotools')
    import mmdet

    from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config
    python, env, work = wheel_env['python'], wheel_env['env'], wheel_env['work']
    retina = 'coco/retinanet_r50_fpn_fixnorm_90k_coco.py'
    (pasted,) = [o for argv, o in quick_start['outputs'] if argv == ['fixnorm-config', retina]]
    installed = osp.join(wheel_env['package'], '.mim', 'configs', retina)
    data = make_coco_dataset(str(work / 'coco'))
    base = Config.fromfile(installed)
    small = shrink_coco_config(base, data, str(work / 'det'), max_iters=2)
    # the user's config states only data, model size and schedule; FixNorm's
    # optim wrapper, head, hooks and custom_imports come from the provided config
    lines = _config_lines(base, small, nested=())
    assert not any(line.startswith('optim_wrapper') for line in lines)
    (work / 'user_det.py').write_text(pasted + '\n'.join(lines) + '\n')
    script = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    out = run([python, script, 'user_det.py', '--work-dir', 'det'], work, env)
    assert 'FixNorm fixed set' in out and 'FixNorm layer: 1 tensor' in out
    tensors = glob.glob(str(work / 'det' / '*' / 'fixnorm_tensors.txt'))
    assert 'bbox_head.retina_cls.weight  (FixNorm layer)' in open(tensors[0]).read()
    assert 'coco/bbox_mAP' in out and (work / 'det' / 'iter_2.pth').exists()
    dumped = Config.fromfile(str(work / 'det' / 'user_det.py'))
    assert dumped.optim_wrapper.norm_control.type == 'FixNorm'
    assert dumped.model.bbox_head.type == 'FixNormRetinaHead'
