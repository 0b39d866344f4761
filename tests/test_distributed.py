"""tools/dist_train.sh CONFIG 2 on the CPU (gloo): a shrunk config of each task
trains a few iterations under DDP (and a toy config under tools/slurm_train.sh);
afterwards both ranks hold identical weights (bit for bit) and the same
FixNorm reference norm, and the weights equal a single-process run with the
same global batch. tools/dist_test.sh evaluates on 2 processes.

Equivalence needs the same mathematics in both runs:

* BatchNorm sees the global batch: the DDP runs use SyncBN (``sync_bn='torch'``,
  or the config's own SyncBN), which the CPU path runs as GlooSyncBatchNorm,
  and the single-process run reverts it to BN over the whole batch;
* every transform and layer is deterministic (no random flips, crops or
  dropout), since the two runs draw random numbers in another order;
* the samples of a step are the same: DefaultSampler with a fixed seed gives
  rank r the indices r, r + 2, ..., the single run takes them in order.
"""
import copy
import glob
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import fixnorm_mm  # noqa: F401
import rank_dump  # noqa: F401  (registers RankDumpHook in this process too)
import fixnorm_mm.testing.toy  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TESTS = osp.dirname(osp.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_script(cmd, extra_env=None, timeout=300):
    for attempt in range(3):
        env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS='1',
                   PYTHONPATH=os.pathsep.join([TESTS, os.environ.get('PYTHONPATH', '')]))
        env.update(extra_env or {})
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        # the free port may be taken by another process before torchrun binds it
        if proc.returncode == 0 or 'address already in use' not in proc.stdout.lower():
            break
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def dist_train(config: str, work_dir: str, *options: str, nproc: int = 2) -> str:
    return run_script(['bash', 'tools/dist_train.sh', config, str(nproc),
                       '--work-dir', work_dir, *options])


def with_dump(cfg: Config, out_dir: str) -> Config:
    """Every rank saves its weights and FixNorm state at the end (RankDumpHook)."""
    cfg = copy.deepcopy(cfg)
    imports = dict(cfg.get('custom_imports') or dict(imports=[]))
    imports['imports'] = list(imports.get('imports', [])) + ['rank_dump']
    cfg.custom_imports = imports
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='RankDumpHook', out_dir=out_dir)]
    os.makedirs(out_dir, exist_ok=True)
    return cfg


def single_run(cfg: Config, out_dir: str) -> dict:
    cfg = with_dump(cfg, out_dir)
    cfg.launcher = 'none'
    Runner.from_cfg(cfg).train()
    return torch.load(osp.join(out_dir, 'rank0.pth'), weights_only=False)


def check_equivalent(dist_dir: str, single: dict, rtol: float, atol: float) -> None:
    r0, r1 = (torch.load(osp.join(dist_dir, f'rank{r}.pth'), weights_only=False)
              for r in (0, 1))
    assert r0['world_size'] == r1['world_size'] == 2
    assert r0['wrapper'] == 'CPUDistributedDataParallel'
    assert single['world_size'] == 1
    # every rank holds identical weights (and buffers), bit for bit
    assert r0['state_dict'].keys() == r1['state_dict'].keys() == single['state_dict'].keys()
    for k in r0['state_dict']:
        assert torch.equal(r0['state_dict'][k], r1['state_dict'][k]), k
    # the same fixed set and reference norm on both ranks and in the single run
    assert r0['fixnorm'] == r1['fixnorm']
    for g, state in single['fixnorm']['groups'].items():
        assert r0['fixnorm']['groups'][g]['params'] == state['params']
        torch.testing.assert_close(r0['fixnorm']['groups'][g]['reference_norm'],
                                   state['reference_norm'], rtol=1e-6, atol=0)
    # after every step, the fixed set is back at its reference norm
    assert len(r0['norms']) == len(single['norms']) >= 2
    for norms in r0['norms']:
        for g, v in norms.items():
            torch.testing.assert_close(v, r0['fixnorm']['groups'][g]['reference_norm'],
                                       rtol=1e-6, atol=0)
    # both runs started from the same weights and really trained
    for k, v in single['init'].items():
        assert torch.equal(r0['init'][k], v), k
    fixed = [n for g in single['fixnorm']['groups'].values() for n in g['params']]
    # (a deep FPN level of a 64-pixel image may get a gradient below one ulp)
    unchanged = [n for n in fixed if torch.equal(single['state_dict'][n], single['init'][n])]
    assert len(unchanged) <= len(fixed) // 4, unchanged
    # and DDP on 2 processes computed what one process computes
    for k, v in single['state_dict'].items():
        if v.is_floating_point():
            torch.testing.assert_close(r0['state_dict'][k], v, rtol=rtol, atol=atol, msg=k)


