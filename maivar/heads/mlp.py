"""The classification heads: audio MLP, video MLP and fusion MLP (paper Sec. III-C), and Algorithm 1.

Every head is an :class:`MLP`: a fixed input standardization (per-feature mean and standard deviation,
fitted on the training split and stored as buffers, so that a saved model carries its own
normalization), then ``Linear -> ReLU -> Dropout`` for each hidden layer and a last ``Linear`` to the
class logits (ReLU on all hidden layers, none on the last, as in the paper).

The fusion MLP's input is the concatenation ``[audio, video]`` of one clip's audio feature (1536-d) and
its video feature (as the video MLP sees it, see :func:`maivar.heads.join.video_input`). Algorithm 1
initializes it from the trained video MLP; :func:`fusion_from_video` does exactly this:

- every hidden and output layer (weights and biases) is copied from the video MLP unchanged;
- the first layer's weight columns that see the video part are the video MLP's first-layer weights,
  its bias is the video MLP's first-layer bias;
- the first layer's weight columns that see the audio part start at **zero**;
- the video part of the input standardization is the video MLP's (copied), the audio part is fitted
  on the training split's audio features.

So at initialization the fusion MLP ignores the audio part and its logits equal the video MLP's on
every clip (tested); fine-tuning then learns how much of the audio to use. ``fusion_mlp.init: scratch``
builds the same architecture with fresh random weights instead (the ablation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from maivar.core.errors import PipelineError


class MLP(nn.Module):
    """Standardize, then ``[Linear, ReLU, Dropout] * len(hidden)``, then ``Linear`` to ``num_classes``."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.config = {
            "in_features": int(in_features),
            "hidden": [int(h) for h in hidden],
            "num_classes": int(num_classes),
            "dropout": float(dropout),
        }
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        layers: list[nn.Module] = []
        width = in_features
        for h in self.config["hidden"]:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.std)

    def linears(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]


def build_mlp(config: dict) -> MLP:
    """An :class:`MLP` from its ``config`` dict (as saved in a model file)."""
    return MLP(config["in_features"], config["hidden"], config["num_classes"], config["dropout"])


def fusion_from_video(video: MLP, audio_features: int, *, init: str = "video") -> MLP:
    """The fusion MLP over ``[audio, video]`` with the video MLP's architecture (Algorithm 1).

    ``init="video"`` copies the trained video MLP as described in the module docstring (audio-facing
    first-layer weights start at zero); ``init="scratch"`` returns freshly initialized weights (draw
    them after seeding). The audio part of the normalization is left at mean 0 / std 1 for the caller
    to fit.
    """
    if init not in ("video", "scratch"):
        raise PipelineError(f"fusion_mlp.init is {init!r}: choose video (Algorithm 1) or scratch")
    cfg = video.config
    fusion = MLP(audio_features + cfg["in_features"], cfg["hidden"], cfg["num_classes"], cfg["dropout"])
    if init == "scratch":
        return fusion
    src, dst = video.linears(), fusion.linears()
    first = src[0]
    if first.in_features != cfg["in_features"] or dst[0].in_features != audio_features + first.in_features:
        raise PipelineError(
            f"the video MLP's first layer takes {first.in_features} inputs but its config says "
            f"{cfg['in_features']}: retrain it (dvc repro train_video)"
        )
    with torch.no_grad():
        dst[0].weight.zero_()
        dst[0].weight[:, audio_features:] = first.weight
        dst[0].bias.copy_(first.bias)
        for s, d in zip(src[1:], dst[1:], strict=True):
            d.weight.copy_(s.weight)
            d.bias.copy_(s.bias)
        fusion.mean[audio_features:] = video.mean
        fusion.std[audio_features:] = video.std
    return fusion


def check_video_fits(video_config: dict, video_in_features: int, num_classes: int) -> None:
    """Fail loudly when a saved video MLP does not fit the current video features or classes."""
    if video_config["in_features"] != video_in_features:
        raise PipelineError(
            f"models/video_mlp.pt takes {video_config['in_features']} video inputs but the video features give "
            f"{video_in_features} (video_mlp.segments or the backbone changed?): rerun train_video (dvc repro)"
        )
    if video_config["num_classes"] != num_classes:
        raise PipelineError(
            f"models/video_mlp.pt predicts {video_config['num_classes']} classes but the manifest has "
            f"{num_classes}: rerun train_video (dvc repro)"
        )
