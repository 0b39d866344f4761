"""Tiny generated datasets and config shrinkers, for tests, tools and
benchmarks that need a real OpenMMLab Runner without the real data.

One module per task, each with a generator and a shrinker of the same shape
(import the one you need; each imports its task package lazily):

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
