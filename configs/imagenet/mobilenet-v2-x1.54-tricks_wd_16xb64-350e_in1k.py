# MobileNetV2x1.54*, 350 epochs, lr and weight decay of MobileNetV2 150 (Table
# 2, ref. with dagger): top-1 78.75.
_base_ = ['./_base_/mobilenet-v2-x1.54-tricks.py', './_base_/cosine_350e.py', './_base_/wd_sgd.py']
optim_wrapper = dict(optimizer=dict(lr=0.2, weight_decay=4e-5))
