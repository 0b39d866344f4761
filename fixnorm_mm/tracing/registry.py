"""The registry of the tasks the conversion knows (``fixnorm_mm`` scope).

A task (detection, segmentation, classification, or one of a user's own)
tells :func:`fixnorm_mm.convert.convert_to_fixnorm` how to run a model of
its kind the way training runs it (a synthetic batch through the model's own
loss path) and which layers of its heads are the classifiers. Register a new
one with ``@TRACING_TASKS.register_module('my_task')`` on a subclass of
:class:`fixnorm_mm.tracing.TaskTracing`.
"""
from mmengine.registry import Registry

TRACING_TASKS = Registry('tracing task', scope='fixnorm_mm',
                         locations=['fixnorm_mm.tracing'])
