# MobileNetV2x1.12*, 350 epochs, lr and weight decay of MobileNetV2 150 (Table
# 2, ref. with dagger): top-1 76.72.
_base_ = ['./_base_/mobilenet-v2-x1.12-tricks.py', './_base_/cosine_350e.py', './_base_/wd_sgd.py']
optim_wrapper = dict(optimizer=dict(lr=0.2, weight_decay=4e-5))
