"""The command-line tools, installed as console commands with the package.

* ``fixnorm-train``: :mod:`fixnorm_mm.tools.train` (``tools/train.py``)
* ``fixnorm-test``: :mod:`fixnorm_mm.tools.test` (``tools/test.py``)
* ``fixnorm-dist-train``, ``fixnorm-dist-test``, ``fixnorm-slurm-train``:
  :mod:`fixnorm_mm.tools.dist`, torchrun / srun (``tools/dist_train.sh``,
  ``tools/dist_test.sh``, ``tools/slurm_train.sh``)
* ``fixnorm-tune``: :mod:`fixnorm_mm.tools.tune` (``tools/fixnorm_tune.py``)
* ``fixnorm-fold``: :mod:`fixnorm_mm.tools.fold` (``tools/fold_fixnorm.py``)
* ``fixnorm-compare``: :mod:`fixnorm_mm.tools.compare_methods` (``tools/compare_methods.py``)
* ``fixnorm-config``: :mod:`fixnorm_mm.tools.configs` (the provided configs: the list, the
  lines that inherit one with any tool, their paths)

In parentheses: the repository's thin wrapper of the same code.

Every module also runs as ``python -m fixnorm_mm.tools.<name>``, which is how
the sweep and the distributed launchers start their processes: through the
installed package, never through a path into a source tree. The installed
package also carries ``.mim/tools/{train,test}.py`` for ``mim train fixnorm_mm``
/ ``mim test fixnorm_mm``. Config arguments are paths or ``fixnorm_mm::<path>``.

Importing this package imports nothing; each tool imports what it needs.
"""
