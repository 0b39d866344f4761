"""Model-zoo coverage: does FixNorm apply to stock upstream configs?

For each config name (``'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'``)
:func:`check_config` does what a user's three-line FixNorm config does, on
the CPU and without data or downloads:

1. load the stock config, drop pretrained weights (``init_cfg`` of type
   ``Pretrained``, ``pretrained=...``);
2. build the model through ``FixNormModel`` with ``final_layer='auto'``
   (:mod:`fixnorm_mm.convert`): the model is traced through its own loss
   path, the classifiers become FixNorm-FC/Conv, the convs/FCs no
   normalization follows become WN;
3. build the FixNorm optim wrapper (the config's optimizer, ``weight_decay=0``
   and a small lr), initialise the weights, and train a few iterations on
   the task's synthetic batches (:mod:`fixnorm_mm.tracing`) with
   ``model.train_step``, as the Runner does;
4. check after every step that the losses are finite and that the global
   norm of the fixed set is its reference (Algo 1).

``tools/zoo_check.py`` runs it over :data:`ZOO` and writes ``docs/zoo.md``'s
table. A model FixNorm does not apply to is *refused* (the conversion's
error is the reason); anything else that goes wrong *fails*.
"""
import copy
import math
import os.path as osp
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

#: (config, family, convolutional[, options of check_config]). The families:
#: mmpretrain CNN / transformer, mmdet one-stage, two-stage, cascade, instance
#: segmentation, mmseg. ``convolutional`` is False for transformer backbones
#: (FixNorm needs scale-invariant weights, which pre-norm transformers lack).
ZOO: List[tuple] = [
    ('mmpretrain::resnet/resnet18_8xb32_in1k.py', 'classification', True),
    ('mmpretrain::resnet/resnet50_8xb32_in1k.py', 'classification', True),
    ('mmpretrain::resnext/resnext50-32x4d_8xb32_in1k.py', 'classification', True),
    ('mmpretrain::seresnet/seresnet50_8xb32_in1k.py', 'classification', True),
    ('mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py', 'classification', True),
    ('mmpretrain::mobilenet_v3/mobilenet-v3-small-050_8xb128_in1k.py', 'classification', True),
    ('mmpretrain::efficientnet/efficientnet-b0_8xb32_in1k.py', 'classification', True),
    ('mmpretrain::regnet/regnetx-400mf_8xb128_in1k.py', 'classification', True),
    ('mmpretrain::shufflenet_v2/shufflenet-v2-1x_16xb64_in1k.py', 'classification', True),
    ('mmpretrain::vgg/vgg11bn_8xb32_in1k.py', 'classification', True),
    ('mmpretrain::convnext/convnext-tiny_32xb128_in1k.py', 'classification', True),
    ('mmpretrain::deit/deit-tiny_4xb256_in1k.py', 'classification (transformer)', False),
    ('mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
     'classification (transformer)', False),
    ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'detection, one-stage', True),
    ('mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', 'detection, one-stage', True),
    ('mmdet::atss/atss_r50_fpn_1x_coco.py', 'detection, one-stage', True),
    ('mmdet::gfl/gfl_r50_fpn_1x_coco.py', 'detection, one-stage', True),
    ('mmdet::tood/tood_r50_fpn_1x_coco.py', 'detection, one-stage', True),
    ('mmdet::rtmdet/rtmdet_tiny_8xb32-300e_coco.py', 'detection, one-stage', True),
    ('mmdet::yolox/yolox_tiny_8xb8-300e_coco.py', 'detection, one-stage', True),
    ('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', 'detection, two-stage', True),
    ('mmdet::faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py', 'detection, two-stage', True),
    ('mmdet::double_heads/dh-faster-rcnn_r50_fpn_1x_coco.py', 'detection, two-stage', True),
    ('mmdet::dynamic_rcnn/dynamic-rcnn_r50_fpn_1x_coco.py', 'detection, two-stage', True),
    ('mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py', 'detection, cascade', True),
    ('mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
     'instance segmentation, cascade', True),
    ('mmdet::htc/htc-without-semantic_r50_fpn_1x_coco.py',
     'instance segmentation, cascade', True),
    ('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'instance segmentation', True),
    ('mmdet::ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py', 'instance segmentation', True),
    ('mmdet::solov2/solov2_r50_fpn_1x_coco.py', 'instance segmentation', True),
    ('mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py', 'segmentation', True),
    ('mmseg::pspnet/pspnet_r50-d8_4xb2-40k_cityscapes-512x1024.py', 'segmentation', True),
    ('mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py', 'segmentation', True),
    ('mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-40k_cityscapes-512x1024.py',
     'segmentation', True),
    ('mmseg::upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py', 'segmentation', True),
    ('mmseg::ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py', 'segmentation', True),
    ('mmseg::bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py', 'segmentation', True),
    ('mmseg::fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py', 'segmentation', True),
    ('mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
     'segmentation (transformer)', False),
]