TOY_CONFIG = """
custom_imports = dict(imports=['fixnorm_mm.testing.toy', 'rank_dump'],
                      allow_failed_imports=False)
model = dict(type='ToyNet')
train_dataloader = dict(dataset=dict(type='ToyDataset'), batch_size=2, num_workers=0,
                        sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
                        collate_fn=dict(type='pseudo_collate'))
train_cfg = dict(by_epoch=False, max_iters=3, val_interval=1000)
test_dataloader = dict(dataset=dict(type='ToyDataset', num_samples=10, seed=1), batch_size=2,
                       num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                       collate_fn=dict(type='pseudo_collate'))
test_cfg = dict(type='TestLoop')
test_evaluator = dict(type='ToyAccuracy', count_samples=True)
optim_wrapper = dict(type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
                     optimizer=dict(type='SGD', lr=0.5, momentum=0.9, nesterov=True))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
custom_hooks = [dict(type='RankDumpHook', out_dir='{out}')]
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(backend='nccl'))  # as upstream configs say: gloo is chosen
sync_bn = 'torch'
default_scope = None
"""


FAKE_SRUN = r"""#!/usr/bin/env bash
# srun for tests: run the command --ntasks times on this machine with Slurm's variables
N=1
while [[ $# -gt 0 && "$1" == -* ]]; do
  case "$1" in --ntasks=*) N="${1#*=}";; -p|-n|-N) shift;; esac
  shift
done
pids=()
for ((i = 0; i < N; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$N SLURM_NODELIST=node0 "$@" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc
"""


@pytest.fixture(scope='module')
def toy_runs(tmp_path_factory):
    """The toy config trained by tools/slurm_train.sh on 2 CPU tasks (a stand-in
    srun/scontrol gives them Slurm's variables, as on a cluster), and in one
    process with the global batch. tools/dist_train.sh itself is what the task
    tests below run."""
    tmp = tmp_path_factory.mktemp('toy')
    bin_dir = tmp / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(FAKE_SRUN)
    (bin_dir / 'scontrol').write_text('#!/usr/bin/env bash\necho 127.0.0.1\n')
    for f in ('srun', 'scontrol'):
        os.chmod(bin_dir / f, 0o755)
    config = tmp / 'toy.py'
    config.write_text(TOY_CONFIG.replace('{out}', str(tmp / 'dist')))
    os.makedirs(tmp / 'dist')
    log = run_script(['bash', 'tools/slurm_train.sh', 'cpu', 'toy', str(config), str(tmp / 'work'),
                      '--cfg-options', f'env_cfg.dist_cfg.port={free_port()}'],
                     extra_env=dict(PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
                                    GPUS='2', GPUS_PER_NODE='0', NTASKS_PER_NODE='2',
                                    PYTHON=sys.executable))
    cfg = Config.fromfile(str(config))
    cfg.train_dataloader.batch_size = 4  # the global batch of 2 tasks x 2
    cfg.custom_hooks = []
    cfg.work_dir = str(tmp / 'single_work')
    single = single_run(cfg, str(tmp / 'single'))
    return tmp, log, single


def test_toy_on_slurm_cpu_tasks_equals_single_process(toy_runs):
    tmp, log, single = toy_runs
    # nccl in the config, no GPU: gloo (rank 1 logs errors only)
    assert "backend 'gloo', rank 0 of 2" in log
    assert 'followed by GlooSyncBatchNorm' in log
    check_equivalent(str(tmp / 'dist'), single, rtol=1e-5, atol=1e-6)


def test_toy_dist_test_equals_single_process(toy_runs):
    tmp, _, single = toy_runs
    ckpt = str(tmp / 'work' / 'iter_3.pth')
    out = run_script(['bash', 'tools/dist_test.sh', str(tmp / 'toy.py'), ckpt, '2',
                      '--work-dir', str(tmp / 'test_work')])
    accuracy = float(out.split('accuracy: ')[-1].split()[0])
    cfg = Config.fromfile(str(tmp / 'toy.py'))
    cfg.custom_hooks = []
    cfg.work_dir = str(tmp / 'single_test')
    cfg.load_from = ckpt
    metrics = Runner.from_cfg(cfg).test()
    assert metrics['samples'] == 10
    # the 2 ranks' results are gathered: all 10 samples, each once
    assert 'samples: 10' in out
    assert accuracy == pytest.approx(metrics['accuracy'])


# ---- the three tasks -------------------------------------------------------------------

def deterministic(pipeline, replace):
    """The pipeline with its random transforms replaced (or dropped: None)."""
    out = []
    for t in pipeline:
        new = replace.get(t['type'], t)
        if new is not None:
            out.append(new)
    return out


