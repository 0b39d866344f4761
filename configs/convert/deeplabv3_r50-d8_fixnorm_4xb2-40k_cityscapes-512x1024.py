# FixNorm for a stock mmseg config (docs/scale.md): the pixel classifier
# decode_head.conv_seg becomes FixNorm-Conv (Eq. 29, cap alpha * sqrt(19)), as
# the paper does for OCNet (App. D.2). Every ASPP conv feeds a BN, so none
# becomes WN; the auxiliary head stays as it is (it does not run in the traced
# forward, and the startup log says so).
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
model = dict(type='FixNormModel', model_type=_base_.model.type,
             final_layer='decode_head.conv_seg', alpha=1.0)
optim_wrapper = dict(type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
                     optimizer=dict(weight_decay=0))
