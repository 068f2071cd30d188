"""Settings of the extraction stages: ``extract_audio`` (a timm backbone on the audio images) and
``extract_video`` (an MMAction2 TSN on the videos). What only makes them faster is in ``runtime``."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Bool, Check, Choice, Float, Int, Optional, Pattern, Section, Text, nearest, setting

__all__ = ["FLIP_MODES", "NORMALIZATIONS", "PRECISIONS", "ExtractAudioSettings", "ExtractVideoSettings"]

PRECISIONS = ("fp32", "bf16")  # bf16: autocast (native on CUDA and on CPUs with bf16 instructions)
NORMALIZATIONS = ("imagenet", "model")  # ImageNet's mean/std (the authors' notebook) | the timm model's own
SEED = Int(0, 2**32 - 1)
FLIP_MODES = (False, True, "authors")  # N x D as drawn | N x 4 x D, the four variants | N x D, one seeded draw each


class _Flips(Check):
    """false, true or ``authors`` (:data:`FLIP_MODES`; a YAML boolean is a boolean, the word is a string)."""

    allowed = "false, true or authors"

    def __call__(self, value, key, where):
        if isinstance(value, bool) or value == "authors":
            return value
        close = nearest(value, ["authors"]) if isinstance(value, str) else None
        raise self.fail(value, key, where, f"; did you mean {close}?" if close else "")

CHECKPOINT = Optional(Text(what="a file path"))


@dataclass(frozen=True)
class ExtractAudioSettings(Section):
    SECTION = "extract_audio"
    backbone: str = setting(Pattern(r"[A-Za-z0-9_.\-]{1,128}", "a timm model name, e.g. inception_resnet_v2"))
    pretrained: bool = setting(Bool(), "timm's ImageNet weights (from its cache when offline)")
    checkpoint: str | None = setting(CHECKPOINT, "a checkpoint file (overrides pretrained)")
    input_size: int = setting(Int(32, 1024), "the images are resized to this before the backbone")
    flips: bool | str = setting(_Flips(), "false | true: features of the four flips of each image (N x 4 x D) | "
                                "authors: each image flipped once, a seeded random draw (N x D)")
    normalization: str = setting(Choice(NORMALIZATIONS))
    fuse_conv_bn: bool = setting(Bool())
    precision: str = setting(Choice(PRECISIONS))
    seed: int = setting(SEED, "seeds the random initialization when there are no weights, and flips: authors")


@dataclass(frozen=True)
class ExtractVideoSettings(Section):
    SECTION = "extract_video"
    config: str = setting(Text(what="an MMAction2 config file"))
    checkpoint: str | None = setting(CHECKPOINT, "a TSN checkpoint; null = random initialization")
    num_segments: int = setting(Int(1, 256))
    fuse_conv_bn: bool = setting(Bool())
    precision: str = setting(Choice(PRECISIONS))
    timeout_s: float = setting(Float(0, 86400, lo_open=True))
    min_decoded_share: float = setting(Float(0, 1))
    max_rejected_share: float = setting(Float(0, 1))
    seed: int = setting(SEED)
