"""Several processes of :mod:`fixnorm_mm.tools.train` / ``.test``: torchrun and srun.

OpenMMLab's ``dist_train.sh`` / ``dist_test.sh`` / ``slurm_train.sh``, with
the same arguments and environment variables, as installed commands. Every
process runs the installed package's module (``torchrun -m`` /
``srun python -m``), so they work from any folder::

    fixnorm-dist-train CONFIG NPROC_PER_NODE [train args ...]
    fixnorm-dist-test CONFIG CHECKPOINT NPROC_PER_NODE [test args ...]
    [GPUS=8] [GPUS_PER_NODE=8] fixnorm-slurm-train PARTITION JOB_NAME CONFIG WORK_DIR \\
        [train args ...]

torchrun: multi-node with ``NNODES``, ``NODE_RANK``, ``MASTER_ADDR`` and
``PORT`` on every node. srun: ``GPUS`` tasks, ``GPUS_PER_NODE`` GPUs per node
(0 on CPU-only nodes, then ``NTASKS_PER_NODE`` tasks per node),
``CPUS_PER_TASK``, extra options in ``SRUN_ARGS``. ``PYTHON`` is the
interpreter of the processes (default: this one). Without a GPU the processes
use gloo (:mod:`fixnorm_mm.engine.launch`).

:func:`torchrun_command` and :func:`srun_command` are also what the sweep
(:mod:`fixnorm_mm.tuning.launcher`) starts its multi-process trials with.
"""
import os
import shlex
import sys
from typing import Dict, List, Optional, Sequence

TRAIN_MODULE = 'fixnorm_mm.tools.train'
TEST_MODULE = 'fixnorm_mm.tools.test'


def torchrun_command(module: str, args: Sequence[str], nproc: int, *, nnodes: int = 1,
                     node_rank: int = 0, master_addr: str = '127.0.0.1', port: int = 29500,
                     python: Optional[str] = None) -> List[str]:
    """argv of ``torchrun -m MODULE ARGS`` on ``nproc`` processes of this node;
    ``args`` must contain ``--launcher pytorch``."""
    return [python or sys.executable, '-m', 'torch.distributed.run',
            f'--nnodes={nnodes}', f'--node_rank={node_rank}', f'--master_addr={master_addr}',
            f'--nproc_per_node={nproc}', f'--master_port={port}',
            '-m', module, *args]


def srun_command(module: str, args: Sequence[str], *, partition: str, job_name: str,
                 ntasks: int, ntasks_per_node: int, gpus_per_node: int = 0,
                 cpus_per_task: int = 5, srun_args: Sequence[str] = (),
                 python: Optional[str] = None) -> List[str]:
    """argv of ``srun ... python -u -m MODULE ARGS`` (one task per process;
    ``--gres=gpu:N`` only when ``gpus_per_node > 0``); ``args`` must contain
    ``--launcher slurm``."""
    gres = [f'--gres=gpu:{gpus_per_node}'] if gpus_per_node > 0 else []
    return ['srun', '-p', partition, f'--job-name={job_name}', *gres,
            f'--ntasks={ntasks}', f'--ntasks-per-node={ntasks_per_node}',
            f'--cpus-per-task={cpus_per_task}', '--kill-on-bad-exit=1', *srun_args,
            python or sys.executable, '-u', '-m', module, *args]


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f'{name} must be an integer, got {value!r}') from None


def _env_int(env: Dict[str, str], name: str, default: int) -> int:
    return _int(f'environment variable {name}', env.get(name) or str(default))


def _usage(prog: str, usage: str, argv: Sequence[str], n: int) -> None:
    asked = bool(argv) and argv[0] in ('-h', '--help')
    if len(argv) < n or asked:
        env_help = __doc__.split('\n\n')[3]
        print(f'usage: {prog} {usage}\n\n{env_help}', file=sys.stdout if asked else sys.stderr)
        raise SystemExit(0 if asked else 2)


def _torchrun(module: str, script_args: List[str], nproc: str) -> List[str]:
    env = os.environ
    return torchrun_command(
        module, script_args, _int('NPROC_PER_NODE', nproc),
        nnodes=_env_int(env, 'NNODES', 1), node_rank=_env_int(env, 'NODE_RANK', 0),
        master_addr=env.get('MASTER_ADDR') or '127.0.0.1', port=_env_int(env, 'PORT', 29500),
        python=env.get('PYTHON'))


def dist_train_command(argv: Sequence[str]) -> List[str]:
    _usage('fixnorm-dist-train', 'CONFIG NPROC_PER_NODE [train args ...]', argv, 2)
    config, nproc, rest = argv[0], argv[1], list(argv[2:])
    return _torchrun(TRAIN_MODULE, [config, '--launcher', 'pytorch', *rest], nproc)


def dist_test_command(argv: Sequence[str]) -> List[str]:
    _usage('fixnorm-dist-test', 'CONFIG CHECKPOINT NPROC_PER_NODE [test args ...]', argv, 3)
    config, ckpt, nproc, rest = argv[0], argv[1], argv[2], list(argv[3:])
    return _torchrun(TEST_MODULE, [config, ckpt, '--launcher', 'pytorch', *rest], nproc)


def slurm_train_command(argv: Sequence[str]) -> List[str]:
    _usage('fixnorm-slurm-train', 'PARTITION JOB_NAME CONFIG WORK_DIR [train args ...]', argv, 4)
    partition, job, config, work_dir, rest = argv[0], argv[1], argv[2], argv[3], list(argv[4:])
    env = os.environ
    gpus_per_node = _env_int(env, 'GPUS_PER_NODE', 8)
    return srun_command(
        TRAIN_MODULE, [config, f'--work-dir={work_dir}', '--launcher=slurm', *rest],
        partition=partition, job_name=job, ntasks=_env_int(env, 'GPUS', 8),
        ntasks_per_node=_env_int(env, 'NTASKS_PER_NODE', gpus_per_node),
        gpus_per_node=gpus_per_node, cpus_per_task=_env_int(env, 'CPUS_PER_TASK', 5),
        srun_args=shlex.split(env.get('SRUN_ARGS', '')), python=env.get('PYTHON'))


def _exec(argv: List[str], echo: bool = False) -> None:
    if echo:
        print('+ ' + shlex.join(argv), file=sys.stderr, flush=True)
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        raise SystemExit(f'{argv[0]}: command not found') from None


def dist_train_main(argv: Optional[Sequence[str]] = None) -> None:
    _exec(dist_train_command(sys.argv[1:] if argv is None else argv))


def dist_test_main(argv: Optional[Sequence[str]] = None) -> None:
    _exec(dist_test_command(sys.argv[1:] if argv is None else argv))


def slurm_train_main(argv: Optional[Sequence[str]] = None) -> None:
    _exec(slurm_train_command(sys.argv[1:] if argv is None else argv), echo=True)


COMMANDS = {'train': dist_train_main, 'test': dist_test_main, 'slurm-train': slurm_train_main}

if __name__ == '__main__':
    # python -m fixnorm_mm.tools.dist {train,test,slurm-train} ARGS (the tools/*.sh wrappers)
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f'usage: python -m fixnorm_mm.tools.dist {{{",".join(COMMANDS)}}} ...')
    COMMANDS[sys.argv[1]](sys.argv[2:])