def run_task(tmp_path, cfg: Config, single_cfg: Config, rtol=1e-4, atol=1e-5):
    dist_cfg = with_dump(cfg, str(tmp_path / 'dist'))
    dist_cfg.dump(str(tmp_path / 'task.py'))
    log = dist_train(str(tmp_path / 'task.py'), str(tmp_path / 'work'))
    single = single_run(single_cfg, str(tmp_path / 'single'))
    check_equivalent(str(tmp_path / 'dist'), single, rtol=rtol, atol=atol)
    # the startup table's per-tensor list, written by rank 0 beside its log (the
    # distributed run's log dir is the first one; the single run may follow)
    tables = sorted(glob.glob(str(tmp_path / 'work' / '*' / 'fixnorm_tensors.txt')))
    return log + open(tables[0]).read(), single


def test_classification_resnet50d_fixnorm(tmp_path):
    from fixnorm_mm.testing.classification import make_imagenet_dataset, shrink_imagenet_config
    data = make_imagenet_dataset(str(tmp_path / 'imagenet'), num_classes=4, train_per_class=2)
    cfg = shrink_imagenet_config(
        Config.fromfile(osp.join(ROOT, 'configs/imagenet/resnet50d_fixnorm_16xb64-120e_in1k.py')),
        data, work_dir=str(tmp_path / 'work'), max_iters=2, batch_size=2)
    cfg.model.backbone.update(depth=18, stem_channels=8, base_channels=8)  # small, same kind
    cfg.model.head.in_channels = 64
    ds = cfg.train_dataloader.dataset
    ds.pipeline = deterministic(ds.pipeline, {
        'RandomResizedCrop': dict(type='CenterCrop', crop_size=32), 'RandomFlip': None})
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True, seed=0)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.sync_bn = 'torch'
    single = copy.deepcopy(cfg)
    single.train_dataloader.batch_size = 4
    log, _ = run_task(tmp_path, cfg, single)
    assert 'head.fc.weight  (FixNorm layer)' in log


def test_detection_retinanet_fixnorm(tmp_path):
    """RetinaNet normalises its loss by the positive anchors of each process's
    own batch (mmdet does not all-reduce that count), so the single-process
    twin of 2 ranks x 1 image is 1 image x 2 accumulated iterations per step:
    the same 2 images and the same per-image normalisation in every step."""
    from fixnorm_mm.testing.detection import make_coco_dataset, shrink_coco_config
    data = make_coco_dataset(str(tmp_path / 'coco'), num_train=4, num_val=1, image_size=64)
    cfg = shrink_coco_config(
        Config.fromfile(osp.join(ROOT, 'configs/coco/retinanet_r50_fpn_fixnorm_90k_coco.py')),
        data, work_dir=str(tmp_path / 'work'), max_iters=2, batch_size=1)
    ds = cfg.train_dataloader.dataset
    ds.pipeline = deterministic(ds.pipeline, {'RandomFlip': None})
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True, seed=0)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.param_scheduler = []  # constant lr: the two runs count iterations differently
    cfg.optim_wrapper.optimizer.lr = 0.2  # steps large enough to see at init
    single = copy.deepcopy(cfg)
    single.optim_wrapper.accumulative_counts = 2
    single.train_cfg.max_iters = 4
    log, _ = run_task(tmp_path, cfg, single)
    assert 'bbox_head.retina_cls.weight  (FixNorm layer)' in log


def test_segmentation_ocnet_fixnorm_syncbn(tmp_path):
    """Base-OC with the config's own SyncBN, 2 ranks x 1 image vs 2 images."""
    from fixnorm_mm.testing.segmentation import (make_cityscapes_dataset,
                                                 shrink_cityscapes_config)
    data = make_cityscapes_dataset(str(tmp_path / 'cs'), num_train=4, num_val=1)
    cfg = shrink_cityscapes_config(
        Config.fromfile(osp.join(
            ROOT, 'configs/cityscapes/baseoc_r101-d8_fixnorm-tune_4xb2-40k_cityscapes-769x769.py')),
        data, work_dir=str(tmp_path / 'work'), max_iters=2, batch_size=1)
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
    ds = cfg.train_dataloader.dataset
    ds.pipeline = deterministic(ds.pipeline, {
        'RandomResize': dict(type='Resize', scale=(64, 32), keep_ratio=False),
        'RandomCrop': None, 'RandomFlip': None, 'PhotoMetricDistortion': None})
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True, seed=0)
    cfg.model.decode_head.dropout_ratio = 0.0
    cfg.model.auxiliary_head.dropout_ratio = 0.0
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    single = copy.deepcopy(cfg)
    single.train_dataloader.batch_size = 2
    log, _ = run_task(tmp_path, cfg, single)
    assert 'followed by GlooSyncBatchNorm' in log
    assert 'decode_head.conv_seg.weight  (FixNorm layer)' in log
