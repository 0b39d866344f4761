# ResNet50-D, 120 epochs, reference setting of He et al. 2019 (Table 1, Table 2
# ref.): top-1 78.37.
_base_ = ['./_base_/resnet50d.py', './_base_/cosine_120e.py', './_base_/wd_sgd.py']
optim_wrapper = dict(optimizer=dict(lr=0.4, weight_decay=0.0001))
