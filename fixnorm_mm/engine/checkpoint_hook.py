"""Crash-safe checkpoints: a checkpoint on disk is complete or absent, and
``last_checkpoint`` never names a file that is gone.

mmengine 0.10.7's ``CheckpointHook`` deletes the oldest checkpoint
(``max_keep_ckpts``), then writes the new one in place, then rewrites
``last_checkpoint`` in place; a kill in between leaves a truncated file, an
empty ``last_checkpoint`` or one that names a deleted file, and
``resume=True`` stops although a complete checkpoint is on disk.

:class:`AtomicCheckpointHook` (``default_hooks.checkpoint.type``; the tools of
this package use it in place of ``CheckpointHook``) changes only the order and
the way files are written: the new checkpoint goes to a temporary file, is
flushed to disk (fsync) and renamed into place; ``last_checkpoint`` is then
replaced the same way; only then are outdated checkpoints deleted.
:func:`find_resumable_checkpoint` picks what to resume: the file
``last_checkpoint`` names if it is complete, else the newest complete
checkpoint in the work dir, and says which and why.
"""
import glob
import os
import os.path as osp
import re
import zipfile
from collections import deque
from typing import Optional, Tuple

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS


def _fsync_replace(tmp: str, final: str) -> None:
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)  # atomic on POSIX: readers see the old file or the new one
    try:
        fd = os.open(osp.dirname(final) or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)  # the rename itself survives a power loss
    finally:
        os.close(fd)


def write_text_atomically(path: str, text: str) -> None:
    tmp = f'{path}.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    _fsync_replace(tmp, path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) whose checkpoints are written
    atomically, with ``last_checkpoint`` updated before old checkpoints are
    deleted. Checkpoints to a remote backend (``backend_args``) are saved as
    upstream does."""

    def _local(self) -> bool:
        return not self.backend_args and self.file_client_args is None \
            and osp.isdir(self.out_dir)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = self._keep(runner, step)  # recorded in the checkpoint's message hub
        ckpt_filename = self.filename_tmpl.format(step)
        final = osp.join(self.out_dir, ckpt_filename)
        tmp_name = f'.{ckpt_filename}.tmp'
        self.last_ckpt = final
        runner.message_hub.update_info('last_ckpt', final)
        runner.save_checkpoint(
            self.out_dir, tmp_name, self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        _fsync_replace(osp.join(self.out_dir, tmp_name), final)
        write_text_atomically(osp.join(runner.work_dir, 'last_checkpoint'), final)
        for old in outdated:  # only now: the new checkpoint is safely named
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(path):
                os.remove(path)

    def _keep(self, runner, step) -> list:
        """``max_keep_ckpts``: record ``step`` among the kept ones and return
        the steps whose checkpoints become outdated."""
        if self.max_keep_ckpts <= 0:
            return []
        ids = list(self.keep_ckpt_ids)  # a deque bounded by max_keep_ckpts
        if not ids or ids[-1] != step:
            ids.append(step)
        outdated = []
        while len(ids) > self.max_keep_ckpts:
            outdated.append(ids.pop(0))
        self.keep_ckpt_ids = deque(ids, self.max_keep_ckpts)
        runner.message_hub.update_info('keep_ckpt_ids', ids)
        return outdated


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed (None: it looks complete). A torch
    checkpoint is a zip archive whose index is written last, so a file cut
    short by a kill has none."""
    if not path:
        return 'no path'
    if not osp.isfile(path):
        return 'missing'
    if osp.getsize(path) == 0:
        return 'empty'
    try:
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith('data.pkl') for n in z.namelist()):
                return 'not a torch checkpoint'
    except (zipfile.BadZipFile, OSError) as e:
        return f'truncated or corrupt ({type(e).__name__}: {e})'
    return None


def check_checkpoint_file(path: str, key: str = 'checkpoint') -> None:
    """One clear error naming ``path`` if it cannot be loaded."""
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ValueError(f'{key} {path!r} cannot be loaded: {problem}. If a run was killed '
                         'while saving it, resume from the work dir (--resume without a '
                         'path) to take the newest complete checkpoint.')


def _step(path: str) -> Tuple[int, float]:
    m = re.search(r'(\d+)\.pth$', osp.basename(path))
    return (int(m.group(1)) if m else -1, osp.getmtime(path))


def find_resumable_checkpoint(work_dir: str) -> Tuple[Optional[str], str]:
    """``(path, why)``: the checkpoint to resume in ``work_dir`` and why that one.

    The file ``last_checkpoint`` names, if it is complete; else the newest
    complete ``*.pth`` of the work dir (by the step in its name, then its
    time); ``(None, why)`` when there is none.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    named = ''
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip()
        problem = checkpoint_problem(named) if named else 'last_checkpoint is empty'
        if problem is None:
            return named, f'last_checkpoint names {named}'
        why = f'last_checkpoint names {named!r}, which is {problem}' if named else problem
    else:
        why = 'no last_checkpoint file'
    candidates = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=_step, reverse=True)
    skipped = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            extra = f' (skipped: {"; ".join(skipped)})' if skipped else ''
            return path, f'{why}; took the newest complete checkpoint {path}{extra}'
        skipped.append(f'{osp.basename(path)} is {problem}')
    return None, f'{why}; no complete checkpoint in {work_dir}'
