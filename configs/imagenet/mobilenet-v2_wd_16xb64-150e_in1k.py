# MobileNetV2, 150 epochs, reference setting of He et al. 2019 (Table 1, Table 2
# ref.): top-1 72.04.
_base_ = ['./_base_/mobilenet-v2.py', './_base_/cosine_150e.py', './_base_/wd_sgd.py']
optim_wrapper = dict(optimizer=dict(lr=0.2, weight_decay=4e-5))
