# TSN with a ResNet-50 backbone as an MMAction2 1.x config (Recognizer2D), used by stage extract_video.
#
# The model part is MMAction2's `configs/_base_/models/tsn_r50.py` with `pretrained=None`: weights come
# only from `extract_video.checkpoint` in params.yaml (e.g. MMAction2's Kinetics-400 TSN R50 checkpoint
# `tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb_*.pth`), never from a download.
# Without a checkpoint the stage uses a seeded random initialization and says so loudly.
#
# extract_video reads the per-segment backbone features (average-pooled over space); the TSN head is
# kept so that MMAction2 checkpoints load as they are. The paper's own backbone, a 1024-d BN-Inception, is
# configs/tsn_bninception_video.py.
model = dict(
    type='Recognizer2D',
    backbone=dict(type='ResNet', pretrained=None, depth=50, norm_eval=False),
    cls_head=dict(
        type='TSNHead',
        num_classes=400,
        in_channels=2048,
        spatial_type='avg',
        consensus=dict(type='AvgConsensus', dim=1),
        dropout_ratio=0.4,
        init_std=0.01,
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        format_shape='NCHW'),
    train_cfg=None,
    test_cfg=None)

# MMAction2's TSN test pipeline (single center crop). extract_video takes Resize's short side and
# CenterCrop's size from here; SampleFrames' num_clips is replaced by `extract_video.num_segments`
# (params.yaml), which is the one place the number of segments is set. benchmarks/bench_extract.py runs
# this pipeline as the reference route.
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=25, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 256)),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
