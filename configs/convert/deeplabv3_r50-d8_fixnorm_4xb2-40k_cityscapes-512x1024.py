# FixNorm for a stock mmseg config (docs/scale.md): final_layer='auto' turns the pixel
# classifier of the decode head and of the auxiliary head (conv_seg of each) into
# FixNorm-Conv (Eq. 29, cap alpha * sqrt(19)), as the paper does for OCNet (App. D.2).
# Every other conv of the ASPP and FCN heads feeds a BN, so none becomes WN.
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py'
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
model = dict(type='FixNormModel', model_type=_base_.model.type, final_layer='auto', alpha=1.0)
optim_wrapper = dict(constructor='NormControlOptimWrapperConstructor',
                     norm_control=dict(type='FixNorm'))
