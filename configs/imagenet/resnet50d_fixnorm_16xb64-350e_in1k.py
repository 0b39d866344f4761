# ResNet50-D, 350 epochs, FixNorm-tune (Table 2): top-1 79.29.
_base_ = ['./_base_/resnet50d.py', './_base_/cosine_350e.py', './_base_/fixnorm_sgd.py']
model = dict(head=dict(type='FixNormClsHead', alpha=0.5))
optim_wrapper = dict(optimizer=dict(lr=1.1))
