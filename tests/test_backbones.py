"""Frozen backbones: weights sources, checkpoint errors, the MMAction2 workaround, OOM retry."""

import logging
import sys
from pathlib import Path

import pytest
import torch

from maivar.audio.backbone import create_audio_backbone
from maivar.core.errors import PipelineError
from maivar.extraction.checkpoints import load_checkpoint_into, weights_sha256
from maivar.extraction.inference import OomGuard, fuse_conv_bn, prepare_for_inference, select_device
from maivar.video.tsn import build_tsn

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
    from maivar.video.mmaction_compat import DRN_PACKAGE, import_mmaction

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


# ------------------------------------------------------------------------------------ conv + BN folding


def _trained_looking_batchnorms(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (random init has mean 0, var 1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


def _features(module, x):
    with torch.inference_mode():
        out = module(x)
    return out[-1] if isinstance(out, (tuple, list)) else out


def test_fuse_conv_bn_folds_the_tsn_backbone_and_keeps_its_features(tmp_path):
    model, _, _ = build_tsn(write_tiny_tsn(tmp_path / "tiny.py"), checkpoint=None, seed=0)
    _trained_looking_batchnorms(model.backbone)
    prepare_for_inference(model, torch.device("cpu"))
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    before = _features(model.backbone, x)
    assert fuse_conv_bn(model.backbone, input_size=32) == 20  # ResNet-18: 17 ConvModules + 3 downsamples
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    after = _features(model.backbone, x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())


def test_fuse_conv_bn_keeps_the_activation_of_timm_batchnormact():
    model, _ = create_audio_backbone("mobilenetv3_small_050", pretrained=False, checkpoint=None, seed=0)
    _trained_looking_batchnorms(model)
    prepare_for_inference(model, torch.device("cpu"))
    x = torch.randn(2, 3, 64, 64)
    before = _features(model, x)
    assert fuse_conv_bn(model, input_size=64) > 10
    after = _features(model, x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())


class _BatchNormBeforeConv(torch.nn.Module):
    """Registers a conv, then a BN, but applies the BN first: folding would change the output."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_fuse_conv_bn_undoes_a_fold_that_changes_the_output(caplog):
    module = _BatchNormBeforeConv()
    _trained_looking_batchnorms(module)
    module.eval()
    x = torch.randn(2, 3, 16, 16)
    before = _features(module, x)
    with caplog.at_level(logging.WARNING, logger="maivar.extraction.inference"):
        assert fuse_conv_bn(module, input_size=16) == 0
    assert "left unfused" in caplog.text
    assert type(module.bn) is torch.nn.BatchNorm2d and module.conv.bias is not None
    torch.testing.assert_close(_features(module, x), before, rtol=0, atol=0)


def test_fuse_conv_bn_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_bn(_BatchNormBeforeConv().train(), input_size=8)
