# ResNet (dilated, output stride 8) + Base-OC of OCNet (Yuan & Wang 2018), the
# model of the FixNorm paper's Cityscapes experiments (App. D.2). mmseg's FCN
# base gives the data preprocessor, the ResNetV1c-D8 backbone (strides 1,2,1,1,
# dilations 1,1,2,4) and the auxiliary FCN head on stage 3 (OCNet's deep
# supervision, loss weight 0.4); the decode head is new. docs/cityscapes.md
# says where this follows OCNet and where mmseg's common practice.
_base_ = 'mmseg::_base_/models/fcn_r50-d8.py'
custom_imports = dict(imports=['fixnorm_mm', 'fixnorm_mm.segmentation'],
                      allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
# OCNet trains both branches with class-balanced cross-entropy (these weights,
# PyTorch's weighted mean; mmseg 1.2.2's CrossEntropyLoss fails with class
# weights on ignored pixels, hence our ClassWeightedCrossEntropyLoss)
class_weight = [0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786,
                1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529,
                1.0507]
model = dict(
    decode_head=dict(
        _delete_=True,
        type='BaseOCHead',
        in_channels=2048,
        in_index=3,
        channels=512,        # OCNet: 3x3 conv 2048 -> 512
        key_channels=256,    # OCNet: key = query = value channels = 256
        dropout_ratio=0.05,  # OCNet's dropout before the classifier
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='ClassWeightedCrossEntropyLoss', class_weight=class_weight,
                         loss_weight=1.0)),
    # OCNet's deep supervision branch: 3x3 conv 1024 -> 512, dropout 0.05
    auxiliary_head=dict(
        channels=512,
        dropout_ratio=0.05,
        loss_decode=dict(_delete_=True, type='ClassWeightedCrossEntropyLoss',
                         class_weight=class_weight, loss_weight=0.4)))
