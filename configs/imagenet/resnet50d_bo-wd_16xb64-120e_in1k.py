# ResNet50-D, 120 epochs, lr and weight decay found by Bayesian Optimization
# (Table 1, BO+WD): top-1 78.53.
_base_ = ['./_base_/resnet50d.py', './_base_/cosine_120e.py', './_base_/wd_sgd.py']
optim_wrapper = dict(optimizer=dict(lr=0.53, weight_decay=8.6e-5))
