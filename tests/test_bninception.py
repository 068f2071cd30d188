"""BN-Inception, the paper's TSN backbone: its architecture in the PyTorch port's layout, its MMAction2 config,
BatchNorm folding, the converter of the port's weights, and stage extract_video with it."""

from pathlib import Path

import numpy as np
import pytest
import torch

from maivar.cli import main as cli
from maivar.core.errors import PipelineError
from maivar.core.feature_store import open_store
from maivar.extraction.checkpoints import weights_sha256
from maivar.extraction.inference import fuse_conv_bn, prepare_for_inference
from maivar.video.bninception import (
    BNInception,
    convert_checkpoint,
    convert_port_state_dict,
    port_layout_hint,
    register_bninception,
)
from maivar.video.tsn import build_tsn, preprocessing_from_config

from stage_cmd import run_stage_in_process
from test_backbones import _trained_looking_batchnorms, write_tiny_tsn
from test_video_features import _stage_dir as video_stage_dir
from test_video_features import make_video

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tsn_bninception_video.py"

# Entries of the port's state dict (Cadene's pretrainedmodels/models/bninception.py, the same names in
# tsn-pytorch's tf_model_zoo bn_inception.yaml) with their shapes: the stem, a full block, a reduction block
# (no 1x1 and no pool projection), the last blocks.
PORT_SHAPES = {
    "conv1_7x7_s2.weight": (64, 3, 7, 7),
    "conv1_7x7_s2.bias": (64,),
    "conv1_7x7_s2_bn.weight": (64,),
    "conv1_7x7_s2_bn.running_mean": (64,),
    "conv1_7x7_s2_bn.running_var": (64,),
    "conv2_3x3_reduce.weight": (64, 64, 1, 1),
    "conv2_3x3.weight": (192, 64, 3, 3),
    "inception_3a_1x1.weight": (64, 192, 1, 1),
    "inception_3a_3x3_reduce.weight": (64, 192, 1, 1),
    "inception_3a_3x3.weight": (64, 64, 3, 3),
    "inception_3a_double_3x3_reduce.weight": (64, 192, 1, 1),
    "inception_3a_double_3x3_1.weight": (96, 64, 3, 3),
    "inception_3a_double_3x3_2.weight": (96, 96, 3, 3),
    "inception_3a_pool_proj.weight": (32, 192, 1, 1),
    "inception_3a_pool_proj_bn.bias": (32,),
    "inception_3c_3x3.weight": (160, 128, 3, 3),
    "inception_3c_double_3x3_2_bn.running_var": (96,),
    "inception_4e_double_3x3_2.weight": (256, 256, 3, 3),
    "inception_5a_1x1.weight": (352, 1056, 1, 1),
    "inception_5b_pool_proj.weight": (128, 1024, 1, 1),
    "inception_5b_double_3x3_2_bn.weight": (224,),
}

# osmr/imgclsmob, pytorch/pytorchcv/models/bninception.py, _test(): the 1000-class BN-Inception has
# 11,295,240 parameters (convolutions with bias, affine BatchNorms, as in the port); less its classifier
# (the port's last_linear, 1024 x 1000 + 1000) that is the backbone's count.
BACKBONE_PARAMETERS = 11_295_240 - (1024 * 1000 + 1000)


