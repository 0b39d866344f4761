"""mmdet detectors: images with boxes, labels and (for mask heads) masks."""
import re
from typing import Dict, Tuple

import numpy as np
import torch
from torch import nn

from .base import TaskTracing, is_instance, loaded_class, out_features, weight_layers
from ..registry import TRACING_TASKS

#: attribute names that hold proposal generators, not the detector's classifier
PROPOSAL_HEADS = ('rpn_head',)


def _num_classes(model: nn.Module) -> int:
    for name, m in model.named_modules():
        n = getattr(m, 'num_classes', None)
        if isinstance(n, int) and n > 0 and name.split('.')[0] not in PROPOSAL_HEADS:
            return n
    return 1


def _with_mask(model: nn.Module) -> bool:
    roi_head = getattr(model, 'roi_head', None)
    return bool(getattr(roi_head, 'with_mask', False)) or hasattr(model, 'mask_head')


def _with_semantic(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, 'roi_head', None), 'with_semantic', False))


def _attribute(name: str) -> str:
    """The last non-index part of a module name: 'rtm_cls.2' -> 'rtm_cls'."""
    parts = [p for p in name.split('.') if not p.isdigit()]
    return parts[-1] if parts else ''


@TRACING_TASKS.register_module('detection')
class DetectionTracing(TaskTracing):
    """Any mmdet detector: one-stage, two-stage, cascade, instance segmentation.

    The batch has 1-3 boxes per image (sides 20-60% of the image), labels
    in ``[0, num_classes)``, and, when the detector has a mask head, the
    boxes' filled masks (``BitmapMasks``); HTC's semantic head gets a label
    map. Its loss path runs the RPN, the RoI sampler, every cascade stage and
    the mask head, which a ``forward(x)`` never reaches.
    """
    task = 'detection'
    ground_truth = 'boxes and labels'
    default_image_size = 128
    #: DINO ranks the encoder's 16x16 + 8x8 + 4x4 + 2x2 tokens of a 128x128
    #: image to pick its 900 queries: too few
    fallback_image_size = 256

    def accepts(self, model: nn.Module) -> bool:
        return is_instance(model, loaded_class('mmdet.models.detectors', 'BaseDetector'))

    def for_small_batches(self, model: nn.Module, image_size: Tuple[int, int]) -> None:
        # YOLOX / RTMDet resize every batch to 480-800 px (BatchSyncRandomResize)
        pre = getattr(model, 'data_preprocessor', None)
        if getattr(pre, 'batch_augments', None) is not None:
            pre.batch_augments = None
        # Sparse R-CNN's learned proposals become whole-image boxes in
        # init_weights (constants); before it, when the model is traced, they
        # are nn.Embedding's N(0, 1) draws: boxes of negative size, which
        # RoIAlign rejects
        embedding_rpn = loaded_class('mmdet.models.dense_heads', 'EmbeddingRPNHead')
        for m in model.modules():
            if is_instance(m, embedding_rpn):
                m.init_weights()
        # Deformable DETR and DINO allocate level_embed uninitialised
        # (torch.Tensor) and draw it in init_weights: traced before, it holds
        # whatever the memory held, NaN at times
        level_embed = getattr(model, 'level_embed', None)
        if isinstance(level_embed, nn.Parameter):
            with torch.no_grad():
                level_embed.normal_(generator=self.generator(0))

    def ground_truth_of(self, model: nn.Module) -> str:
        parts = ['boxes', 'labels'] + [w for w, has in (('masks', _with_mask(model)),
                                                        ('label maps', _with_semantic(model)))
                                       if has]
        return ', '.join(parts[:-1]) + ' and ' + parts[-1]

    def batch(self, model: nn.Module, image_size: Tuple[int, int],
              batch_size: int = 2, seed: int = 0) -> dict:
        from mmdet.structures import DetDataSample
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData, PixelData
        g = self.generator(seed)
        h, w = image_size
        classes = _num_classes(model)
        inputs = self.random_images(g, batch_size, image_size)
        samples = []
        for i in range(batch_size):
            k = int(torch.randint(1, 4, (), generator=g))
            wh = (0.2 + 0.4 * torch.rand(k, 2, generator=g)) * torch.tensor([w, h])
            xy = torch.rand(k, 2, generator=g) * (torch.tensor([w, h]) - wh)
            boxes = torch.cat([xy, xy + wh], 1).floor()
            gt = InstanceData(bboxes=boxes,
                              labels=torch.randint(0, classes, (k,), generator=g))
            if _with_mask(model):
                masks = np.zeros((k, h, w), dtype=np.uint8)
                for j, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                    masks[j, y0:y1, x0:x1] = 1
                gt.masks = BitmapMasks(masks, h, w)
            sample = DetDataSample(metainfo=self.image_meta(i, image_size))
            sample.gt_instances = gt
            if _with_semantic(model):
                sample.gt_sem_seg = PixelData(
                    sem_seg=torch.randint(0, classes, (1, h, w), generator=g))
            samples.append(sample)
        return dict(inputs=inputs, data_samples=samples)

    def final_layers(self, model: nn.Module) -> Dict[str, str]:
        """The class-score layers of the dense heads (one-stage detectors), of
        every RoI box head (each cascade stage, each Sparse R-CNN stage) and of
        the query-based heads (DETR and its descendants, :func:`_query_head_layers`):
        a conv/linear whose name says ``cls`` and whose outputs are a multiple
        of the head's class channels. Not chosen: the RPN's objectness
        (``rpn_head``: it ranks proposals, the RoI head classifies them), the
        class-agnostic proposal scores of two-stage Deformable DETR's encoder,
        regression, centerness, objectness and mask-logit layers. A YOLOv3 head,
        whose output convs mix box, objectness and class channels, is refused
        (:func:`_refuse_mixed_outputs`)."""
        dense = loaded_class('mmdet.models.dense_heads.base_dense_head', 'BaseDenseHead')
        roi_box = loaded_class('mmdet.models.roi_heads.bbox_heads', 'BBoxHead')
        mask_base = loaded_class('mmdet.models.dense_heads.base_mask_head', 'BaseMaskHead')
        query = loaded_class('mmdet.models.dense_heads', 'DETRHead')
        mixed = loaded_class('mmdet.models.dense_heads', 'YOLOV3Head')
        found: Dict[str, str] = {}
        for head_name, head in model.named_modules():
            if head_name.split('.')[0] in PROPOSAL_HEADS:
                continue
            if is_instance(head, mixed):
                raise _refuse_mixed_outputs(head_name, head)
            if is_instance(head, query):
                found.update(_query_head_layers(head_name, head))
                continue
            if is_instance(head, roi_box):
                classes = head.num_classes
                channels = {classes, classes + 1}
                what = None
            elif is_instance(head, dense, mask_base):
                per = getattr(head, 'cls_out_channels', None) or head.num_classes
                channels = None
                what = f'a multiple of its {per} class channels'
            else:
                continue
            for sub, layer in weight_layers(head):
                attr = _attribute(sub)
                if not (re.search(r'(^|_)cls$', attr) or attr == 'cls_branches'):
                    continue
                n = out_features(layer)
                if (channels is not None and n in channels) or \
                        (channels is None and n % per == 0):
                    found[f'{head_name}.{sub}'] = (
                        f'class scores of {type(head).__name__} ({n} outputs: '
                        f'{what or _classes(n, classes, "background")})')
        return found


