# MobileNetV2, 150 epochs, FixNorm-tune (Table 1, Table 2): top-1 73.20.
_base_ = ['./_base_/mobilenet-v2.py', './_base_/cosine_150e.py', './_base_/fixnorm_sgd.py']
model = dict(head=dict(type='FixNormClsHead', alpha=16.0))
optim_wrapper = dict(optimizer=dict(lr=0.5))