def _donor(seed: int = 3) -> BNInception:
    """A BN-Inception with weights that look trained: random convolutions, non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = BNInception()
    model.init_weights()
    _trained_looking_batchnorms(model, seed)
    return model.eval()


def _frames(size: int = 64) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255 - 117


def test_the_architecture_is_the_ports():
    model = BNInception().eval()
    state = model.state_dict()
    for name, shape in PORT_SHAPES.items():
        assert tuple(state[name].shape) == shape, name
    assert not any(k.startswith(("inception_3c_1x1", "inception_3c_pool_proj", "inception_4e_1x1",
                                 "inception_4e_pool_proj", "last_linear", "fc")) for k in state)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 69 and all(c.bias is not None for c in convs)
    assert all(b.eps == 1e-5 and b.affine for b in bns)
    assert len(state) == 69 * 2 + 69 * 5  # conv weight + bias; BN weight, bias, running mean / var, batches
    assert sum(p.numel() for p in model.parameters()) == BACKBONE_PARAMETERS == 10_270_240
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1024, 7, 7)  # the map the port's global_pool (7 x 7 AvgPool) averages


def test_the_config_builds_bninception_tsn_with_bgr_caffe_preprocessing():
    model, weights, cfg = build_tsn(CONFIG, checkpoint=None, seed=0)
    register_bninception()  # again: a no-op
    from mmaction.registry import MODELS

    assert MODELS.get("BNInception") is BNInception and isinstance(model.backbone, BNInception)
    assert model.cls_head.in_channels == 1024 and model.cls_head.num_classes == 400
    assert weights.source == "random" and cfg.model.backbone.get("depth") is None
    pre = preprocessing_from_config(cfg)
    assert (pre.short_side, pre.crop_size, pre.channel_order) == (256, 224, "BGR")
    assert pre.mean == (104.0, 117.0, 128.0) and pre.std == (1.0, 1.0, 1.0)
    assert [s["num_clips"] for s in cfg.test_pipeline if s["type"] == "SampleFrames"] == [25]
    x = _frames().reshape(1, 2, 3, 64, 64)
    with torch.inference_mode():
        feats, _ = model.extract_feat(x, stage="backbone")
    assert feats.shape == (2, 1024, 2, 2) and feats.abs().max() > 0
    assert weights.sha256 == build_tsn(CONFIG, checkpoint=None, seed=0)[1].sha256  # seeded


def test_fuse_conv_bn_folds_every_batchnorm_of_bninception():
    model = _donor()
    prepare_for_inference(model, torch.device("cpu"))
    x = _frames().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        before = model(x)
    assert fuse_conv_bn(model, input_size=64) == 69  # each convolution's own BatchNorm
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.inference_mode():
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())


def _port_layouts(donor: BNInception) -> dict[str, tuple[dict, list[str]]]:
    """The donor's weights as the public files hold them, with the classifier keys each has."""
    bare = donor.state_dict()
    g = torch.Generator().manual_seed(7)
    cadene = dict(bare, **{"last_linear.weight": torch.randn(1000, 1024, generator=g),
                           "last_linear.bias": torch.randn(1000, generator=g)})
    # tsn-pytorch's tf_model_zoo ImageNet file: 1 x C BatchNorm tensors, no num_batches_tracked, classifier fc
    old = {k: (v.reshape(1, -1) if "_bn." in k else v) for k, v in bare.items()
           if not k.endswith("num_batches_tracked")}
    old.update({"fc.weight": torch.randn(1000, 1024, generator=g), "fc.bias": torch.randn(1000, generator=g)})
    # a tsn-pytorch Kinetics / UCF101 checkpoint (DataParallel(TSN)): module.base_model.*, classifier module.new_fc
    tsn = {f"module.base_model.{k}": v for k, v in bare.items()}
    tsn.update({"module.new_fc.weight": torch.randn(400, 1024, generator=g),
                "module.new_fc.bias": torch.randn(400, generator=g)})
    return {
        "cadene": (cadene, ["last_linear.weight", "last_linear.bias"]),
        "tf_model_zoo": (old, ["fc.weight", "fc.bias"]),
        # load_state_dict_file drops the DataParallel "module." when it reads the file
        "tsn_pytorch": ({"epoch": 80, "arch": "BNInception", "state_dict": tsn, "best_prec1": 70.0},
                        ["new_fc.weight", "new_fc.bias"]),
    }


