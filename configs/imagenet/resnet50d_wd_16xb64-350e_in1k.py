# ResNet50-D, 350 epochs, lr and weight decay of the 120-epoch reference (Table
# 2, ref. with dagger): top-1 79.04.
_base_ = ['./_base_/resnet50d.py', './_base_/cosine_350e.py', './_base_/wd_sgd.py']
optim_wrapper = dict(optimizer=dict(lr=0.4, weight_decay=0.0001))
