# MobileNetV2, 350 epochs, FixNorm-tune (Table 2): top-1 73.97.
_base_ = ['./_base_/mobilenet-v2.py', './_base_/cosine_350e.py', './_base_/fixnorm_sgd.py']
model = dict(head=dict(type='FixNormClsHead', alpha=8.0))
optim_wrapper = dict(optimizer=dict(lr=0.35))