@pytest.mark.parametrize("layout", ["cadene", "tf_model_zoo", "tsn_pytorch"])
def test_the_ports_weights_convert_and_give_the_donors_features(tmp_path, layout, capsys):
    donor = _donor()
    obj, classifier = _port_layouts(donor)[layout]
    torch.save(obj, tmp_path / "port.pth")
    with pytest.raises(PipelineError) as err:  # as it is, it does not load: the error says how to convert it
        build_tsn(CONFIG, checkpoint=str(tmp_path / "port.pth"), seed=0)
    message = str(err.value)
    assert "\n" not in message and "does not fit" in message
    assert f"maivar convert-bninception {tmp_path / 'port.pth'} OUT.pth" in message

    assert cli(["convert-bninception", str(tmp_path / "port.pth"), str(tmp_path / "mm.pth")]) == 0
    out = capsys.readouterr().out
    assert "483 BN-Inception backbone tensors" in out and ", ".join(classifier) in out
    saved = torch.load(tmp_path / "mm.pth", weights_only=True)
    assert all(k.startswith("backbone.") for k in saved["state_dict"]) and saved["meta"]["dropped"] == classifier

    model, weights, _ = build_tsn(CONFIG, checkpoint=str(tmp_path / "mm.pth"), seed=0)
    assert weights.pretrained and weights.sha256 == weights_sha256(donor)
    x = _frames()
    with torch.inference_mode():
        ours, _ = model.extract_feat(x[None], stage="backbone")
        expected = donor(x)
    torch.testing.assert_close(ours, expected)


def test_conversion_errors_are_one_line(tmp_path, capsys):
    donor_state = BNInception().state_dict()
    with pytest.raises(PipelineError, match="already in MMAction2's layout"):
        convert_port_state_dict({f"backbone.{k}": v for k, v in donor_state.items()})
    flow = dict(donor_state, **{"conv1_7x7_s2.weight": torch.zeros(64, 10, 7, 7)})  # a TSN Flow model's first conv
    with pytest.raises(PipelineError, match=r"1 wrong shape \(e.g. conv1_7x7_s2.weight \(64, 10, 7, 7\)"):
        convert_port_state_dict(flow)
    partial = {k: v for k, v in donor_state.items() if not k.startswith("inception_5b")}
    with pytest.raises(PipelineError, match="missing"):
        convert_port_state_dict(dict(partial, extra=torch.zeros(1)))
    resnet = tmp_path / "resnet.pth"
    torch.save({"state_dict": build_tsn(write_tiny_tsn(tmp_path / "tiny.py"), checkpoint=None, seed=0)[0]
                .state_dict()}, resnet)
    assert port_layout_hint(resnet) == "" and port_layout_hint(tmp_path / "absent.pth") == ""
    for src in (resnet, tmp_path / "absent.pth"):
        assert cli(["convert-bninception", str(src), str(tmp_path / "out.pth")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.strip().count("\n") == 0
    assert not (tmp_path / "out.pth").exists()
    with pytest.raises(PipelineError, match="unexpected"):
        convert_checkpoint(resnet, tmp_path / "out.pth")


def test_extract_video_stage_with_bninception(tmp_path):
    """The stage with a BN-Inception config (64 px crops to keep it cheap): 1024-d features, its attributes."""
    config = tmp_path / "bni.py"
    config.write_text(CONFIG.read_text().replace("scale=(-1, 256)", "scale=(-1, 72)")
                      .replace("crop_size=224", "crop_size=64"))
    videos = [make_video(tmp_path / f"{name}.avi", 12, width=96, height=72, color=True) for name in "ab"]
    work = video_stage_dir(tmp_path, config,
                           [dict(id=v.stem, label=i, video_path=str(v), frames=12) for i, v in enumerate(videos)])
    assert run_stage_in_process("extract_video", work) == 0
    store = open_store(work / "data/features/video.h5", "features")
    assert store.ids == ["a", "b"] and store.data.shape == (2, 3, 1024) and np.isfinite(store.data).all()
    attrs = store.attrs
    assert attrs["backbone"] == "BNInception" and attrs["backbone_depth"] == "null"  # no depth: stored as null
    assert attrs["channel_order"] == "BGR" and attrs["mean"] == "[104.0, 117.0, 128.0]"
    assert attrs["conv_bn_folded"] == 69 and attrs["crop_size"] == 64 and attrs["weights"] == "random"
