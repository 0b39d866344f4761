"""Run a model the way training runs it, on a synthetic batch.

``FixNormModel`` weight-normalizes the convs and FCs that no normalization
follows (App. D.3). What follows a layer is seen by running the model, and a
detector's RPN, RoI heads, cascade stages and mask head only run in its loss
path, with ground truth. Each task here supplies a batch maker (images with
boxes, labels and masks; label maps; class labels), the changes that let the
model take a small batch as it is, and the rule that finds the classification
layers of its heads (``final_layer='auto'``). Tasks live in
:data:`TRACING_TASKS`; a model type that none accepts is refused with the way
out (``trace_input_shape`` or ``weight_norm=[patterns]``).
"""
from .base import TaskTracing, find_task, trace_loss, trace_tensor_forward
from ..registry import TRACING_TASKS
from . import classification, detection, segmentation  # noqa: F401,E402  (register)

__all__ = ['TRACING_TASKS', 'TaskTracing', 'find_task', 'trace_loss',
           'trace_tensor_forward']
