# TSN with the paper's backbone, BN-Inception (MAiVAR Sec. III-A.1: TSN, BN-Inception pretrained on Kinetics,
# 25 segments, 1024-d AvgPool features per segment), as an MMAction2 1.x config (Recognizer2D). MMAction2 ships
# no BN-Inception: `BNInception` is maivar/video/bninception.py (the Caffe model in its PyTorch port's layout),
# registered by maivar/video/tsn.py when stage extract_video builds the model.
#
# `pretrained=None`: weights come only from `extract_video.checkpoint` in params.yaml, never from a download.
# The public BN-Inception weights (the port's ImageNet file, tsn-pytorch's Kinetics/UCF101 TSN checkpoints) are
# in the port's layout: convert them once with `maivar convert-bninception SRC DST` and point the checkpoint at
# DST. Without a checkpoint the stage uses a seeded random initialization and says so loudly.
#
# The network was trained in Caffe on BGR frames in 0..255: mean [104, 117, 128] (B, G, R), std 1.
# `to_rgb=True` reverses MMAction2's RGB frames into BGR before the mean is subtracted (extract_video does the
# same: maivar/video/features.py, Preprocessing.channel_order). The TSN head is kept, as in tsn_r50_video.py,
# so that MMAction2-style checkpoints load as they are; extract_video reads the backbone's 1024 x 7 x 7 map.
model = dict(
    type='Recognizer2D',
    backbone=dict(type='BNInception', pretrained=None),
    cls_head=dict(
        type='TSNHead',
        num_classes=400,
        in_channels=1024,
        spatial_type='avg',
        consensus=dict(type='AvgConsensus', dim=1),
        dropout_ratio=0.8,  # tsn-pytorch's for BN-Inception RGB (training only)
        init_std=0.001,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[104, 117, 128],
        std=[1, 1, 1],
        to_rgb=True,
        format_shape='NCHW'),
    train_cfg=None,
    test_cfg=None)

# TSN's single-center-crop test: short side 256, center crop 224 (tsn-pytorch's scale_size 256 and
# input_size 224 for BN-Inception). SampleFrames' num_clips is replaced by `extract_video.num_segments`
# (params.yaml: 25, as in the paper).
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=25, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