#: Query-based detectors (DETR and its descendants, Sparse R-CNN; family
#: 'detection, query-based') and YOLOv3 (one-stage), the last rows of :data:`ZOO`.
#: ``convolutional``: their backbones are ResNet / Darknet (the transformer is
#: neck and head). YOLOv3 is refused: its output convs mix box, objectness and
#: class channels.
ZOO_QUERY: List[tuple] = [
    ('mmdet::detr/detr_r50_8xb2-150e_coco.py', 'detection, query-based', True),
    ('mmdet::conditional_detr/conditional-detr_r50_8xb2-50e_coco.py',
     'detection, query-based', True),
    ('mmdet::dab_detr/dab-detr_r50_8xb2-50e_coco.py', 'detection, query-based', True),
    ('mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
     'detection, query-based', True),
    ('mmdet::deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py',
     'detection, query-based', True),
    ('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', 'detection, query-based', True),
    ('mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py', 'detection, query-based', True),
    ('mmdet::yolo/yolov3_d53_8xb8-320-273e_coco.py', 'detection, one-stage', True),
]
ZOO += ZOO_QUERY

#: The transformers and hybrids users train with AdamW: (config, family, method,
#: options of check_config). Each with FixNorm (FixNormModel: final_layer='auto',
#: and weight_norm='attention_mlp' where no layer feeds a norm) and with Hyperball
#: around the config's own optimizer (the stock model).
_TRANSFORMERS = [
    ('mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k.py', 'classification',
     dict(weight_norm='attention_mlp')),
    ('mmpretrain::deit/deit-tiny_4xb256_in1k.py', 'classification',
     dict(weight_norm='attention_mlp')),
    ('mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py', 'classification', {}),
    ('mmpretrain::convnext/convnext-tiny_32xb128_in1k.py', 'classification', {}),
    # PoolFormer's patch embeddings feed a block's GroupNorm *and* its shortcut: no
    # layer is scale-invariant as it is
    ('mmpretrain::poolformer/poolformer-s12_32xb128_in1k.py', 'classification',
     dict(weight_norm='attention_mlp')),
    ('mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py', 'segmentation', {}),
    ('mmseg::segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py', 'segmentation',
     dict(weight_norm='attention_mlp')),
    ('mmseg::knet/knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py', 'segmentation', {}),
    ('mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py', 'segmentation', {}),
    ('mmdet::detr/detr_r50_8xb2-150e_coco.py', 'detection, query-based', {}),
    ('mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
     'detection, query-based', {}),
]
ZOO_TRANSFORMERS: List[tuple] = [
    entry for name, family, fixnorm_options in _TRANSFORMERS
    for entry in ((name, family, 'fixnorm', fixnorm_options), (name, family, 'hyperball', {}))]

#: The subset the tests run (small models, one per task, plus a refusal).
CI_SUBSET = ('mmpretrain::resnet/resnet18_8xb32_in1k.py',
             'mmpretrain::deit/deit-tiny_4xb256_in1k.py')
#: The transformer rows the tests run: DeiT-tiny both ways.
CI_TRANSFORMERS = [e for e in ZOO_TRANSFORMERS if 'deit-tiny' in e[0]]


@dataclass
class ZooResult:
    """One row of the coverage table."""
    config: str
    family: str = ''
    convolutional: bool = True
    model: str = ''
    #: 'trains', 'refused' (FixNorm does not apply, with the reason) or 'failed'
    status: str = ''
    reason: str = ''
    final_layers: Dict[str, str] = field(default_factory=dict)
    weight_normalized: int = 0
    fixed_tensors: int = 0
    fixed_params: int = 0
    #: conv/linear layers left out because they feed a frozen-statistics norm
    frozen_statistics: int = 0
    reference_norm: float = float('nan')
    #: max over the steps of |norm - reference| / reference after the step
    max_relative_drift: float = float('nan')
    #: 'fixnorm' or 'hyperball'
    method: str = 'fixnorm'
    #: trainable parameters the method leaves to the optimizer: with weight
    #: decay > 0 (tensors, params), and with neither (tensors, params, why)
    decayed: List[int] = field(default_factory=lambda: [0, 0])
    free: List[int] = field(default_factory=lambda: [0, 0])
    free_reasons: Dict[str, int] = field(default_factory=dict)
    losses: List[float] = field(default_factory=list)
    seconds: float = 0.0
    #: the traceback of a failure
    details: str = ''


