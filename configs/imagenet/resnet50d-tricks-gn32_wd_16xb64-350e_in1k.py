# ResNet50-D* with GroupNorm (G=32), 350 epochs, lr and weight decay of
# ResNet50-D 120 (Table 5, ref. with dagger): top-1 80.31.
_base_ = ['./_base_/resnet50d-tricks-gn32.py', './_base_/cosine_350e.py', './_base_/wd_sgd.py']
optim_wrapper = dict(optimizer=dict(lr=0.4, weight_decay=0.0001))
