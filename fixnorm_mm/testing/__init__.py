"""Tiny generated datasets, small tasks and config shrinkers, for tests, tools,
experiments and benchmarks that need a real OpenMMLab Runner without the real
data. Import the module you need (registration happens on import, once):

* :mod:`fixnorm_mm.testing.toy`: the toy task (``ToyDataset``, ``ToyNet``,
  ``ToyAccuracy``, ``ToyNaNHook``, :func:`~fixnorm_mm.testing.toy.runner_cfg`)
  of the core tests and ``configs/toy``.
* :mod:`fixnorm_mm.testing.digits`: scikit-learn's real digits
  (``DigitsDataset``) and ``DigitsResNet``, for ``experiments/`` and
  ``tools/compare_methods.py``.
* :mod:`fixnorm_mm.testing.vit`: ``DigitsViT``, a small pre-norm ViT (the
  transformer tests and the digits-ViT experiments).

One module per OpenMMLab task, each with a generator and a shrinker of the
same shape (each imports its task package lazily):

* :mod:`fixnorm_mm.testing.classification`: ``make_imagenet_dataset`` (an
  ImageNet-style JPEG folder) and ``shrink_imagenet_config``.
* :mod:`fixnorm_mm.testing.detection`: ``make_coco_dataset`` (COCO json) and
  ``shrink_coco_config``.
* :mod:`fixnorm_mm.testing.segmentation`: ``make_cityscapes_dataset``
  (Cityscapes PNGs) and ``shrink_cityscapes_config``.

A shrinker returns a changed copy of the config (never edits it): the data
become the generated set, batches small, the schedule a few iterations with
the same shape, and the runtime CPU-friendly. See each module's docstring.
"""
