"""The heads and Algorithm 1 (maivar.heads.mlp)."""

import pytest
import torch

from maivar.core.errors import PipelineError
from maivar.heads.mlp import MLP, build_mlp, check_video_fits, fusion_from_video


def _trained_like_video(in_features=12, hidden=(16, 8), classes=5, seed=0) -> MLP:
    torch.manual_seed(seed)
    video = MLP(in_features, hidden, classes, dropout=0.3)
    video.set_normalization(torch.randn(in_features), torch.rand(in_features) + 0.5)
    return video.eval()


def test_mlp_layers_relu_on_hidden_only():
    mlp = MLP(10, [7, 6], 3, dropout=0.2)
    kinds = [type(m).__name__ for m in mlp.layers]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert mlp(torch.randn(4, 10)).shape == (4, 3)


def test_normalization_is_applied_and_saved_with_the_state():
    mlp = MLP(3, [4], 2).eval()
    x = torch.randn(5, 3)
    before = mlp(x)
    mlp.set_normalization(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0]))
    assert not torch.allclose(before, mlp(x))
    clone = build_mlp(mlp.config)
    clone.load_state_dict(mlp.state_dict())
    assert torch.equal(clone.eval()(x), mlp(x))


def test_algorithm1_fusion_equals_video_at_initialization():
    video = _trained_like_video()
    fusion = fusion_from_video(video, audio_features=9).eval()
    audio, vid = torch.randn(20, 9) * 5, torch.randn(20, 12)
    torch.testing.assert_close(fusion(torch.cat([audio, vid], 1)), video(vid), rtol=0, atol=1e-6)
    # the audio columns start at zero, the video columns and every later layer are copies
    first, vfirst = fusion.linears()[0], video.linears()[0]
    assert torch.count_nonzero(first.weight[:, :9]) == 0
    assert torch.equal(first.weight[:, 9:], vfirst.weight) and torch.equal(first.bias, vfirst.bias)
    for f, v in zip(fusion.linears()[1:], video.linears()[1:], strict=True):
        assert torch.equal(f.weight, v.weight) and torch.equal(f.bias, v.bias)
    assert torch.equal(fusion.mean[9:], video.mean) and torch.equal(fusion.std[9:], video.std)


def test_algorithm1_copy_does_not_alias_the_video_weights():
    video = _trained_like_video()
    fusion = fusion_from_video(video, audio_features=4)
    with torch.no_grad():
        fusion.linears()[-1].weight.add_(1.0)
    assert not torch.equal(fusion.linears()[-1].weight, video.linears()[-1].weight)


def test_scratch_init_has_the_same_shape_but_not_the_video_weights():
    video = _trained_like_video()
    torch.manual_seed(1)
    fusion = fusion_from_video(video, audio_features=9, init="scratch")
    assert fusion.config["in_features"] == 21 and fusion.config["hidden"] == [16, 8]
    assert torch.count_nonzero(fusion.linears()[0].weight[:, :9]) > 0
    assert not torch.equal(fusion.linears()[-1].weight, video.linears()[-1].weight)


def test_unknown_init_is_a_one_line_error():
    with pytest.raises(PipelineError, match="fusion_mlp.init"):
        fusion_from_video(_trained_like_video(), 3, init="imagenet")


def test_video_mlp_that_does_not_fit_fails_loudly():
    video = _trained_like_video(in_features=12, classes=5)
    check_video_fits(video.config, 12, 5)
    with pytest.raises(PipelineError, match="takes 12 video inputs but the video features give 60"):
        check_video_fits(video.config, 60, 5)
    with pytest.raises(PipelineError, match="predicts 5 classes"):
        check_video_fits(video.config, 12, 7)
