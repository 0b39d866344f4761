# ResNet50-D, 120 epochs, FixNorm-tune (Table 1, Table 2): top-1 78.62.
_base_ = ['./_base_/resnet50d.py', './_base_/cosine_120e.py', './_base_/fixnorm_sgd.py']
model = dict(head=dict(type='FixNormClsHead', alpha=0.5))
optim_wrapper = dict(optimizer=dict(lr=1.4))
