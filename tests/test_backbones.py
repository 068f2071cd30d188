"""Frozen backbones: weights sources, checkpoint errors, the MMAction2 workaround, OOM retry."""

import logging
import sys
from pathlib import Path

import pytest
import torch

from maivar.backbones import (
    OomGuard, build_tsn, create_audio_backbone, load_checkpoint_into, select_device, weights_sha256,
)
from maivar.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]

# A tiny TSN (ResNet-18, 32 px crops): the plumbing of configs/tsn_r50_video.py at a fraction of the cost.
TINY_TSN = """
model = dict(
    type='Recognizer2D',
    backbone=dict(type='ResNet', pretrained={pretrained}, depth=18, norm_eval=False),
    cls_head=dict(type='TSNHead', num_classes={classes}, in_channels=512, spatial_type='avg',
                  consensus=dict(type='AvgConsensus', dim=1), dropout_ratio=0.4, init_std=0.01,
                  average_clips='prob'),
    data_preprocessor=dict(type='ActionDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], format_shape='NCHW'),
    train_cfg=None, test_cfg=None)
test_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=1, frame_interval=1, num_clips=3, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 40)),
    dict(type='CenterCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
"""


def write_tiny_tsn(path: Path, *, pretrained: str = "None", classes: int = 5) -> Path:
    path.write_text(TINY_TSN.format(pretrained=pretrained, classes=classes))
    return path


def test_mmaction_imports_with_the_drn_stand_in():
    from maivar.mmaction_compat import DRN_PACKAGE, import_mmaction

    mmaction = import_mmaction()
    from mmaction.registry import MODELS, TRANSFORMS

    assert mmaction.__version__
    assert MODELS.get("Recognizer2D") is not None and TRANSFORMS.get("DecordInit") is not None
    assert DRN_PACKAGE in sys.modules  # the stand-in (or the real package on a fixed wheel)


