# FixNorm for mmdet's Mask R-CNN, from the stock config (docs/zoo.md): as for Faster R-CNN
# (faster-rcnn_r50_fpn_fixnorm_1x_coco.py), and the mask head's convs and its mask-logit conv
# become WN: mask logits are per-pixel foreground scores of the class the box head chose, not
# a classifier over classes, so they are not capped like FixNorm-Conv.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
model = dict(type='FixNormModel', model_type=_base_.model.type, final_layer='auto', alpha=1.0)
optim_wrapper = dict(constructor='NormControlOptimWrapperConstructor',
                     norm_control=dict(type='FixNorm'))
# needed only with upstream tools (ours import the plugin themselves)
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