def _classes(outputs: int, num_classes: int, extra: str) -> str:
    """'80 classes + background' (softmax over num_classes + 1) or '80
    classes' (one sigmoid each)."""
    return f'{num_classes} classes' + (f' + {extra}' if outputs == num_classes + 1 else '')


def _indices(idx) -> str:
    """[0, 1, 2, 3] -> '0-3', [6] -> '6'."""
    idx = list(idx)
    if len(idx) > 1 and idx == list(range(idx[0], idx[-1] + 1)):
        return f'{idx[0]}-{idx[-1]}'
    return ','.join(map(str, idx))


def _query_head_layers(head_name: str, head: nn.Module) -> Dict[str, str]:
    """The class logits of a query-based head (mmdet's ``DETRHead`` and its
    subclasses), each a Linear with ``cls_out_channels`` outputs (num_classes
    + 1 with the softmax and its no-object class, num_classes with sigmoids):

    * ``fc_cls`` (DETR, Conditional DETR, DAB-DETR): one Linear applied to the
      output of every decoder layer;
    * ``cls_branches.<i>`` (Deformable DETR, DINO): one per decoder layer,
      and with ``as_two_stage`` one more, last, for the encoder's proposals.
      Without ``with_box_refine`` one Linear is shared by all of them: it
      appears once in ``named_modules()``, under its first index, and is
      converted once (:func:`fixnorm_mm.convert._replace` replaces every
      reference). The encoder's own Linear (``with_box_refine`` and
      ``as_two_stage``) is a class classifier in DINO (its proposals are
      ranked by, and trained on, the class scores) but not in Deformable
      DETR: there only channel 0 is read and it is trained with every label
      set to 0, a class-agnostic proposal score like the RPN's ``rpn_cls``,
      so it is not chosen (no normalization follows it: it becomes WN).
    """
    per, classes = head.cls_out_channels, head.num_classes
    kind = type(head).__name__
    what = f'{per} outputs: {_classes(per, classes, "no-object")}'

    def is_classifier(layer) -> bool:
        return isinstance(layer, nn.Linear) and out_features(layer) == per

    found: Dict[str, str] = {}
    fc_cls = getattr(head, 'fc_cls', None)
    if is_classifier(fc_cls):
        found[f'{head_name}.fc_cls'] = (f'class scores of {kind} (fc_cls, applied to every '
                                        f'decoder layer; {what})')
    branches = getattr(head, 'cls_branches', None)
    if not isinstance(branches, nn.ModuleList):
        return found
    two_stage = bool(getattr(head, 'as_two_stage', False))
    decoder_layers = len(branches) - two_stage
    encoder_classifies = is_instance(head, loaded_class('mmdet.models.dense_heads', 'DINOHead'))
    shared: Dict[int, list] = {}  # one entry per Linear, with the indices it sits at
    for i, layer in enumerate(branches):
        shared.setdefault(id(layer), [layer, []])[1].append(i)
    for layer, idx in shared.values():
        if not is_classifier(layer):
            continue
        dec = [i for i in idx if i < decoder_layers]
        enc = [i for i in idx if i >= decoder_layers]
        if not dec and not encoder_classifies:
            continue  # Deformable DETR's class-agnostic encoder proposals
        roles = []
        if dec:
            roles.append(f'decoder layer {dec[0]}' if len(dec) == 1 else
                         f'the {len(dec)} decoder layers')
        if enc:
            roles.append("the encoder's proposals" + (
                ', ranked by and trained on the class scores' if encoder_classifies else
                ' (class-agnostic there: channel 0, labels set to 0)'))
        where = (f'one Linear shared as cls_branches.{_indices(idx)} by ' if len(idx) > 1
                 else f'cls_branches.{idx[0]}: ') + ' and '.join(roles)
        found[f'{head_name}.cls_branches.{idx[0]}'] = f'class scores of {kind} ({where}; {what})'
    return found


def _refuse_mixed_outputs(head_name: str, head: nn.Module) -> ValueError:
    """YOLOv3: each output conv predicts, per anchor, 4 box offsets, 1
    objectness score and the class scores."""
    convs = [f'{head_name}.convs_pred.{i}' for i in range(len(head.convs_pred))]
    anchors, attrib = head.num_base_priors, head.num_attrib
    return ValueError(
        f"FixNormModel: final_layer='auto' does not apply to {type(head).__name__} "
        f'({head_name}): each of its output convs ({", ".join(convs)}) predicts, for each '
        f'of its {anchors} anchors, 4 box offsets, 1 objectness score and '
        f'{head.num_classes} class scores ({anchors} x {attrib} = {anchors * attrib} '
        'channels in one conv). FixNorm-Conv (Eq. 29) divides the whole weight by one norm '
        'and caps one gain at alpha * sqrt(C_out) for all of them, so it would cap the box '
        'and objectness channels together with the class channels, which are the only ones '
        'with a cross-boundary risk (Sec. 2.3). Either set model.final_layer to these convs '
        f'by name, final_layer={convs}, to accept that one cap on all '
        f'{anchors * attrib} channels, or give the head a separate conv for the class '
        'channels (a subclass of the head) and name that one in final_layer.')