def load_config(name: str):
    """An mmengine ``Config`` from a path or an installed package's config
    (``'mmdet::faster_rcnn/...'``), without the metafile look-up (and the
    package installation) of ``mmengine.hub.get_config``."""
    from mmengine.config import Config
    if '::' in name:
        from mmengine.config.utils import _get_external_cfg_base_path, _get_package_and_cfg_path
        from mmengine.utils import get_installed_path
        package, rel = _get_package_and_cfg_path(name)
        path = _get_external_cfg_base_path(get_installed_path(package), rel)
        if not osp.isfile(path):
            raise FileNotFoundError(f'{name}: no such config ({path})')
        return Config.fromfile(path)
    return Config.fromfile(name)


def _without_pretrained(node):
    """No downloads: every ``init_cfg`` of type ``Pretrained`` and every
    ``pretrained=...`` becomes None (in place)."""
    if isinstance(node, dict):
        for key in list(node):
            value = node[key]
            if key == 'pretrained' and isinstance(value, str):
                node[key] = None
            elif key == 'init_cfg':
                cfgs = value if isinstance(value, (list, tuple)) else [value]
                if any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs):
                    node[key] = None
            else:
                _without_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _without_pretrained(v)


def _fewer_rois(node, most: int = 64) -> None:
    """RoI samplers draw at most ``most`` RoIs per image (512 in the stock
    configs): the RoI box head's FC on 512 RoIs dominates a CPU step, and
    coverage needs only some (in place)."""
    if isinstance(node, dict):
        sampler = node.get('sampler')
        if isinstance(sampler, dict) and isinstance(sampler.get('num'), int):
            sampler['num'] = min(sampler['num'], most)
        for v in node.values():
            _fewer_rois(v, most)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _fewer_rois(v, most)


def fixnorm_model_cfg(cfg, final_layer='auto', **fixnorm_keys) -> dict:
    """The ``FixNormModel`` version of ``cfg.model`` (what the user's
    ``model = dict(type='FixNormModel', model_type=..., final_layer=...)``
    gives), with no pretrained weights, at most 64 sampled RoIs per image,
    and the config's ``data_preprocessor`` merged in as the Runner merges it."""
    model = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    _without_pretrained(model)
    _fewer_rois(model)
    model_type = model.pop('type')
    return dict(type='FixNormModel', model_type=model_type, final_layer=final_layer,
                **fixnorm_keys, **model)


def fixnorm_optim_wrapper_cfg(cfg, lr: float, norm_control: Optional[dict] = None) -> dict:
    """The config's optimizer (type, momentum, betas, weight decay, ...) with
    ``lr``, its ``paramwise_cfg`` and ``clip_grad``, in the norm-control optim
    wrapper: the method takes over the weight decay of what it controls and
    the rest keeps the config's, as the three-line recipe does."""
    old = cfg.get('optim_wrapper') or {}
    optimizer = dict(copy.deepcopy(old.get('optimizer') or dict(type='SGD', momentum=0.9)))
    optimizer['lr'] = lr
    out = dict(type='OptimWrapper', constructor='NormControlOptimWrapperConstructor',
               optimizer=optimizer, norm_control=norm_control or dict(type='FixNorm'))
    for key in ('clip_grad', 'paramwise_cfg'):
        if old.get(key):
            out[key] = copy.deepcopy(old[key])
    return out


def hyperball_control(cfg, lr: float) -> dict:
    """``norm_control`` of Hyperball for ``cfg`` trained at ``lr``: the angular
    lr as ``--method hyperball`` derives it (sqrt(lr x weight decay))."""
    from .norm_control.hyperball import HyperballController
    control = dict(type='Hyperball')
    optimizer = dict((cfg.get('optim_wrapper') or {}).get('optimizer') or {}, lr=lr)
    HyperballController.adapt_to_config(control, optimizer)
    return control