def test_audio_backbone_random_init_is_seeded_logged_and_recorded(caplog):
    with caplog.at_level(logging.WARNING):
        model_a, weights_a = create_audio_backbone("resnet18", pretrained=False, checkpoint=None, seed=0)
    model_b, weights_b = create_audio_backbone("resnet18", pretrained=False, checkpoint=None, seed=0)
    _, weights_c = create_audio_backbone("resnet18", pretrained=False, checkpoint=None, seed=1)
    assert weights_a.source == "random" and weights_a.pretrained is False
    assert weights_a.sha256 == weights_b.sha256 != weights_c.sha256
    assert any("RANDOM" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert model_a.num_classes == 0 and model_a(torch.zeros(1, 3, 32, 32)).shape == (1, model_a.num_features)


def test_audio_checkpoint_round_trip_and_classifier_keys_ignored(tmp_path):
    donor = __import__("timm").create_model("resnet18", num_classes=7)  # with a classifier: its keys are ignored
    torch.manual_seed(3)
    for p in donor.parameters():
        p.data.normal_()
    torch.save({"state_dict": donor.state_dict()}, tmp_path / "ck.pt")
    model, weights = create_audio_backbone("resnet18", pretrained=False, checkpoint=str(tmp_path / "ck.pt"), seed=0)
    assert weights.source == f"checkpoint:{tmp_path / 'ck.pt'}" and weights.pretrained
    assert torch.equal(model.conv1.weight, donor.conv1.weight)


@pytest.mark.parametrize("case", ["missing", "garbage", "wrong_model"])
def test_bad_audio_checkpoint_is_a_one_line_error(tmp_path, case):
    path = tmp_path / "ck.pt"
    if case == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif case == "wrong_model":
        torch.save(__import__("timm").create_model("resnet10t", num_classes=0).state_dict(), path)
    with pytest.raises(PipelineError) as err:
        create_audio_backbone("resnet18", pretrained=False, checkpoint=str(path), seed=0)
    message = str(err.value)
    assert "\n" not in message and str(path) in message


def test_unknown_timm_model_is_a_one_line_error():
    with pytest.raises(PipelineError, match="unknown timm model"):
        create_audio_backbone("no_such_net", pretrained=False, checkpoint=None, seed=0)


def test_tsn_random_init_is_reproducible_and_checkpoints_load(tmp_path, caplog):
    config = write_tiny_tsn(tmp_path / "tsn.py")
    with caplog.at_level(logging.WARNING):
        model_a, weights_a, cfg = build_tsn(config, checkpoint=None, seed=0)
    assert any("RANDOM" in r.getMessage() for r in caplog.records)
    _, weights_b, _ = build_tsn(config, checkpoint=None, seed=0)
    _, weights_c, _ = build_tsn(config, checkpoint=None, seed=1)
    assert weights_a.source == "random" and weights_a.sha256 == weights_b.sha256 != weights_c.sha256
    assert cfg.model.backbone.depth == 18
    # An MMAction2 checkpoint ({'state_dict': ...}) loads; its head may have any number of classes.
    other = write_tiny_tsn(tmp_path / "tsn101.py", classes=101)
    donor, _, _ = build_tsn(other, checkpoint=None, seed=5)
    torch.save({"meta": {}, "state_dict": donor.state_dict()}, tmp_path / "tsn.pth")
    loaded, weights, _ = build_tsn(config, checkpoint=str(tmp_path / "tsn.pth"), seed=0)
    assert weights.source.startswith("checkpoint:") and weights.sha256 == weights_sha256(donor.backbone)
    assert weights.sha256 != weights_a.sha256


def test_tsn_missing_or_unfitting_checkpoint_is_a_one_line_error(tmp_path):
    config = write_tiny_tsn(tmp_path / "tsn.py")
    with pytest.raises(PipelineError) as err:
        build_tsn(config, checkpoint=str(tmp_path / "absent.pth"), seed=0)
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)
    torch.save({"state_dict": {"backbone.conv1.conv.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(PipelineError) as err:
        build_tsn(config, checkpoint=str(tmp_path / "bad.pth"), seed=0)
    assert "does not fit" in str(err.value) and "missing" in str(err.value) and "\n" not in str(err.value)


def test_tsn_config_with_a_download_is_refused(tmp_path):
    config = write_tiny_tsn(tmp_path / "tsn.py", pretrained="'torchvision://resnet18'")
    with pytest.raises(PipelineError, match="pretrained must be None"):
        build_tsn(config, checkpoint=None, seed=0)
    with pytest.raises(PipelineError, match="does not exist"):
        build_tsn(tmp_path / "absent.py", checkpoint=None, seed=0)


def test_shipped_config_has_no_downloads():
    text = (ROOT / "configs/tsn_r50_video.py").read_text()
    assert "://" not in text and "pretrained=None" in text


def test_load_checkpoint_reports_shape_mismatch(tmp_path):
    model = torch.nn.Linear(3, 2)
    torch.save({"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, tmp_path / "ck.pt")
    with pytest.raises(PipelineError, match="1 wrong shape"):
        load_checkpoint_into(model, tmp_path / "ck.pt")


def test_oom_guard_halves_the_chunk_and_keeps_the_results():
    calls = []

    def fn(x):
        calls.append(len(x))
        if len(x) > 2:
            raise torch.cuda.OutOfMemoryError("fake")
        return x * 2

    guard = OomGuard(8)
    batch = torch.arange(7.0)
    assert torch.equal(guard(fn, batch), batch * 2)
    assert guard.chunk == 2 and calls[:3] == [7, 4, 2]  # 8 -> 4 -> 2, then stays at 2
    assert torch.equal(guard(fn, batch), batch * 2) and guard.chunk == 2

    def always(x):
        raise torch.cuda.OutOfMemoryError("fake")

    with pytest.raises(PipelineError, match="batch of one"):
        OomGuard(4)(always, batch)


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(PipelineError):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(PipelineError, match="no GPU"):
            select_device("cuda")
