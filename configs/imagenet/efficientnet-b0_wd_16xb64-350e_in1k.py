# EfficientNet-B0, 350 epochs, EfficientNet's own recipe (Table 2 ref.): top-1
# 77.30.
_base_ = ['./_base_/efficientnet-b0.py', './_base_/rmsprop_350e.py']
