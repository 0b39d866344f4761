# MobileNetV2, 150 epochs, lr and weight decay found by Bayesian Optimization
# (Table 1, BO+WD): top-1 72.84.
_base_ = ['./_base_/mobilenet-v2.py', './_base_/cosine_150e.py', './_base_/wd_sgd.py']
optim_wrapper = dict(optimizer=dict(lr=0.64, weight_decay=2.2e-5))
