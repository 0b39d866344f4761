# EfficientNet-B1 at 240 pixels, 350 epochs, EfficientNet's own recipe (Table 2
# ref.): top-1 79.20.
_base_ = ['./_base_/efficientnet-b1.py', './_base_/rmsprop_350e.py']
