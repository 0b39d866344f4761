# MobileNetV2, 350 epochs, lr and weight decay of the 150-epoch reference (Table
# 2, ref. with dagger): top-1 73.38.
_base_ = ['./_base_/mobilenet-v2.py', './_base_/cosine_350e.py', './_base_/wd_sgd.py']
optim_wrapper = dict(optimizer=dict(lr=0.2, weight_decay=4e-5))
