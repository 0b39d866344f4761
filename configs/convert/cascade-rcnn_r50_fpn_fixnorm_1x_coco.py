# FixNorm for mmdet's Cascade R-CNN, from the stock config (docs/zoo.md): final_layer='auto'
# turns the fc_cls of each of the three cascade stages into FixNorm-FC (Eq. 10); the shared
# FCs and fc_reg of every stage, the RPN and the FPN become WN (App. D.3).
_base_ = 'mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py'
model = dict(type='FixNormModel', model_type=_base_.model.type, final_layer='auto', alpha=1.0)
optim_wrapper = dict(constructor='NormControlOptimWrapperConstructor',
                     norm_control=dict(type='FixNorm'))
# needed only with upstream tools (ours import the plugin themselves)
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