def _controller(optim_wrapper):
    """The FixNorm state of the wrapper: its selection and fixer."""
    return optim_wrapper.norm_control


def check_config(name: str, family: str = '', convolutional: bool = True, iters: int = 3,
                 lr: float = 1e-3, image_size: Optional[int] = None, batch_size: int = 2,
                 alpha: float = 1.0, method: str = 'fixnorm', **fixnorm_keys) -> ZooResult:
    """Train ``name`` ``iters`` iterations on synthetic batches with ``method``:
    ``'fixnorm'`` converts it with ``FixNormModel(final_layer='auto')``
    (``fixnorm_keys``: more FixNormModel keys); ``'hyperball'`` keeps the stock
    model and puts Hyperball around its optimizer. See the module docstring."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope

    from .convert import FIXNORM_MODEL_KEYS, build_and_convert
    from .tracing import find_task
    from .tracing.base import trace_loss, training_progress

    row = ZooResult(config=name, family=family, convolutional=convolutional, method=method)
    start = time.time()
    try:
        if method not in ('fixnorm', 'hyperball'):
            raise ValueError(f"method must be 'fixnorm' or 'hyperball', got {method!r}")
        cfg = load_config(name)
        init_default_scope(cfg.get('default_scope', 'mmengine'))
        if image_size:
            fixnorm_keys.setdefault('trace_input_shape', (3, image_size, image_size))
        mcfg = fixnorm_model_cfg(cfg, alpha=alpha, **fixnorm_keys)
        mcfg.pop('type')
        row.model = mcfg['model_type']
        torch.manual_seed(0)
        if method == 'hyperball':
            model_type = mcfg.pop('model_type')
            for key in FIXNORM_MODEL_KEYS:
                mcfg.pop(key, None)
            model = MODELS.build(dict(type=model_type, **mcfg))
            task = find_task(model)
            shape = fixnorm_keys.get('trace_input_shape')
            size = trace_loss(model, task, None if shape is None else shape[-2:]).image_size
            control = hyperball_control(cfg, lr)
        else:
            try:  # what FixNormModel does, with the Conversion returned
                model, conversion = build_and_convert(**mcfg)
            except ValueError as e:
                if not str(e).startswith('FixNormModel:'):
                    raise
                row.status, row.reason = 'refused', str(e)
                return row
            row.final_layers = dict(conversion.final_rules)
            row.weight_normalized = len(conversion.weight_normalized)
            row.frozen_statistics = len(conversion.frozen_statistics)
            task = find_task(model)
            if conversion.trace is not None:
                size = conversion.trace.image_size  # the size the model took
            else:  # weight_norm patterns or a preset: no trace yet
                shape = fixnorm_keys.get('trace_input_shape')
                size = trace_loss(model, task, None if shape is None else shape[-2:]).image_size
            control = dict(type='FixNorm')
        task.for_small_batches(model, size)
        optim_wrapper = build_optim_wrapper(model, fixnorm_optim_wrapper_cfg(cfg, lr, control))
        model.init_weights()
        model.train()
        drift = 0.0
        for i in range(iters):
            batch = task.batch(model, size, batch_size=batch_size, seed=i + 1)
            with training_progress():
                log_vars = model.train_step(batch, optim_wrapper)
            row.losses.append(float(log_vars['loss'].detach()))
            drift = max(drift, _drift(optim_wrapper.norm_control))
        ctrl = optim_wrapper.norm_control
        controlled = _controlled(ctrl)
        row.fixed_tensors = len(controlled)
        row.fixed_params = sum(p.numel() for p in controlled.values())
        row.reference_norm = _reference_norm(ctrl)
        row.max_relative_drift = drift
        _left_to_the_optimizer(row, model, ctrl, controlled)
        if not all(math.isfinite(v) for v in row.losses):
            row.status, row.reason = 'failed', f'non-finite loss: {row.losses}'
        elif drift > 1e-5:
            row.status, row.reason = 'failed', f'the controlled norm moved by {drift:.2e}'
        else:
            row.status = 'trains'
    except Exception as e:  # a coverage table reports every failure, whatever it is
        row.status = 'failed'
        row.reason = f'{type(e).__name__}: {e}'.strip()
        row.details = traceback.format_exc()
    finally:
        row.seconds = time.time() - start
    return row


def _controlled(ctrl) -> Dict[str, torch.Tensor]:
    if getattr(ctrl, 'ball', None) is not None:
        return dict(zip(ctrl.ball.names, ctrl.ball.params))
    return {n: p for named in ctrl.selection.groups.values() for n, p in named.items()}


def _drift(ctrl) -> float:
    """The largest relative distance of a controlled norm from its reference."""
    if getattr(ctrl, 'ball', None) is not None:
        return float(((ctrl.ball.norms() - ctrl.ball.radii).abs() / ctrl.ball.radii).max())
    norms, refs = ctrl.fixer.norms(), ctrl.fixer.reference_norms
    return max(float(((norms[g] - refs[g]).abs() / refs[g]).max()) for g in refs)


def _reference_norm(ctrl) -> float:
    if getattr(ctrl, 'ball', None) is not None:
        return float(ctrl.ball.radii.norm())
    return float(torch.stack([v.float().norm() for v in ctrl.fixer.reference_norms.values()])
                 .norm())


def _left_to_the_optimizer(row: ZooResult, model, ctrl, controlled) -> None:
    """What the method does not control: with the config's weight decay, or
    with neither (counted by why), biases, norms and gains aside."""
    from .norm_control import table
    from .norm_control.selection import unwrap
    model = unwrap(model)
    decay = ctrl.decay_of()
    never = set(table.never_controlled(model))
    free = {n: why for n, _, why in table.uncontrolled(model, list(controlled), [], decay)}
    for n, p in model.named_parameters():
        if n in controlled or n in never or not p.requires_grad or id(p) not in decay:
            continue
        if n in free:
            row.free[0] += 1
            row.free[1] += p.numel()
            # a token / position table by its name, weights left out by the method as such
            what = n.rpartition('.')[2] if free[n] == table.OTHER_PARAMETER else 'weights'
            row.free_reasons[what] = row.free_reasons.get(what, 0) + 1
        elif decay[id(p)] > 0:
            row.decayed[0] += 1
            row.decayed[1] += p.numel()


def check_configs(entries: Sequence, log=print, **kwargs) -> List[ZooResult]:
    """:func:`check_config` for each entry: a name, or a ``(name, family,
    convolutional[, options])`` tuple like :data:`ZOO`'s (``options`` are
    keyword arguments of :func:`check_config` for that config; ``kwargs``
    whose value is None leave them as they are)."""
    known = {e[0]: e for e in ZOO}
    if entries and isinstance(entries[0], tuple) and len(entries[0]) == 4 \
            and entries[0][2] in ('fixnorm', 'hyperball'):  # ZOO_TRANSFORMERS rows
        entries = [(n, fam, False, dict(opts, method=m)) for n, fam, m, opts in entries]
    given = {k: v for k, v in kwargs.items() if v is not None}
    rows = []
    for entry in entries:
        if isinstance(entry, str):
            entry = known.get(entry, (entry, '', True))
        name, family, conv, options = (*entry, {})[:4]
        row = check_config(name, family, conv, **{**options, **given})
        log(f'{row.status:8s} {row.seconds:6.1f}s  {name} ({row.method})'
            + (f'  -- {row.reason[:200]}' if row.reason else ''))
        rows.append(row)
    return rows


def summary(rows: Sequence[ZooResult]) -> dict:
    conv = [r for r in rows if r.convolutional]
    return dict(configs=len(rows), trains=sum(r.status == 'trains' for r in rows),
                refused=sum(r.status == 'refused' for r in rows),
                failed=sum(r.status == 'failed' for r in rows),
                convolutional=len(conv),
                convolutional_trains=sum(r.status == 'trains' for r in conv))


def _short_reason(reason: str, limit: int = 400) -> str:
    reason = ' '.join(reason.split()).replace('|', '/')
    return reason if len(reason) <= limit else reason[:limit - 3] + '...'


def format_markdown(rows: Sequence[ZooResult]) -> str:
    """The coverage table (markdown), then the refusals and failures with
    their reasons."""
    s = summary(rows)
    lines = [f'{s["configs"]} configs: {s["trains"]} convert and train, {s["refused"]} '
             f'refused, {s["failed"]} failed; of the {s["convolutional"]} convolutional ones, '
             f'{s["convolutional_trains"]} convert and train.', '',
             '| config | family | model | result | final layers (FixNorm) | WN layers | '
             'fixed set: tensors / params | left out (frozen BN) | max norm drift |',
             '|---|---|---|---|---|---:|---:|---:|---:|']
    for r in rows:
        finals = ', '.join(f'`{n}`' for n in r.final_layers) or '-'
        ok = r.status == 'trains'
        lines.append(
            f'| `{r.config}` | {r.family} | {r.model} | {r.status} | {finals} | '
            f'{r.weight_normalized if r.final_layers else "-"} | '
            + (f'{r.fixed_tensors} / {r.fixed_params:,}' if ok else '-') + ' | '
            + (str(r.frozen_statistics) if r.final_layers else '-') + ' | '
            + (f'{r.max_relative_drift:.1e}' if ok else '-') + ' |')
    others = [r for r in rows if r.status != 'trains']
    if others:
        lines += ['', 'Refusals and failures:', '']
        for r in others:
            lines.append(f'- `{r.config}` ({r.status}): {_short_reason(r.reason)}')
    rules = {}
    for r in rows:
        for n, rule in r.final_layers.items():
            rules.setdefault(rule.split(' (')[0], n)
    if rules:
        lines += ['', 'Rules that chose the final layers (one example each):', '']
        lines += [f'- {rule}: e.g. `{n}`' for rule, n in rules.items()]
    return '\n'.join(lines)


def _count(pair) -> str:
    return f'{pair[0]} / {pair[1]:,}'


def format_transformers_markdown(rows: Sequence[ZooResult]) -> str:
    """The transformer table: each config with each method, what the method
    controls (FixNorm's fixed set / Hyperball's matrices), and what it leaves
    to the optimizer, with weight decay and with neither."""
    ok = [r for r in rows if r.status == 'trains']
    lines = [f'{len(rows)} runs ({len({r.config for r in rows})} configs x FixNorm / Hyperball): '
             f'{len(ok)} train, {sum(r.status == "refused" for r in rows)} refused, '
             f'{sum(r.status == "failed" for r in rows)} failed.', '',
             '| config | family | model | method | result | controlled: tensors / params | '
             'left to the optimizer, with weight decay | with neither: tensors / params '
             '(what) | max norm drift |',
             '|---|---|---|---|---|---:|---:|---|---:|']
    for r in rows:
        good = r.status == 'trains'
        if r.method == 'fixnorm':
            how = 'FixNorm' + (f' (WN: {r.weight_normalized})' if r.final_layers else '')
        else:
            how = 'Hyperball'
        what = ', '.join(f'{k} {v}' for k, v in sorted(r.free_reasons.items(),
                                                      key=lambda kv: -kv[1])[:4])
        lines.append(
            f'| `{r.config}` | {r.family} | {r.model} | {how} | {r.status} | '
            + (f'{r.fixed_tensors} / {r.fixed_params:,} | {_count(r.decayed)} | '
               f'{_count(r.free)}' + (f' ({what})' if what else '') + ' | '
               f'{r.max_relative_drift:.1e} |' if good else '- | - | - | - |'))
    others = [r for r in rows if r.status != 'trains']
    if others:
        lines += ['', 'Refusals and failures:', '']
        for r in others:
            lines.append(f'- `{r.config}` ({r.method}, {r.status}): {_short_reason(r.reason)}')
    return '\n'.join(lines)


TABLE_BEGIN, TABLE_END = '<!-- zoo-table -->', '<!-- /zoo-table -->'
#: markers of the transformer table (:func:`format_transformers_markdown`)
TRANSFORMERS_BEGIN, TRANSFORMERS_END = '<!-- zoo-transformers -->', '<!-- /zoo-transformers -->'


def update_doc(path: str, table: str, begin: str = TABLE_BEGIN, end: str = TABLE_END) -> None:
    """Put ``table`` between the ``begin`` / ``end`` markers of ``path``
    (default: ``<!-- zoo-table -->``)."""
    with open(path) as f:
        doc = f.read()
    if begin not in doc or end not in doc:
        raise ValueError(f'{path} has no {begin} ... {end} markers')
    doc = re.sub(re.escape(begin) + '.*?' + re.escape(end),
                 lambda _: f'{begin}\n{table}\n{end}', doc, flags=re.S)
    with open(path, 'w') as f:
        f.write(doc)


def to_json(rows: Sequence[ZooResult]) -> List[dict]:
    return [{k: v for k, v in asdict(r).items()} for r in rows]
