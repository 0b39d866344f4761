"""Crash-safe checkpoints (AtomicCheckpointHook) and resuming from the newest
complete checkpoint when a kill interrupted a save."""
import os
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

import fixnorm_mm  # noqa: F401
from fixnorm_mm.engine import (AtomicCheckpointHook, check_checkpoint_file,
                               find_resumable_checkpoint)
from fixnorm_mm.testing.toy import runner_cfg

HOOK = dict(type='AtomicCheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=1)


def train(work, iters, resume_from=None, **hook):
    cfg = runner_cfg(work, max_iters=iters,
                     default_hooks=dict(checkpoint=dict(HOOK, **hook),
                                        logger=dict(type='LoggerHook', interval=1)))
    if resume_from is not None:
        cfg.update(resume=True, load_from=resume_from)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


class Killed(Exception):
    """What a SIGKILL would do at that point: nothing after it runs."""


@pytest.mark.parametrize('point', ['while_writing', 'before_rename', 'before_record',
                                   'before_delete'])
def test_a_kill_at_any_point_of_a_save_leaves_a_resumable_work_dir(tmp_path, monkeypatch, point):
    work = str(tmp_path)
    train(work, 2)  # iter_2.pth, recorded in last_checkpoint
    assert open(osp.join(work, 'last_checkpoint')).read() == osp.join(work, 'iter_2.pth')
    real_save, real_replace, real_remove = Runner.save_checkpoint, os.replace, os.remove

    def save(self, out_dir, filename, *a, **k):
        real_save(self, out_dir, filename, *a, **k)
        if point == 'while_writing':  # a half-written temporary file
            path = osp.join(out_dir, filename)
            with open(path, 'r+b') as f:
                f.truncate(os.path.getsize(path) // 2)
            raise Killed

    def replace(src, dst):
        if (point == 'before_rename' and dst.endswith('.pth')) or \
                (point == 'before_record' and dst.endswith('last_checkpoint')):
            raise Killed
        real_replace(src, dst)

    def remove(path):
        if point == 'before_delete':
            raise Killed
        real_remove(path)

    monkeypatch.setattr(Runner, 'save_checkpoint', save)
    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(os, 'remove', remove)
    with pytest.raises(Killed):
        train(work, 4, resume_from=osp.join(work, 'iter_2.pth'))
    monkeypatch.undo()
    path, why = find_resumable_checkpoint(work)
    # last_checkpoint names the newest checkpoint it recorded, which still exists
    want = 'iter_4.pth' if point == 'before_delete' else 'iter_2.pth'
    assert osp.basename(path) == want, why
    runner = train(work, 6, resume_from=path)
    assert runner.iter == 6


def test_upstream_order_loses_the_only_checkpoint(tmp_path, monkeypatch):
    """Why the hook exists: mmengine's CheckpointHook deletes the old checkpoint
    first, so a kill during the next save leaves nothing resumable."""
    work = str(tmp_path)
    cfg = runner_cfg(work, max_iters=2, default_hooks=dict(
        checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=1)))
    Runner.from_cfg(cfg).train()
    monkeypatch.setattr(Runner, 'save_checkpoint', lambda *a, **k: (_ for _ in ()).throw(Killed()))
    cfg = dict(cfg, train_cfg=dict(by_epoch=False, max_iters=4, val_interval=1000),
               resume=True, load_from=osp.join(work, 'iter_2.pth'))
    with pytest.raises(Killed):
        Runner.from_cfg(cfg).train()
    assert not osp.exists(osp.join(work, 'iter_2.pth'))  # deleted before the save
    path, why = find_resumable_checkpoint(work)
    assert path is None and 'missing' in why


def test_empty_record_and_truncated_newest_fall_back_and_say_why(tmp_path):
    work = str(tmp_path)
    train(work, 4, max_keep_ckpts=2)  # iter_2.pth, iter_4.pth
    open(osp.join(work, 'last_checkpoint'), 'w').close()
    path, why = find_resumable_checkpoint(work)
    assert osp.basename(path) == 'iter_4.pth' and 'last_checkpoint is empty' in why
    newest = osp.join(work, 'iter_4.pth')
    with open(newest, 'r+b') as f:
        f.truncate(osp.getsize(newest) - 100)
    path, why = find_resumable_checkpoint(work)
    assert osp.basename(path) == 'iter_2.pth'
    assert 'iter_4.pth is truncated or corrupt' in why
    with pytest.raises(ValueError, match=r"checkpoint '.*iter_4\.pth' cannot be loaded: "
                                         r'truncated or corrupt'):
        check_checkpoint_file(newest)


def test_atomic_hook_keeps_max_keep_ckpts_and_upstream_contents(tmp_path):
    runner = train(str(tmp_path), 6, max_keep_ckpts=2)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth')) == \
        ['iter_4.pth', 'iter_6.pth']
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]
    state = torch.load(str(tmp_path / 'iter_6.pth'), weights_only=True)
    assert state['meta']['iter'] == 6 and 'fixnorm' in state['optimizer']
    assert isinstance(next(h for h in runner.hooks if 'Checkpoint' in type(h).__name__),
                      AtomicCheckpointHook)


