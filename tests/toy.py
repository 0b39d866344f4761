"""A tiny BN classifier and dataset for the core's Runner tests."""
import uuid

import torch
from mmengine.dataset import BaseDataset
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS
from mmengine.structures import BaseDataElement
from torch import nn

from fixnorm_mm.layers import FixNormLinear


@MODELS.register_module(force=True)
class ToyFixNormNet(BaseModel):
    """conv-BN-ReLU, conv-BN-ReLU, a plain conv, pooling, FixNorm-FC."""

    def __init__(self, num_classes=4, alpha=1.0, width=8, fixnorm_fc=True):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = FixNormLinear(width, num_classes, alpha=alpha) if fixnorm_fc \
            else nn.Linear(width, num_classes)

    def forward(self, inputs, data_samples=None, mode='tensor', **unused):
        logits = self.head(self.backbone(torch.stack(inputs) if isinstance(inputs, list) else inputs))
        if mode == 'loss':
            labels = torch.cat([d.gt_label for d in data_samples])
            return dict(loss=nn.functional.cross_entropy(logits, labels))
        if mode == 'predict':
            return [BaseDataElement(pred=l.argmax(), gt_label=d.gt_label)
                    for l, d in zip(logits, data_samples)]
        return logits


@DATASETS.register_module(force=True)
class ToyDataset(BaseDataset):
    def __init__(self, size=32, num_classes=4, seed=0, **kwargs):
        self.size, self.num_classes, self.seed = size, num_classes, seed
        super().__init__(serialize_data=False, lazy_init=False, **kwargs)

    def load_data_list(self):
        g = torch.Generator().manual_seed(self.seed)
        y = torch.randint(0, self.num_classes, (self.size,), generator=g)
        x = torch.randn(self.size, 3, 8, 8, generator=g) + y[:, None, None, None] * 0.5
        return [dict(inputs=x[i], data_samples=BaseDataElement(gt_label=y[i:i + 1]))
                for i in range(self.size)]


@METRICS.register_module(force=True)
class ToyAccuracy(BaseMetric):
    def process(self, data_batch, data_samples):
        # mmengine's evaluator hands over data samples converted to dicts
        self.results += [float(d['pred'] == d['gt_label'][0]) for d in data_samples]

    def compute_metrics(self, results):
        return dict(accuracy=sum(results) / len(results))


def runner_cfg(work_dir, max_iters=6, optim_wrapper=None, custom_hooks=(), **extra):
    loader = dict(dataset=dict(type='ToyDataset'), batch_size=4, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='pseudo_collate'))
    cfg = dict(
        model=dict(type='ToyFixNormNet'),
        work_dir=str(work_dir),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        optim_wrapper=optim_wrapper or dict(
            type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=0.5, momentum=0.9, nesterov=True)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(custom_hooks),
        randomness=dict(seed=0, deterministic=False),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        default_scope=None,
        log_level='INFO',
        # runners started within one second would share a logger (and its file)
        experiment_name=f'toy_{uuid.uuid4().hex[:8]}')
    cfg.update(extra)
    return cfg
