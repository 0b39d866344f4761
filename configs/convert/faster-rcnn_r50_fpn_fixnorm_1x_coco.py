# FixNorm for mmdet's Faster R-CNN, from the stock config (docs/zoo.md). FixNormModel runs
# the detector through its loss path on a synthetic batch (boxes, labels) to see which
# layers no normalization follows: the FPN, the RPN convs and the RoI head's shared FCs and
# fc_reg become WN (App. D.3), and final_layer='auto' turns the RoI head's fc_cls into
# FixNorm-FC (Eq. 10). The backbone keeps its frozen BN (norm_eval=True), so its convs stay
# out of the fixed set; backbone_norm_eval=False in FixNormModel brings them in.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
model = dict(type='FixNormModel', model_type=_base_.model.type, final_layer='auto', alpha=1.0)
optim_wrapper = dict(constructor='NormControlOptimWrapperConstructor',
                     norm_control=dict(type='FixNorm'))
# needed only with upstream tools (ours import the plugin themselves)
custom_imports = dict(imports=['fixnorm_mm'], allow_failed_imports=False)