def test_train_tool_saves_atomically_and_resumes_the_newest_complete_checkpoint(tmp_path,
                                                                                capsys):
    """`fixnorm-train --resume` after a kill that emptied last_checkpoint."""
    from mmengine.config import Config

    from fixnorm_mm.tools.train import main
    cfg = Config(runner_cfg(tmp_path / 'work', max_iters=2, default_hooks=dict(
        checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
        logger=dict(type='LoggerHook', interval=1))))
    cfg.custom_imports = dict(imports=['fixnorm_mm.testing.toy'])
    path = str(tmp_path / 'cfg.py')
    cfg.dump(path)
    main([path])
    assert not [f for f in os.listdir(tmp_path / 'work') if f.endswith('.tmp')]
    open(tmp_path / 'work' / 'last_checkpoint', 'w').close()  # killed while recording
    main([path, '--resume', '--cfg-options', 'train_cfg.max_iters=4'])
    out = capsys.readouterr().out
    assert 'last_checkpoint is empty; took the newest complete checkpoint' in out
    assert osp.exists(tmp_path / 'work' / 'iter_4.pth')
    with open(tmp_path / 'work' / 'iter_4.pth', 'r+b') as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match=r"--resume '.*iter_4\.pth' cannot be loaded"):
        main([path, '--resume', str(tmp_path / 'work' / 'iter_4.pth')])


def test_upstream_style_resume_with_only_custom_imports(tmp_path):
    """What mmdet's / mmpretrain's train scripts do: Config.fromfile (which runs
    the config's custom_imports), then Runner.from_cfg(...).train() with
    resume=True, in a process that never imported the plugin itself. The
    checkpoint loads with torch's safe loading (weights_only=True)."""
    import subprocess
    import sys

    from mmengine.config import Config
    cfg = Config(runner_cfg(str(tmp_path / 'work'), max_iters=2))
    cfg.custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.testing.toy'])
    cfg.dump(str(tmp_path / 'cfg.py'))
    script = (
        "import sys\n"
        "from mmengine.config import Config\n"
        "from mmengine.runner import Runner\n"
        "assert 'fixnorm_mm' not in sys.modules\n"
        "cfg = Config.fromfile(sys.argv[1])\n"
        "cfg.merge_from_dict(dict(train_cfg=dict(max_iters=int(sys.argv[2]))))\n"
        "cfg.resume = sys.argv[2] == '4'\n"
        "runner = Runner.from_cfg(cfg)\n"
        "runner.train()\n"
        "print('iter', runner.iter)\n")
    for iters in ('2', '4'):
        out = subprocess.run([sys.executable, '-c', script, str(tmp_path / 'cfg.py'), iters],
                             capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr[-3000:]
        assert f'iter {iters}' in out.stdout
    assert 'resumed epoch: 0, iter: 2' in out.stdout + out.stderr
