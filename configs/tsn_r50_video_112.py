# configs/tsn_r50_video.py at half the resolution (short side 128, center crop 112): the same TSN ResNet-50
# and the same 2048-d per-segment features at a quarter of the compute. Meant for the embedded synthetic
# default on a CPU (2 cores: about 4x faster than 224); for UCF101 and the paper's numbers use
# tsn_r50_video.py (MMAction2's checkpoints are trained at 224).
_base_ = ['tsn_r50_video.py']

test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=25, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 128)),
    dict(type='CenterCrop', crop_size=112),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
