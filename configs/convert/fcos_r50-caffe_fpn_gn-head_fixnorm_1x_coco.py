# FixNorm for a stock mmdet config that no FixNorm experiment uses (docs/scale.md):
# these lines are all it takes. FixNormModel builds FCOS from the same keys, then
# turns the classification conv into FixNorm-Conv (Eq. 29, cap alpha * sqrt(80))
# and every conv that no normalization follows (FPN, conv_reg, conv_centerness)
# into WN (App. D.3); the GN-followed head convs stay plain and join the fixed set.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
model = dict(type='FixNormModel', model_type=_base_.model.type,
             final_layer='bbox_head.conv_cls', alpha=0.5)
# Algo 1: the fixed set's global norm kept at its initial value; FixNorm takes over its
# weight decay, the other tensors keep the stock config's (the frozen-BN backbone included).
# The lr is FCOS's; FixNorm usually wants its own (FixNorm-tune, Algo 2).
optim_wrapper = dict(constructor='NormControlOptimWrapperConstructor',
                     norm_control=dict(type='FixNorm'))
